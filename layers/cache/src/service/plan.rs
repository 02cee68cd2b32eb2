//! What to do with a request: serve a stored entry, serve it stale while one request revalidates it, or forward
//! the request to the origin (coalesced with concurrent misses here and, through store leases, on other servers).

use super::{
    allowed, answers,
    lookup::{Lookup, Usable, lookup, usable, vary_matches},
};
use crate::{
    coalesce::{Join, Leader, Outcome, Waiter},
    conditional,
    control::RequestDirectives,
    entry::Entry,
    layer::Shared,
    stats::Outcome as Count,
    status::{Mark, StaleWhy},
    store::{Lease, LeaseRelease, Store, deadline::Deadline},
};
use http::{Method, header, request::Parts};
use std::{sync::Arc, time::Duration, time::SystemTime};

/// What to do with a request.
pub(super) enum Plan {
    /// Answer from an entry.
    Serve {
        entry: Arc<Entry>,
        count: Count,
        mark: Mark,
    },
    /// Answer from a stale entry at once; `leader` (when this request is the first) revalidates it in the
    /// background.
    WhileRevalidate {
        entry: Arc<Entry>,
        key: String,
        leader: Option<Leader>,
    },
    /// `only-if-cached` and nothing fits: 504.
    OnlyIfCached,
    Forward(Forward),
}

impl Plan {
    fn hit(entry: Arc<Entry>, now: SystemTime) -> Self {
        Plan::Serve {
            count: Count::Hit,
            mark: Mark::Hit {
                ttl: entry.ttl_secs(now),
            },
            entry,
        }
    }

    fn collapsed(entry: Arc<Entry>, fwd: &'static str) -> Self {
        Plan::Serve {
            count: Count::Coalesced,
            mark: Mark::Collapsed {
                fwd,
                status: entry.status,
            },
            entry,
        }
    }

    fn stale(entry: Arc<Entry>, why: StaleWhy, now: SystemTime) -> Self {
        Plan::Serve {
            count: Count::Stale,
            mark: Mark::Stale {
                ttl: entry.ttl_secs(now),
                why,
                fwd_status: None,
            },
            entry,
        }
    }

    /// To the origin, not stored, with `detail` saying why.
    fn pass(fwd: &'static str, count: Count, detail: &'static str) -> Self {
        Plan::Forward(Forward {
            detail: Some(detail),
            ..Forward::new(fwd, count)
        })
    }
}

/// A request for the origin.
pub(super) struct Forward {
    /// Store the response (if it allows) under the key found by the lookup.
    pub(super) store: Option<StoreTo>,
    pub(super) fwd: &'static str,
    pub(super) detail: Option<&'static str>,
    /// The counter the request lands in (`None`: a background revalidation, not a client request). A `304`
    /// turns it into `revalidated`, a stale answer into `stale`.
    pub(super) count: Option<Count>,
    /// The stored entry this request refreshes, and its key: validated with a conditional request, served when
    /// the refresh fails within `stale-if-error`, compared with a `HEAD` response's validators.
    pub(super) stale: Option<(String, Arc<Entry>)>,
    /// The stored `206` part that could not answer this range request: a new part with the same strong validator
    /// is combined with it (RFC 9111 §3.4).
    pub(super) partial: Option<Arc<Entry>>,
}

impl Forward {
    pub(super) fn new(fwd: &'static str, count: Count) -> Self {
        Self {
            store: None,
            fwd,
            detail: None,
            count: Some(count),
            stale: None,
            partial: None,
        }
    }
}

/// Store the response (if it allows) under the key found by the lookup.
pub(super) struct StoreTo {
    pub(super) coalesce_key: String,
    pub(super) leader: Option<Leader>,
}

impl StoreTo {
    fn alone(coalesce_key: String) -> Option<Self> {
        Some(Self {
            coalesce_key,
            leader: None,
        })
    }
}

/// How many times a waiter looks again after its leader was cancelled before going to the origin alone.
const MAX_ROUNDS: u32 = 3;

/// One request being planned.
struct Ask<'a, St> {
    shared: &'a Shared<St>,
    parts: &'a Parts,
    primary: &'a str,
    directives: &'a RequestDirectives,
    head_only: bool,
    /// `authorization` or `cookie` when the request carries credentials its response may be personal to.
    personal: Option<&'static str>,
}

/// A lookup that did not answer the request: the key to coalesce on, why it goes to the origin, whether the key
/// is hit-for-pass, and the stale entry to refresh.
struct Miss {
    key: String,
    fwd: &'static str,
    pass: bool,
    stale: Option<(String, Arc<Entry>)>,
    partial: Option<Arc<Entry>>,
}

pub(super) async fn plan<St: Store>(
    shared: &Shared<St>,
    parts: &Parts,
    primary: &str,
    directives: &RequestDirectives,
) -> Plan {
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let cookie = shared.config.policy.cookie_bypass && parts.headers.contains_key(header::COOKIE);
    let ask = Ask {
        shared,
        parts,
        primary,
        directives,
        head_only: parts.method == Method::HEAD,
        personal: if authorization {
            Some("authorization")
        } else if cookie {
            Some("cookie")
        } else {
            None
        },
    };
    let mut rounds = 0;
    loop {
        let now = shared.clock.now();
        let miss = match ask.look(now).await {
            Ok(plan) => return plan,
            Err(miss) => miss,
        };
        if let Some(plan) = ask.without_coalescing(&miss, rounds) {
            return plan;
        }
        match shared.flights.join(&miss.key) {
            Join::Leader(leader) => return ask.lead(leader, miss, now).await,
            Join::Waiter(waiter) => match ask.wait(waiter, miss.fwd).await {
                Some(plan) => return plan,
                None => rounds += 1,
            },
        }
    }
}

impl<St: Store> Ask<'_, St> {
    /// Looks the request up: a plan when a stored entry (or its absence under `only-if-cached`) decides, else
    /// the miss.
    async fn look(&self, now: SystemTime) -> Result<Plan, Miss> {
        let (config, directives) = (&self.shared.config, self.directives);
        let miss = match lookup(self.shared, self.primary, &self.parts.headers).await {
            Lookup::Found { key, entry }
                if allowed(config, self.parts, &entry) && !answers(config, self.parts, &entry) =>
            {
                // A stored part that does not hold the range asked (RFC 9211 `fwd=partial`).
                Miss {
                    key,
                    fwd: "partial",
                    pass: false,
                    stale: None,
                    partial: Some(entry),
                }
            }
            Lookup::Found { key, entry } if allowed(config, self.parts, &entry) => {
                match usable(config, &entry, directives, now) {
                    Usable::Fresh => return Ok(Plan::hit(entry, now)),
                    Usable::MaxStale => return Ok(Plan::stale(entry, StaleWhy::MaxStale, now)),
                    Usable::WhileRevalidate => {
                        // One background revalidation per entry: only the first stale hit leads it. HEAD cannot
                        // refresh a GET's body, and personal requests lead nothing.
                        let leader =
                            (!self.head_only && self.personal.is_none() && !directives.no_store)
                                .then(|| self.shared.flights.try_lead(&key))
                                .flatten();
                        return Ok(Plan::WhileRevalidate { entry, key, leader });
                    }
                    Usable::Refresh { fwd } => Miss {
                        stale: Some((key.clone(), entry)),
                        key,
                        fwd,
                        pass: false,
                        partial: None,
                    },
                }
            }
            Lookup::Found { key, .. } => {
                // Stored, but not for this request (credentials): it goes to the origin on its own.
                if directives.only_if_cached {
                    return Ok(Plan::OnlyIfCached);
                }
                return Ok(Plan::Forward(Forward {
                    store: (!self.head_only && !directives.no_store)
                        .then(|| StoreTo::alone(key))
                        .flatten(),
                    detail: self.personal,
                    ..Forward::new("bypass", Count::Bypass)
                }));
            }
            Lookup::Miss { key, fwd, pass } => Miss {
                key,
                fwd,
                pass,
                stale: None,
                partial: None,
            },
        };
        if directives.only_if_cached {
            return Ok(Plan::OnlyIfCached);
        }
        Err(miss)
    }

    /// The plan for a miss that does not coalesce with other requests, if it does not.
    fn without_coalescing(&self, miss: &Miss, rounds: u32) -> Option<Plan> {
        let stale = miss.stale.clone();
        if self.head_only || self.directives.no_store {
            // HEAD is answered from a stored GET, never stored itself; `no-store` requests store nothing.
            return Some(Plan::Forward(Forward {
                stale,
                ..Forward::new(miss.fwd, Count::Miss)
            }));
        }
        if self.personal.is_some() {
            // Requests with credentials never wait on (or lead) others: their response may be theirs alone.
            return Some(Plan::Forward(Forward {
                store: StoreTo::alone(miss.key.clone()),
                detail: self.personal,
                stale,
                partial: miss.partial.clone(),
                ..Forward::new("bypass", Count::Bypass)
            }));
        }
        if miss.pass {
            return Some(Plan::pass("bypass", Count::Miss, "hit-for-pass"));
        }
        // A client's own precondition on a miss goes to the origin as it is; its 304 is for it alone.
        let conditional_miss = stale.is_none() && conditional::is_conditional(&self.parts.headers);
        // A range request's answer (a part) is no answer for the requests that would wait on it.
        let ranged = self.parts.headers.contains_key(header::RANGE);
        if !self.shared.config.coalesce || rounds >= MAX_ROUNDS || conditional_miss || ranged {
            return Some(Plan::Forward(Forward {
                store: StoreTo::alone(miss.key.clone()),
                stale,
                partial: miss.partial.clone(),
                ..Forward::new(miss.fwd, Count::Miss)
            }));
        }
        None
    }

    /// This request leads the key's flight: it calls the origin, unless the entry appeared meanwhile here or on
    /// another server.
    async fn lead(&self, mut leader: Leader, miss: Miss, now: SystemTime) -> Plan {
        let Miss {
            key,
            fwd,
            stale,
            partial,
            ..
        } = miss;
        let (shared, config) = (self.shared, &self.shared.config);
        // Another leader may have stored or refreshed the entry between our lookup and our join.
        if let Lookup::Found { entry, .. } = lookup(shared, self.primary, &self.parts.headers).await
            && allowed(config, self.parts, &entry)
            && answers(config, self.parts, &entry)
            && usable(config, &entry, self.directives, now) == Usable::Fresh
            && !stale.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, &entry))
        {
            leader.finish(Outcome::Filled(Arc::clone(&entry)));
            return Plan::hit(entry, now);
        }
        // Other servers sharing the store: one of them calls the origin, the others wait for its entry.
        match self.remote_lead(&key, stale.is_some()).await {
            Remote::Lead(release) => {
                if let Some(release) = release {
                    leader.on_done(move || release.release());
                }
            }
            Remote::Found(entry) => {
                leader.finish(Outcome::Filled(Arc::clone(&entry)));
                return Plan::collapsed(entry, fwd);
            }
            Remote::Pass => {
                leader.finish(Outcome::Pass);
                return Plan::pass(fwd, Count::Miss, "hit-for-pass");
            }
        }
        Plan::Forward(Forward {
            store: Some(StoreTo {
                coalesce_key: key,
                leader: Some(leader),
            }),
            stale,
            partial,
            ..Forward::new(fwd, Count::Miss)
        })
    }

    /// Another request leads the key's flight: its outcome, or `None` to look again (a variant for other request
    /// headers, or a cancelled leader).
    async fn wait(&self, waiter: Waiter, fwd: &'static str) -> Option<Plan> {
        let headers = &self.parts.headers;
        match waiter.outcome().await {
            Outcome::Filled(entry)
                if vary_matches(&entry, headers, &self.shared.config.key.vary)
                    && answers(&self.shared.config, self.parts, &entry) =>
            {
                Some(Plan::collapsed(entry, fwd))
            }
            Outcome::Stale(entry)
                if vary_matches(&entry, headers, &self.shared.config.key.vary)
                    && answers(&self.shared.config, self.parts, &entry) =>
            {
                let now = self.shared.clock.now();
                Some(Plan::stale(entry, StaleWhy::IfError, now))
            }
            Outcome::Pass => Some(Plan::pass(fwd, Count::Miss, "hit-for-pass")),
            Outcome::Failed => Some(Plan::pass(fwd, Count::Miss, "leader-failed")),
            Outcome::Filled(_) | Outcome::Stale(_) | Outcome::Abandoned | Outcome::Pending => None,
        }
    }

    /// Takes the store's lease on `key`, or waits for the server that holds it to store the entry (polling the
    /// store), for at most twice the lease TTL. Store errors and stores without leases: lead.
    async fn remote_lead(&self, key: &str, refresh: bool) -> Remote {
        if refresh {
            // Revalidating a stale entry: each server may refresh its own view.
            return Remote::Lead(None);
        }
        let shared = self.shared;
        let ttl = shared.config.lease_ttl;
        let give_up = tokio::time::Instant::now() + ttl * 2;
        let mut pause = Duration::from_millis(2);
        // The first lease is asked on the request's deadline. Waiting for another server is not Redis time: each
        // later step (a look, the lease asked again) runs on a deadline of its own; a step that finds Redis
        // stalled spends the request's deadline too, and this server leads.
        let mut step: Option<Deadline> = None;
        loop {
            let lease = match &step {
                None => shared.store.lease(key, ttl).await,
                Some(step) => step.clone().scope(shared.store.lease(key, ttl)).await,
            };
            match lease {
                Ok(Lease::Acquired(release)) => {
                    // On a retry the lease is free because the server that held it is done: it may have stored
                    // the entry after our last look and before its release, so look once more before leading.
                    if let Some(step) = step
                        && let Some(remote) = step.scope(self.look_again()).await
                    {
                        release.release();
                        return remote;
                    }
                    return Remote::Lead(Some(release));
                }
                Ok(Lease::Held) => {}
                Ok(Lease::Unsupported) => return Remote::Lead(None),
                Err(e) => {
                    shared.counters.store_error(&e);
                    if step.as_ref().is_some_and(Deadline::is_spent)
                        && let Some(request) = Deadline::current()
                    {
                        request.spend();
                    }
                    return Remote::Lead(None);
                }
            }
            if tokio::time::Instant::now() >= give_up {
                return Remote::Lead(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
            let now_step = Deadline::new();
            if let Some(remote) = now_step.clone().scope(self.look_again()).await {
                return remote;
            }
            step = Some(now_step);
        }
    }

    /// Whether another server stored a fresh entry for this request, or marked the key hit-for-pass.
    async fn look_again(&self) -> Option<Remote> {
        let config = &self.shared.config;
        let now = self.shared.clock.now();
        match lookup(self.shared, self.primary, &self.parts.headers).await {
            Lookup::Found { entry, .. }
                if allowed(config, self.parts, &entry)
                    && answers(config, self.parts, &entry)
                    && usable(config, &entry, self.directives, now) == Usable::Fresh =>
            {
                Some(Remote::Found(entry))
            }
            Lookup::Miss { pass: true, .. } => Some(Remote::Pass),
            _ => None,
        }
    }
}

/// What this server does about a miss that other servers may be filling too.
enum Remote {
    /// Call the origin (holding the lease, when the store gave one).
    Lead(Option<LeaseRelease>),
    /// Another server stored it meanwhile.
    Found(Arc<Entry>),
    /// Another server found it not storable (hit-for-pass).
    Pass,
}
