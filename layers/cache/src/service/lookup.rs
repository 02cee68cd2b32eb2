//! Finding a stored entry for a request (through its `Vary` record) and what it can do for the request
//! (RFC 9111 §4.2, §4.2.4, §5.2.1; RFC 5861).

use crate::{
    control::RequestDirectives,
    entry::{Entry, StoredValue},
    layer::{Config, Shared},
    store::Store,
    vary,
};
use http::HeaderMap;
use std::{sync::Arc, time::SystemTime};

/// What a lookup found.
pub(super) enum Lookup {
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
pub(super) enum Usable {
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

pub(super) fn usable(
    config: &Config,
    entry: &Entry,
    directives: &RequestDirectives,
    now: SystemTime,
) -> Usable {
    if entry.no_cache {
        return Usable::Refresh { fwd: "stale" };
    }
    if directives.no_cache {
        return Usable::Refresh { fwd: "request" };
    }
    let age = entry.age(now);
    let life = entry.freshness_lifetime;
    let young_enough = directives.max_age.is_none_or(|max| age <= max);
    let Some(staleness) = entry.staleness(now) else {
        let lasts = directives.min_fresh.is_none_or(|min| age + min < life);
        return if young_enough && lasts {
            Usable::Fresh
        } else {
            Usable::Refresh { fwd: "request" }
        };
    };
    if !entry.must_revalidate && young_enough && directives.min_fresh.is_none() {
        if directives
            .max_stale
            .is_some_and(|max| max.is_none_or(|max| staleness <= max))
        {
            return Usable::MaxStale;
        }
        if staleness < config.stale_while_revalidate(entry) {
            return Usable::WhileRevalidate;
        }
    }
    Usable::Refresh { fwd: "stale" }
}

/// Looks `primary` up, and through a `Vary` record the secondary key for these request headers.
pub(super) async fn lookup<St: Store>(
    shared: &Shared<St>,
    primary: &str,
    request: &HeaderMap,
) -> Lookup {
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
            let values = vary::values(&v.headers, request, &shared.config.key.vary);
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

/// Whether a coalesced entry fits this request's `Vary` headers.
pub(super) fn vary_matches(
    entry: &Entry,
    request: &HeaderMap,
    normalizers: &vary::Normalizers,
) -> bool {
    entry.vary.iter().all(|(name, value)| {
        vary::normalised(name, request, normalizers).as_deref() == value.as_deref()
    })
}
