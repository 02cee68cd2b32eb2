//! The backend trait ([`RateLimitStore`]), its request and answer types, and the GCRA arithmetic every backend
//! must reproduce.
//!
//! # Semantics every backend implements
//!
//! A [`CheckRequest`] holds a `cost` (units, `0..=u32::MAX`) and up to [`MAX_POLICIES`] [`Check`]s, each a
//! `(policy id, key, quota)`. Each `(policy id, key)` pair names one GCRA state: a *theoretical arrival time*
//! (`tat`, nanoseconds on the backend's clock). With `now` read **once** per request, `T` the quota's emission
//! interval and `C = burst × T` its capacity (both integers from [`Quota`]):
//!
//! 1. `base = max(tat, now)` (a missing state counts as `tat = now`: a full quota);
//! 2. `new_tat = base + cost × T` (saturating);
//! 3. the check *admits* when `new_tat − now ≤ C`.
//!
//! The request is **all-or-nothing**: it is admitted when every check admits, and only then is every state written
//! (`tat = new_tat`); when any check refuses, no state changes at all, so a refused request costs nothing in any
//! policy. A cost of 0 is always admitted and changes nothing. A cost above a policy's burst can never be admitted:
//! that check refuses with no retry time.
//!
//! The [`PolicyOutcome`] of each check reports, after the decision:
//! - `remaining`: whole units that could be spent now, `⌊(now + C − tat′) / T⌋` with `tat′` the state after the
//!   decision (rounded down: never promise more than there is);
//! - `reset`: time until the quota is full again, `tat′ − now` (zero when already full);
//! - `retry_after` (refusing checks only): the earliest time at which the same request could be admitted,
//!   `new_tat − C − now`; `None` when it never can.
//!
//! The layer turns these into headers, rounding `reset` and `retry_after` **up** to whole seconds, so a client
//! that waits `Retry-After` seconds is never refused again for the same reason.
//!
//! A state whose `tat ≤ now` is a full quota and carries no information: backends may drop it at any time (the
//! in-process store forgets it; the Redis store gives each state a TTL of `tat − now`).

mod memory;
mod policy_keys;
#[cfg(feature = "redis")]
mod redis;

pub use memory::{InMemoryStore, InMemoryStoreBuilder, StoreStats};
pub use policy_keys::PolicyKeys;
#[cfg(feature = "redis")]
pub use redis::{
    GCRA_SCRIPT, REDIS_CIRCUIT_OPEN, REDIS_ERRORS, REDIS_SCRIPT_RELOADS, RedisStore,
    RedisStoreBuilder, RedisStoreError,
};

use crate::{Key, Quota};
use std::{future::Future, time::Duration};
use tower_kit_core::ConfigError;

/// The most policies one request can be checked against.
pub const MAX_POLICIES: usize = 4;

/// Identifies a policy inside a store: a stable 64-bit hash of its name, so layers (and servers, for a shared
/// backend) that use the same policy name share the same states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyId(pub u64);

impl PolicyId {
    /// The id of a policy name (FNV-1a 64 of its UTF-8 bytes: stable across processes, versions and machines).
    pub fn of(name: &str) -> Self {
        Self(fnv1a64(name.as_bytes()))
    }
}

/// FNV-1a, 64 bits: a stable, dependency-free hash for short names.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One policy to check: whose state (`policy`, `key`) and with which quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// The policy's id.
    pub policy: PolicyId,
    /// The client's key.
    pub key: Key,
    /// The quota that applies to this request.
    pub quota: Quota,
}

/// What the layer asks a store for one request.
#[derive(Clone, Copy, Debug)]
pub struct CheckRequest<'a> {
    /// The checks, at most [`MAX_POLICIES`]; the answer lists one [`PolicyOutcome`] per check, in this order.
    pub checks: &'a [Check],
    /// Units this request costs in every policy.
    pub cost: u32,
}

/// The answer of one check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Whether this check alone would admit the request.
    pub admitted: bool,
    /// Whole units left after the decision.
    pub remaining: u64,
    /// Time until the quota is full again.
    pub reset: Duration,
    /// For a refusing check: the earliest time the same request could be admitted (`None`: never, the cost is
    /// above the burst). Always `None` for an admitting check.
    pub retry_after: Option<Duration>,
}

/// A store's decision for one request: one [`PolicyOutcome`] per check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    outcomes: [PolicyOutcome; MAX_POLICIES],
    len: u8,
    admitted: bool,
}

impl Decision {
    /// The decision of a request checked against one policy.
    #[inline]
    pub fn single(outcome: PolicyOutcome) -> Self {
        let mut outcomes = [PolicyOutcome::default(); MAX_POLICIES];
        outcomes[0] = outcome;
        Self {
            outcomes,
            len: 1,
            admitted: outcome.admitted,
        }
    }

    /// A decision from outcomes in check order (at most [`MAX_POLICIES`]; extra ones are ignored).
    pub fn from_outcomes(outcomes: impl IntoIterator<Item = PolicyOutcome>) -> Self {
        let mut d = Self {
            outcomes: [PolicyOutcome::default(); MAX_POLICIES],
            len: 0,
            admitted: true,
        };
        for o in outcomes.into_iter().take(MAX_POLICIES) {
            d.outcomes[usize::from(d.len)] = o;
            d.admitted &= o.admitted;
            d.len += 1;
        }
        d
    }

    /// The outcomes, in check order.
    #[inline]
    pub fn outcomes(&self) -> &[PolicyOutcome] {
        &self.outcomes[..usize::from(self.len)]
    }

    /// Whether the request is admitted: every check admits.
    #[inline]
    pub fn admitted(&self) -> bool {
        self.admitted
    }

    /// For a refused request, when it could be admitted: the longest wait among the refusing checks, or `None`
    /// when a refusing check can never admit it (or the request is admitted).
    pub fn retry_after(&self) -> Option<Duration> {
        let mut longest = Duration::ZERO;
        let mut refused = false;
        for o in self.outcomes().iter().filter(|o| !o.admitted) {
            refused = true;
            longest = longest.max(o.retry_after?);
        }
        refused.then_some(longest)
    }
}

/// A rate-limit backend: decides [`CheckRequest`]s atomically with the semantics in the [module docs](self).
///
/// The future is `'static`, so a networked backend copies what it needs out of the request, and `Unpin` (box it:
/// `Pin<Box<dyn Future ...>>`). The layer polls it once right away with a no-op waker: a backend that answers
/// synchronously (the in-process store returns [`std::future::Ready`]) costs no allocation and no task wake-up; a
/// pending one is moved into the response future and polled again from there.
pub trait RateLimitStore: Send + Sync + 'static {
    /// What can go wrong (the in-process store: [`std::convert::Infallible`]).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The decision, possibly later.
    type Future: Future<Output = Result<Decision, Self::Error>> + Send + Unpin + 'static;

    /// Decides one request (all checks at once: all-or-nothing).
    fn check(&self, request: &CheckRequest<'_>) -> Self::Future;

    /// A shortcut for the layer's most common case, a request checked against one policy at cost 1 whose
    /// admission needs no [`PolicyOutcome`] (no headers on admitted responses): when the store can decide it at once
    /// and it is **admitted**, consume its unit exactly as [`check`](Self::check) would and return `true`.
    /// Otherwise return `false` **without changing any state**; the layer then calls [`check`](Self::check) for
    /// the full decision.
    ///
    /// The default returns `false` (every request goes through `check`), which is right for a networked store.
    /// The in-process store answers here without computing outcomes.
    #[inline]
    fn try_admit_one(&self, check: &Check) -> bool {
        let _ = check;
        false
    }

    /// Called by the layer's builder with its policies: a store that cannot decide them as one all-or-nothing
    /// request refuses them here, so the mistake is a [`ConfigError`] at start-up, not a failure per request. A
    /// Redis store on a cluster refuses policies that key requests differently (their states would live in two
    /// slots, which one script cannot touch).
    ///
    /// The default accepts any policies.
    fn check_policies(&self, policies: &PolicyKeys<'_>) -> Result<(), ConfigError> {
        let _ = policies;
        Ok(())
    }
}

/// The GCRA arithmetic of one check, shared by the backends written in Rust; the Redis script mirrors it.
///
/// Returns the outcome and the new `tat` to store if the whole request is admitted (`None`: leave the state alone).
pub fn gcra(tat: Option<u64>, now: u64, quota: &Quota, cost: u32) -> (PolicyOutcome, Option<u64>) {
    let t = quota.emission_interval_nanos();
    let capacity = quota.capacity_nanos();
    let base = tat.map_or(now, |tat| tat.max(now));
    let remaining_at =
        |tat_after: u64| (now.saturating_add(capacity).saturating_sub(tat_after)) / t;
    if cost == 0 {
        let outcome = PolicyOutcome {
            admitted: true,
            remaining: remaining_at(base),
            reset: Duration::from_nanos(base - now),
            retry_after: None,
        };
        return (outcome, None);
    }
    let new_tat = base.saturating_add(t.saturating_mul(u64::from(cost)));
    if new_tat - now <= capacity {
        let outcome = PolicyOutcome {
            admitted: true,
            remaining: remaining_at(new_tat),
            reset: Duration::from_nanos(new_tat - now),
            retry_after: None,
        };
        (outcome, Some(new_tat))
    } else {
        let retry_after =
            (cost <= quota.burst()).then(|| Duration::from_nanos(new_tat - capacity - now));
        let outcome = PolicyOutcome {
            admitted: false,
            remaining: remaining_at(base),
            reset: Duration::from_nanos(base - now),
            retry_after,
        };
        (outcome, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn q(limit: u32, burst: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(limit).unwrap())
            .with_burst(NonZeroU32::new(burst).unwrap())
    }

    #[test]
    fn burst_then_refusal_then_refill() {
        let quota = q(10, 3);
        let mut tat = None;
        let now = 1_000_000_000_000;
        for remaining in [2, 1, 0] {
            let (o, new) = gcra(tat, now, &quota, 1);
            assert!(o.admitted);
            assert_eq!(o.remaining, remaining);
            tat = new;
        }
        let (o, new) = gcra(tat, now, &quota, 1);
        assert!(!o.admitted);
        assert_eq!(new, None);
        assert_eq!(o.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(o.reset, Duration::from_millis(300));
        let (o, _) = gcra(tat, now + 100_000_000, &quota, 1);
        assert!(o.admitted);
        assert_eq!(o.remaining, 0);
    }

    #[test]
    fn cost_above_burst_never_admits() {
        let (o, new) = gcra(None, 5, &q(10, 3), 4);
        assert!(!o.admitted);
        assert_eq!(o.retry_after, None);
        assert_eq!(new, None);
        assert_eq!(o.remaining, 3);
    }

    #[test]
    fn zero_cost_changes_nothing() {
        let (o, new) = gcra(Some(50), 10, &q(10, 3), 0);
        assert!(o.admitted);
        assert_eq!(new, None);
        assert_eq!(o.reset, Duration::from_nanos(40));
    }

    #[test]
    fn decision_retry_after_is_the_longest_wait() {
        let refuse = |s| PolicyOutcome {
            admitted: false,
            retry_after: Some(Duration::from_secs(s)),
            ..Default::default()
        };
        let admit = PolicyOutcome {
            admitted: true,
            ..Default::default()
        };
        let d = Decision::from_outcomes([admit, refuse(3), refuse(7)]);
        assert!(!d.admitted());
        assert_eq!(d.retry_after(), Some(Duration::from_secs(7)));
        let never = PolicyOutcome {
            admitted: false,
            ..Default::default()
        };
        assert_eq!(
            Decision::from_outcomes([refuse(3), never]).retry_after(),
            None
        );
        assert_eq!(Decision::from_outcomes([admit]).retry_after(), None);
        assert!(Decision::from_outcomes([admit, admit]).admitted());
    }

    #[test]
    fn policy_ids_are_stable() {
        // FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(PolicyId::of("burst"), PolicyId::of("daily"));
    }

    proptest::proptest! {
        #[test]
        fn gcra_never_panics_and_never_exceeds_capacity(
            tat in proptest::option::of(proptest::num::u64::ANY),
            now in proptest::num::u64::ANY,
            limit in 1u32..1000, burst in 1u32..1000, cost in proptest::num::u32::ANY,
        ) {
            let quota = q(limit, burst);
            let (o, new) = gcra(tat, now, &quota, cost);
            if let Some(new) = new {
                proptest::prop_assert!(new - now <= quota.capacity_nanos());
                proptest::prop_assert!(o.admitted);
            }
            proptest::prop_assert!(o.remaining <= u64::from(burst));
        }
    }
}
