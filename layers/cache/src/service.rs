//! `Cache<S>`: looks a request up, answers hits itself, coalesces misses, and stores what the origin allows.

use crate::{
    body::{CacheBody, Fill, FillSink},
    coalesce::{Join, Leader, Outcome},
    conditional,
    control::RequestDirectives,
    entry::{Entry, StoredValue},
    fill::{StoreFill, Template, mark_pass, put_entry},
    future::ResponseFuture,
    invalidate,
    layer::{Config, Shared},
    policy::{self, RequestFacts},
    stats::Outcome as Count,
    status::{self, Mark, StaleWhy},
    store::{Lease, LeaseRelease, MokaStore, Store, deadline::Deadline},
    vary,
};
use bytes::Buf;
use http::{HeaderMap, Method, Request, Response, StatusCode, header, request::Parts};
use http_body::Body;
use std::{
    fmt,
    future::poll_fn,
    pin::pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tower_kit_core::ServerTiming;
use tower_service::Service;

/// The cache service made by [`CacheLayer`](crate::CacheLayer).
pub struct Cache<S, St = MokaStore> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S, St> Cache<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St> Clone for Cache<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Cache<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, St, ReqB, ResB> Service<Request<ReqB>> for Cache<S, St>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let primary = (parts.method == Method::GET || parts.method == Method::HEAD)
            .then(|| self.shared.config.key.primary(&parts));
        if let Some(primary) = &primary
            && let Some(response) = hit_now(&self.shared, &parts, primary)
        {
            // Answered without waiting: the inner service stays ready for the next request.
            return ResponseFuture::ready(response);
        }
        // The ready service handles this request; a clone waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(serve(
            Arc::clone(&self.shared),
            inner,
            parts,
            body,
            primary,
        )))
    }
}

/// A fresh hit the store can give without waiting (moka), served inside `call`, for a request without
/// `Cache-Control` or `Pragma`. `None` sends the request down the general path, which also records store errors.
fn hit_now<St: Store, B>(
    shared: &Shared<St>,
    parts: &Parts,
    primary: &str,
) -> Option<Response<CacheBody<B>>> {
    if parts.headers.contains_key(header::CACHE_CONTROL)
        || parts.headers.contains_key(header::PRAGMA)
    {
        return None;
    }
    let entry = match shared.store.get_now(primary)?.ok()?? {
        StoredValue::Response(entry) => entry,
        StoredValue::Variants(v) => {
            let values = vary::values(&v.headers, &parts.headers);
            let key = vary::secondary_key(primary, &v.headers, &values);
            match shared.store.get_now(&key)?.ok()?? {
                StoredValue::Response(entry) => entry,
                _ => return None,
            }
        }
        StoredValue::Pass { .. } => return None,
    };
    let now = shared.clock.now();
    if entry.no_cache || !entry.is_fresh(now) || !allowed(&shared.config, parts, &entry) {
        return None;
    }
    shared.counters.count(Count::Hit);
    let mark = Mark::Hit {
        ttl: entry.ttl_secs(now),
    };
    if let Some(t) = parts.extensions.get::<ServerTiming>() {
        t.describe("cache", mark.timing());
    }
    Some(stored_response(shared, &entry, parts, mark, now))
}

/// Whether a stored entry may be served to this request (the `Authorization` and `Cookie` rules).
fn allowed(config: &Config, parts: &Parts, entry: &Entry) -> bool {
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let cookie = config.policy.cookie_bypass && parts.headers.contains_key(header::COOKIE);
    (!authorization || entry.shared_with_authorization) && (!cookie || entry.public)
}

/// What a lookup found.
enum Lookup {
    /// A response, fresh or not, under `key` (the primary key, or the secondary key of a `Vary` record).
    Found { key: String, entry: Arc<Entry> },
    Miss {
        /// The key to coalesce on and to mark hit-for-pass: the primary key, or the secondary key when a `Vary`
        /// record was found.
        key: String,
        fwd: &'static str,
        pass: bool,
    },
}

/// What a stored entry can do for a request (RFC 9111 §4.2, §4.2.4, §5.2.1; RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usable {
    /// Fresh enough for the request.
    Fresh,
    /// Stale, within the request's `max-stale`.
    MaxStale,
    /// Stale, within `stale-while-revalidate`: served at once, revalidated in the background.
    WhileRevalidate,
    /// Must go to the origin (conditionally, if the entry has a validator). `fwd` is `stale` when the entry
    /// needs it, `request` when the request's directives do.
    Refresh { fwd: &'static str },
}

fn usable(config: &Config, entry: &Entry, rd: &RequestDirectives, now: SystemTime) -> Usable {
    if entry.no_cache {
        return Usable::Refresh { fwd: "stale" };
    }
    if rd.no_cache {
        return Usable::Refresh { fwd: "request" };
    }
    let age = entry.age(now);
    let life = entry.freshness_lifetime;
    let young_enough = rd.max_age.is_none_or(|max| age <= max);
    let Some(staleness) = entry.staleness(now) else {
        let lasts = rd.min_fresh.is_none_or(|min| age + min < life);
        return if young_enough && lasts {
            Usable::Fresh
        } else {
            Usable::Refresh { fwd: "request" }
        };
    };
    if !entry.must_revalidate && young_enough && rd.min_fresh.is_none() {
        if rd
            .max_stale
            .is_some_and(|max| max.is_none_or(|max| staleness <= max))
        {
            return Usable::MaxStale;
        }
        if staleness < config.swr(entry) {
            return Usable::WhileRevalidate;
        }
    }
    Usable::Refresh { fwd: "stale" }
}

/// What to do with a request.
enum Plan {
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

/// A request for the origin.
struct Forward {
    /// Store the response (if it allows) under the key found by the lookup.
    store: Option<StoreTo>,
    fwd: &'static str,
    detail: Option<&'static str>,
    /// The counter the request lands in (`None`: a background revalidation, not a client request). A `304`
    /// turns it into `revalidated`, a stale answer into `stale`.
    count: Option<Count>,
    /// The stored entry this request refreshes, and its key: validated with a conditional request, served when
    /// the refresh fails within `stale-if-error`, compared with a `HEAD` response's validators.
    stale: Option<(String, Arc<Entry>)>,
}

impl Forward {
    fn new(fwd: &'static str, count: Count) -> Self {
        Self {
            store: None,
            fwd,
            detail: None,
            count: Some(count),
            stale: None,
        }
    }
}

/// Store the response (if it allows) under the key found by the lookup.
struct StoreTo {
    coalesce_key: String,
    leader: Option<Leader>,
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

/// The unsafe methods whose success invalidates what the cache holds for the target (RFC 9111 §4.4).
fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

async fn serve<S, St, ReqB, ResB>(
    shared: Arc<Shared<St>>,
    inner: S,
    parts: Parts,
    body: ReqB,
    primary: Option<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    let rd = RequestDirectives::parse(&parts.headers);
    // One Redis deadline for every store call of this request (lookup, lease, fill, invalidation), never around
    // the origin call.
    let deadline = Deadline::new();
    let plan = match &primary {
        Some(primary) => {
            deadline
                .clone()
                .scope(plan(&shared, &parts, primary, &rd))
                .await
        }
        None => Plan::Forward(Forward::new("method", Count::Bypass)),
    };
    let timing = parts.extensions.get::<ServerTiming>().cloned();
    let describe = |mark: Mark| {
        if let Some(t) = &timing {
            t.describe("cache", mark.timing());
        }
    };
    match plan {
        Plan::Serve { entry, count, mark } => {
            shared.counters.count(count);
            describe(mark);
            let now = shared.clock.now();
            Ok(stored_response(&shared, &entry, &parts, mark, now))
        }
        Plan::OnlyIfCached => {
            shared.counters.count(Count::Miss);
            describe(Mark::OnlyIfCached);
            let mut response = Response::new(CacheBody::empty());
            *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            let c = &shared.config;
            status::mark(
                response.headers_mut(),
                &c.status_name,
                Mark::OnlyIfCached,
                c.x_cache,
            );
            Ok(response)
        }
        Plan::WhileRevalidate { entry, key, leader } => {
            shared.counters.count(Count::Stale);
            let now = shared.clock.now();
            let mark = Mark::Stale {
                ttl: entry.ttl_secs(now),
                why: StaleWhy::WhileRevalidate,
                fwd_status: None,
            };
            describe(mark);
            let response = stored_response(&shared, &entry, &parts, mark, now);
            if let Some(leader) = leader {
                revalidate_in_background(
                    Arc::clone(&shared),
                    inner,
                    parts,
                    body,
                    primary.unwrap_or_default(),
                    key,
                    entry,
                    leader,
                );
            }
            Ok(response)
        }
        Plan::Forward(plan) => {
            let primary = primary.unwrap_or_default();
            forward(shared, inner, parts, body, primary, plan, timing, deadline).await
        }
    }
}

/// Sends the client's own request (made conditional) to the origin on a task of its own and reads the response
/// to its end, so that it refreshes or replaces the entry. Without a tokio runtime, nothing is revalidated.
#[allow(clippy::too_many_arguments)]
fn revalidate_in_background<S, St, ReqB, ResB>(
    shared: Arc<Shared<St>>,
    inner: S,
    mut parts: Parts,
    body: ReqB,
    primary: String,
    key: String,
    entry: Arc<Entry>,
    leader: Leader,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime to revalidate a stale entry on");
        return;
    };
    // The client was answered: its Server-Timing context must not collect the background request's entries.
    parts.extensions.remove::<ServerTiming>();
    let plan = Forward {
        store: Some(StoreTo {
            coalesce_key: key.clone(),
            leader: Some(leader),
        }),
        fwd: "stale",
        detail: None,
        count: None,
        stale: Some((key, entry)),
    };
    runtime.spawn(async move {
        // A request of its own, on a deadline of its own.
        let deadline = Deadline::new();
        if let Ok(response) =
            forward(shared, inner, parts, body, primary, plan, None, deadline).await
        {
            let mut body = pin!(response.into_body());
            while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if frame.is_err() {
                    break;
                }
            }
        }
    });
}

async fn lookup<St: Store>(shared: &Shared<St>, primary: &str, request: &HeaderMap) -> Lookup {
    let now = shared.clock.now();
    let miss = |key: &str, fwd| Lookup::Miss {
        key: key.to_owned(),
        fwd,
        pass: false,
    };
    let found = match shared.store.get(primary).await {
        Ok(v) => v,
        Err(e) => {
            shared.counters.store_error(&e);
            None
        }
    };
    let (key, value) = match found {
        Some(StoredValue::Variants(v)) => {
            let values = vary::values(&v.headers, request);
            let key = vary::secondary_key(primary, &v.headers, &values);
            let value = match shared.store.get(&key).await {
                Ok(Some(value)) => value,
                Ok(None) => return miss(&key, "vary-miss"),
                Err(e) => {
                    shared.counters.store_error(&e);
                    return miss(&key, "vary-miss");
                }
            };
            (key, value)
        }
        Some(value) => (primary.to_owned(), value),
        None => return miss(primary, "uri-miss"),
    };
    match value {
        StoredValue::Response(entry) => Lookup::Found { key, entry },
        StoredValue::Pass { until } if until > now => Lookup::Miss {
            key,
            fwd: "uri-miss",
            pass: true,
        },
        StoredValue::Pass { .. } | StoredValue::Variants(_) => miss(&key, "uri-miss"),
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

/// Takes the store's lease on `key`, or waits for the server that holds it to store the entry (polling the store),
/// for at most twice the lease TTL. Store errors and stores without leases: lead.
async fn remote_lead<St: Store>(
    shared: &Shared<St>,
    primary: &str,
    parts: &Parts,
    key: &str,
    rd: &RequestDirectives,
    refresh: bool,
) -> Remote {
    if refresh {
        // Revalidating a stale entry: each server may refresh its own view.
        return Remote::Lead(None);
    }
    let ttl = shared.config.lease_ttl;
    let give_up = tokio::time::Instant::now() + ttl * 2;
    let mut pause = Duration::from_millis(2);
    // The first lease is asked on the request's deadline. Waiting for another server is not Redis time: each later
    // step (a look, the lease asked again) runs on a deadline of its own; a step that finds Redis stalled spends
    // the request's deadline too, and this server leads.
    let mut step: Option<Deadline> = None;
    loop {
        let lease = match &step {
            None => shared.store.lease(key, ttl).await,
            Some(step) => step.clone().scope(shared.store.lease(key, ttl)).await,
        };
        match lease {
            Ok(Lease::Acquired(release)) => return Remote::Lead(Some(release)),
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
        let now = shared.clock.now();
        let found = now_step
            .clone()
            .scope(lookup(shared, primary, &parts.headers))
            .await;
        match found {
            Lookup::Found { entry, .. }
                if allowed(&shared.config, parts, &entry)
                    && usable(&shared.config, &entry, rd, now) == Usable::Fresh =>
            {
                return Remote::Found(entry);
            }
            Lookup::Miss { pass: true, .. } => return Remote::Pass,
            _ => {}
        }
        step = Some(now_step);
    }
}

/// Whether a coalesced entry fits this request's `Vary` headers.
fn vary_matches(entry: &Entry, request: &HeaderMap) -> bool {
    entry
        .vary
        .iter()
        .all(|(name, value)| vary::normalised(name, request).as_deref() == value.as_deref())
}

async fn plan<St: Store>(
    shared: &Shared<St>,
    parts: &Parts,
    primary: &str,
    rd: &RequestDirectives,
) -> Plan {
    let config = &shared.config;
    let head_only = parts.method == Method::HEAD;
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let cookie = config.policy.cookie_bypass && parts.headers.contains_key(header::COOKIE);
    let personal = if authorization {
        Some("authorization")
    } else if cookie {
        Some("cookie")
    } else {
        None
    };
    let mut rounds = 0;
    loop {
        let now = shared.clock.now();
        let (key, fwd, pass, stale) = match lookup(shared, primary, &parts.headers).await {
            Lookup::Found { key, entry } if allowed(config, parts, &entry) => {
                match usable(config, &entry, rd, now) {
                    Usable::Fresh => {
                        return Plan::Serve {
                            count: Count::Hit,
                            mark: Mark::Hit {
                                ttl: entry.ttl_secs(now),
                            },
                            entry,
                        };
                    }
                    Usable::MaxStale => {
                        return Plan::Serve {
                            count: Count::Stale,
                            mark: Mark::Stale {
                                ttl: entry.ttl_secs(now),
                                why: StaleWhy::MaxStale,
                                fwd_status: None,
                            },
                            entry,
                        };
                    }
                    Usable::WhileRevalidate => {
                        // One background revalidation per entry: only the first stale hit leads it. HEAD cannot
                        // refresh a GET's body, and personal requests lead nothing.
                        let leader = (!head_only && personal.is_none() && !rd.no_store)
                            .then(|| shared.flights.try_lead(&key))
                            .flatten();
                        return Plan::WhileRevalidate { entry, key, leader };
                    }
                    Usable::Refresh { fwd } => (key, fwd, false, Some(entry)),
                }
            }
            Lookup::Found { key, .. } => {
                // Stored, but not for this request (credentials): it goes to the origin on its own.
                if rd.only_if_cached {
                    return Plan::OnlyIfCached;
                }
                return Plan::Forward(Forward {
                    store: (!head_only && !rd.no_store)
                        .then(|| StoreTo::alone(key))
                        .flatten(),
                    detail: personal,
                    ..Forward::new("bypass", Count::Bypass)
                });
            }
            Lookup::Miss { key, fwd, pass } => (key, fwd, pass, None),
        };
        if rd.only_if_cached {
            return Plan::OnlyIfCached;
        }
        let stale = stale.map(|entry| (key.clone(), entry));
        if head_only || rd.no_store {
            // HEAD is answered from a stored GET, never stored itself; `no-store` requests store nothing.
            return Plan::Forward(Forward {
                stale,
                ..Forward::new(fwd, Count::Miss)
            });
        }
        if personal.is_some() {
            // Requests with credentials never wait on (or lead) others: their response may be theirs alone.
            return Plan::Forward(Forward {
                store: StoreTo::alone(key),
                detail: personal,
                stale,
                ..Forward::new("bypass", Count::Bypass)
            });
        }
        if pass {
            return Plan::Forward(Forward {
                detail: Some("hit-for-pass"),
                ..Forward::new("bypass", Count::Miss)
            });
        }
        // A client's own precondition on a miss goes to the origin as it is; its 304 is for it alone.
        let conditional_miss = stale.is_none() && conditional::is_conditional(&parts.headers);
        if !config.coalesce || rounds >= MAX_ROUNDS || conditional_miss {
            return Plan::Forward(Forward {
                store: StoreTo::alone(key),
                stale,
                ..Forward::new(fwd, Count::Miss)
            });
        }
        match shared.flights.join(&key) {
            Join::Leader(leader) => {
                // Another leader may have stored or refreshed the entry between our lookup and our join.
                if let Lookup::Found { entry, .. } = lookup(shared, primary, &parts.headers).await
                    && allowed(config, parts, &entry)
                    && usable(config, &entry, rd, now) == Usable::Fresh
                    && !stale.as_ref().is_some_and(|(_, s)| Arc::ptr_eq(s, &entry))
                {
                    leader.finish(Outcome::Filled(Arc::clone(&entry)));
                    return Plan::Serve {
                        count: Count::Hit,
                        mark: Mark::Hit {
                            ttl: entry.ttl_secs(now),
                        },
                        entry,
                    };
                }
                let mut leader = leader;
                // Other servers sharing the store: one of them calls the origin, the others wait for its entry.
                match remote_lead(shared, primary, parts, &key, rd, stale.is_some()).await {
                    Remote::Lead(release) => {
                        if let Some(release) = release {
                            leader.on_done(move || release.release());
                        }
                    }
                    Remote::Found(entry) => {
                        leader.finish(Outcome::Filled(Arc::clone(&entry)));
                        return Plan::Serve {
                            count: Count::Coalesced,
                            mark: Mark::Collapsed {
                                fwd,
                                status: entry.status,
                            },
                            entry,
                        };
                    }
                    Remote::Pass => {
                        leader.finish(Outcome::Pass);
                        return Plan::Forward(Forward {
                            detail: Some("hit-for-pass"),
                            ..Forward::new(fwd, Count::Miss)
                        });
                    }
                }
                return Plan::Forward(Forward {
                    store: Some(StoreTo {
                        coalesce_key: key,
                        leader: Some(leader),
                    }),
                    stale,
                    ..Forward::new(fwd, Count::Miss)
                });
            }
            Join::Waiter(waiter) => match waiter.outcome().await {
                Outcome::Filled(entry) if vary_matches(&entry, &parts.headers) => {
                    return Plan::Serve {
                        count: Count::Coalesced,
                        mark: Mark::Collapsed {
                            fwd,
                            status: entry.status,
                        },
                        entry,
                    };
                }
                Outcome::Stale(entry) if vary_matches(&entry, &parts.headers) => {
                    let now = shared.clock.now();
                    return Plan::Serve {
                        count: Count::Stale,
                        mark: Mark::Stale {
                            ttl: entry.ttl_secs(now),
                            why: StaleWhy::IfError,
                            fwd_status: None,
                        },
                        entry,
                    };
                }
                Outcome::Pass => {
                    return Plan::Forward(Forward {
                        detail: Some("hit-for-pass"),
                        ..Forward::new(fwd, Count::Miss)
                    });
                }
                Outcome::Failed => {
                    return Plan::Forward(Forward {
                        detail: Some("leader-failed"),
                        ..Forward::new(fwd, Count::Miss)
                    });
                }
                // A variant for other request headers, or a cancelled leader: look again.
                Outcome::Filled(_) | Outcome::Stale(_) | Outcome::Abandoned | Outcome::Pending => {
                    rounds += 1
                }
            },
        }
    }
}

/// A response built from a stored entry: `304 Not Modified` when the request's `If-None-Match` or
/// `If-Modified-Since` is satisfied by it, else the stored response (without a body for HEAD).
fn stored_response<St, B>(
    shared: &Shared<St>,
    entry: &Entry,
    request: &Parts,
    mark: Mark,
    now: SystemTime,
) -> Response<CacheBody<B>> {
    let not_modified = conditional::is_conditional(&request.headers)
        && conditional::not_modified(
            &request.headers,
            entry.status,
            &entry.headers,
            entry.response_time,
        );
    let mut response = if not_modified {
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = conditional::headers_for_304(&entry.headers);
        response
    } else {
        let body = if request.method == Method::HEAD {
            CacheBody::empty()
        } else {
            CacheBody::cached(entry.body.clone(), entry.trailers.clone())
        };
        let mut response = Response::new(body);
        *response.status_mut() = entry.status;
        *response.headers_mut() = entry.headers.clone();
        response
    };
    let headers = response.headers_mut();
    status::set_age(headers, entry.age(now).as_secs());
    status::mark(
        headers,
        &shared.config.status_name,
        mark,
        shared.config.x_cache,
    );
    response
}

/// The statuses that let `stale-if-error` answer (RFC 5861 §4).
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// The stale entry that may answer a failed refresh (RFC 5861 `stale-if-error`), if any.
fn stale_if_error<St>(
    shared: &Shared<St>,
    stale: &Option<(String, Arc<Entry>)>,
    head_only: bool,
) -> Option<Arc<Entry>> {
    let (_, entry) = stale.as_ref()?;
    let staleness = entry
        .staleness(shared.clock.now())
        .unwrap_or(Duration::ZERO);
    (!head_only && staleness < shared.config.sie(entry)).then(|| Arc::clone(entry))
}

#[allow(clippy::too_many_arguments)]
async fn forward<S, St, ReqB, ResB>(
    shared: Arc<Shared<St>>,
    mut inner: S,
    mut parts: Parts,
    body: ReqB,
    primary: String,
    plan: Forward,
    timing: Option<ServerTiming>,
    deadline: Deadline,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: Store,
    ResB: Body,
{
    let Forward {
        store,
        fwd,
        mut detail,
        mut count,
        stale,
    } = plan;
    let config = &shared.config;
    let head_only = parts.method == Method::HEAD;
    let generation = shared.generation.load(Ordering::Acquire);
    let request_time = shared.clock.now();
    // What storing needs from the request, taken before the request moves into the inner service.
    let facts = RequestFacts::new(
        &parts.method,
        &parts.headers,
        config.default_ttl(&parts),
        request_time,
    );
    // The client's own request head: its preconditions are answered from a refreshed entry, an unsafe method's
    // target is invalidated, `Vary` values are taken from it.
    let client = (store.is_some() || stale.is_some() || is_unsafe(&parts.method)).then(|| {
        let mut head = Request::new(()).into_parts().0;
        head.method = parts.method.clone();
        head.uri = parts.uri.clone();
        head.headers = parts.headers.clone();
        head
    });
    let uri = (store.is_some() && config.tag_fn.is_some()).then(|| parts.uri.clone());
    // Validate a stored entry with the origin: the entry's validators replace the client's.
    let validating = match &stale {
        Some((_, entry)) if !head_only => {
            conditional::set_validators(&mut parts.headers, &entry.headers)
        }
        _ => false,
    };
    let mut leader = None;
    let store = store.map(|mut s| {
        leader = s.leader.take();
        s.coalesce_key
    });
    let finish = |leader: Option<Leader>, outcome: Outcome| {
        if let Some(leader) = leader {
            leader.finish(outcome);
        }
    };
    let counted = |count: Option<Count>| {
        if let Some(count) = count {
            shared.counters.count(count);
        }
    };

    let (mut head, body) = match inner.call(Request::from_parts(parts, body)).await {
        Ok(response) => response.into_parts(),
        Err(e) => {
            if let (Some(entry), Some(client)) =
                (stale_if_error(&shared, &stale, head_only), &client)
            {
                finish(leader, Outcome::Stale(Arc::clone(&entry)));
                counted(count.map(|_| Count::Stale));
                let now = shared.clock.now();
                let mark = Mark::Stale {
                    ttl: entry.ttl_secs(now),
                    why: StaleWhy::IfError,
                    fwd_status: None,
                };
                if let Some(t) = timing {
                    t.describe("cache", mark.timing());
                }
                return Ok(stored_response(&shared, &entry, client, mark, now));
            }
            finish(leader, Outcome::Failed);
            counted(count);
            return Err(e);
        }
    };
    let response_time = shared.clock.now();
    let status = head.status;

    // The origin confirmed the stored entry: refresh it (RFC 9111 §4.3.4) and answer from it.
    if validating
        && status == StatusCode::NOT_MODIFIED
        && let (Some((key, entry)), Some(client)) = (&stale, &client)
    {
        if conditional::same_validators(&entry.headers, &head.headers) {
            let refreshed = refresh(&shared, entry, &head.headers, &facts, response_time);
            if let Ok(fresh) = &refreshed
                && shared.generation.load(Ordering::Acquire) == generation
            {
                deadline
                    .clone()
                    .scope(put_entry(&shared, &primary, key, fresh))
                    .await;
            }
            let fresh = match refreshed {
                Ok(fresh) => {
                    finish(leader, Outcome::Filled(Arc::clone(&fresh)));
                    fresh
                }
                Err((fresh, not_stored)) => {
                    // The refreshed headers forbid storing (`no-store` now): serve this once, keep nothing.
                    if let Err(e) = deadline.clone().scope(shared.store.remove(key)).await {
                        shared.counters.store_error(&e);
                    }
                    match leader {
                        Some(leader) if not_stored.intrinsic => {
                            mark_pass(Arc::clone(&shared), key.clone(), leader, deadline.clone())
                        }
                        other => drop(other),
                    }
                    fresh
                }
            };
            counted(count.map(|_| Count::Revalidated));
            let mark = Mark::Revalidated { fwd };
            if let Some(t) = timing {
                t.describe("cache", mark.timing());
            }
            return Ok(stored_response(
                &shared,
                &fresh,
                client,
                mark,
                response_time,
            ));
        }
        // A 304 about another representation than the stored one: the entry is no use any more.
        if let Err(e) = deadline.clone().scope(shared.store.remove(key)).await {
            shared.counters.store_error(&e);
        }
        detail = Some("validator-mismatch");
    }

    // The refresh failed: a stale entry within `stale-if-error` answers instead of the error.
    if is_error_status(status)
        && let (Some(entry), Some(client)) = (stale_if_error(&shared, &stale, head_only), &client)
    {
        finish(leader, Outcome::Stale(Arc::clone(&entry)));
        counted(count.map(|_| Count::Stale));
        let now = shared.clock.now();
        let mark = Mark::Stale {
            ttl: entry.ttl_secs(now),
            why: StaleWhy::IfError,
            fwd_status: Some(status),
        };
        if let Some(t) = timing {
            t.describe("cache", mark.timing());
        }
        drop(body);
        return Ok(stored_response(&shared, &entry, client, mark, now));
    }

    // A HEAD response with other validators than the stored GET's: the stored entry is stale (RFC 9111 §4.3.5).
    if head_only
        && status.is_success()
        && let Some((key, entry)) = &stale
        && !conditional::same_validators(&entry.headers, &head.headers)
    {
        let mut marked = Entry::clone(entry);
        marked.no_cache = true;
        marked.freshness_lifetime = Duration::ZERO;
        let marked = Arc::new(marked);
        if !deadline
            .clone()
            .scope(put_entry(&shared, &primary, key, &marked))
            .await
            && let Err(e) = deadline.clone().scope(shared.store.remove(key)).await
        {
            shared.counters.store_error(&e);
        }
    }

    // A successful unsafe method: what the cache holds for its target, `Location` and `Content-Location` goes.
    if let Some(client) = &client
        && is_unsafe(&client.method)
        && (status.is_success() || status.is_redirection())
    {
        deadline
            .clone()
            .scope(invalidate::after_unsafe(&shared, client, &head.headers))
            .await;
    }
    counted(count.take());

    let mut tags = Vec::new();
    if store.is_some() {
        policy::tags_from(&head.headers, &config.tag_headers, &mut tags);
        if let (Some(f), Some(uri)) = (&config.tag_fn, &uri) {
            tags.extend(f(uri, &head));
        }
    }
    if config.strip_tag_headers {
        for name in &config.tag_headers {
            head.headers.remove(name);
        }
    }

    let body = match (store, client) {
        (Some(coalesce_key), Some(client)) => {
            let decision = policy::decide(&facts, &head, &config.policy, response_time);
            let content_length = content_length(&head.headers);
            let decision = match decision {
                Ok(_) if content_length.is_some_and(|n| n > config.max_entry_size as u64) => {
                    Err(policy::NotStored {
                        reason: "too-big",
                        intrinsic: true,
                    })
                }
                other => other,
            };
            match decision {
                Ok(storable) => {
                    let vary: Vec<_> = storable
                        .vary
                        .iter()
                        .map(|name| (name.clone(), vary::normalised(name, &client.headers)))
                        .collect();
                    let store_key = if vary.is_empty() {
                        primary.clone()
                    } else {
                        let names: Vec<_> = vary.iter().map(|(n, _)| n.clone()).collect();
                        let values: Vec<_> = vary.iter().map(|(_, v)| v.clone()).collect();
                        vary::secondary_key(&primary, &names, &values)
                    };
                    let mut headers = head.headers.clone();
                    policy::strip_for_storage(&mut headers);
                    if config.policy.strip_set_cookie {
                        headers.remove(header::SET_COOKIE);
                    }
                    let template = Template {
                        status,
                        headers,
                        request_time,
                        response_time,
                        initial_age: storable.initial_age,
                        freshness_lifetime: storable.freshness_lifetime,
                        vary,
                        tags,
                        public: storable.public,
                        shared_with_authorization: storable.shared_with_authorization,
                        no_cache: storable.no_cache,
                        must_revalidate: storable.must_revalidate,
                        stale_while_revalidate: storable.stale_while_revalidate,
                        stale_if_error: storable.stale_if_error,
                    };
                    let sink = StoreFill {
                        shared: Arc::clone(&shared),
                        template,
                        primary,
                        store_key,
                        coalesce_key,
                        leader,
                        generation,
                        deadline,
                    };
                    if body.is_end_stream() {
                        // An empty body (a 204, `Full` of nothing) that a server will never poll: it is whole now.
                        Box::new(sink).complete(bytes::Bytes::new(), None);
                        CacheBody::inner(body)
                    } else {
                        CacheBody::tee(
                            body,
                            Fill::new(Box::new(sink), config.max_entry_size, content_length),
                        )
                    }
                }
                Err(not_stored) => {
                    detail = detail.or(Some(not_stored.reason));
                    // A reason of this request's own (not the response's) drops the leader: waiters look again.
                    if let Some(leader) = leader
                        && not_stored.intrinsic
                    {
                        mark_pass(Arc::clone(&shared), coalesce_key, leader, deadline);
                    }
                    CacheBody::inner(body)
                }
            }
        }
        _ => CacheBody::inner(body),
    };
    let mark = Mark::Forward {
        fwd,
        status,
        detail,
    };
    if let Some(t) = timing {
        t.describe("cache", mark.timing());
    }
    status::mark(&mut head.headers, &config.status_name, mark, config.x_cache);
    Ok(Response::from_parts(head, body))
}

/// The stored entry updated with a `304`'s headers (RFC 9111 §4.3.4): new headers, freshness and age; the body,
/// `Vary` values and tags stay. `Err` carries the updated entry when its new headers forbid storing.
fn refresh<St>(
    shared: &Shared<St>,
    entry: &Entry,
    not_modified: &HeaderMap,
    facts: &RequestFacts,
    response_time: SystemTime,
) -> Result<Arc<Entry>, (Arc<Entry>, policy::NotStored)> {
    let mut fresh_headers = not_modified.clone();
    policy::strip_for_storage(&mut fresh_headers);
    for name in &shared.config.tag_headers {
        fresh_headers.remove(name);
    }
    let headers = conditional::freshen(&entry.headers, &fresh_headers);
    let mut head = Response::new(()).into_parts().0;
    head.status = entry.status;
    head.headers = headers;
    // The 304 answers for the stored response, which was allowed for this request: judge it as a plain GET.
    let facts = RequestFacts {
        is_get: true,
        authorization: false,
        cookie: false,
        ..*facts
    };
    let decision = policy::decide(&facts, &head, &shared.config.policy, response_time);
    let mut fresh = Entry {
        status: entry.status,
        headers: head.headers,
        body: entry.body.clone(),
        trailers: entry.trailers.clone(),
        request_time: facts.request_time,
        response_time,
        initial_age: Duration::ZERO,
        freshness_lifetime: Duration::ZERO,
        vary: entry.vary.clone(),
        tags: entry.tags.clone(),
        public: entry.public,
        shared_with_authorization: entry.shared_with_authorization,
        no_cache: entry.no_cache,
        must_revalidate: entry.must_revalidate,
        stale_while_revalidate: entry.stale_while_revalidate,
        stale_if_error: entry.stale_if_error,
    };
    match decision {
        Ok(s) => {
            fresh.initial_age = s.initial_age;
            fresh.freshness_lifetime = s.freshness_lifetime;
            fresh.public = s.public;
            fresh.shared_with_authorization = s.shared_with_authorization;
            fresh.no_cache = s.no_cache;
            fresh.must_revalidate = s.must_revalidate;
            fresh.stale_while_revalidate = s.stale_while_revalidate;
            fresh.stale_if_error = s.stale_if_error;
            Ok(Arc::new(fresh))
        }
        Err(not_stored) => Err((Arc::new(fresh), not_stored)),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(header::CONTENT_LENGTH)?.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
