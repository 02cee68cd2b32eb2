//! The response headers: `Retry-After`, draft-ietf-httpapi-ratelimit-headers (`RateLimit-Policy`, `RateLimit`, in
//! Structured Fields syntax) and the legacy `X-RateLimit-*` trio.
//!
//! Every value describes what the limiter really does, so a client that follows the headers is neither refused nor
//! told to wait longer than it must:
//!
//! - `RateLimit-Policy: "name";q=Q;w=W`: `Q` units per `W` seconds as [`Quota::advertised`] computes them: `Q` is
//!   the burst (the most a client can spend at once) and `W` the time the limiter takes to give `Q` units back. A
//!   client that never sends more than `Q` within any `W` seconds is never refused. With the default burst this is
//!   the configured `limit` per `window`.
//! - `RateLimit: "name";r=R;t=T`: `R` whole units can be spent now; `T` is the number of seconds (rounded up) until
//!   *additional* quota comes back, the draft's definition: the next unit, not the whole burst. `T` is 0 when the
//!   quota is full. On a refusal at cost 1, `T` equals `Retry-After`.
//! - `Retry-After` (refusals): the whole seconds, rounded up, until the same request would be admitted: never
//!   shorter (the client would be refused again) and never a second longer than needed.
//! - legacy `X-RateLimit-Limit` / `-Remaining` / `-Reset`: `Q`, `R`, and the seconds until the quota is **full**
//!   again (the fixed-window reading of those names: `R` now, `Q` after `Reset`).

use crate::{Quota, store::PolicyOutcome};
use http::{HeaderName, HeaderValue};
use std::{fmt::Write as _, time::Duration};

/// `RateLimit-Policy`: `"burst";q=10;w=1, "daily";q=10000;w=86400`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: `"burst";r=3;t=1`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Legacy `X-RateLimit-Limit`.
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// Legacy `X-RateLimit-Remaining`.
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// Legacy `X-RateLimit-Reset` (seconds until the quota is full again).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// One policy's state as the headers show it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyState<'a> {
    /// The policy's name.
    pub name: &'a str,
    /// The quota that applied to this request.
    pub quota: Quota,
    /// The store's answer for this policy.
    pub outcome: PolicyOutcome,
}

/// Whole seconds, rounded up: a client that waits this long is never early.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() != 0)
}

fn value(s: &str) -> HeaderValue {
    // Names are checked to be `[A-Za-z0-9_.-]` at build time and the rest is digits and punctuation.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `RateLimit-Policy` for these policies (`q` and `w` from [`Quota::advertised`]).
pub fn policy_header(states: &[PolicyState<'_>]) -> HeaderValue {
    let mut s = String::with_capacity(24 * states.len());
    for (i, p) in states.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let (q, w) = p.quota.advertised();
        let _ = write!(s, "\"{}\";q={q};w={w}", p.name);
    }
    value(&s)
}

/// Time until additional quota comes back (the `t` of `RateLimit`): the next unit after the state this outcome
/// reports, or zero when the quota is already full.
///
/// A state `reset` away from full holds `C − reset` of its capacity `C = burst × T`, i.e. `⌊(C − reset) / T⌋` whole
/// units and a fraction; the next unit completes when that fraction reaches `T`.
pub fn until_next_unit(quota: &Quota, outcome: &PolicyOutcome) -> Duration {
    let reset = u64::try_from(outcome.reset.as_nanos()).unwrap_or(u64::MAX);
    if reset == 0 {
        return Duration::ZERO;
    }
    let t = quota.emission_interval_nanos().max(1);
    let held = quota.capacity_nanos().saturating_sub(reset);
    // The part of a unit already refilled; the rest of that unit is the wait (never more than `reset`).
    let wait = t - held % t;
    Duration::from_nanos(wait.min(reset))
}

/// `RateLimit` for these policies (written by hand: this runs per request when headers go on admitted responses).
pub fn ratelimit_header(states: &[PolicyState<'_>]) -> HeaderValue {
    let mut out = Vec::with_capacity(32 * states.len());
    for (i, p) in states.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.push(b'"');
        out.extend_from_slice(p.name.as_bytes());
        out.extend_from_slice(b"\";r=");
        push_decimal(&mut out, p.outcome.remaining);
        out.extend_from_slice(b";t=");
        push_decimal(&mut out, ceil_secs(until_next_unit(&p.quota, &p.outcome)));
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The policy the legacy headers describe: on a refusal the one with the longest wait, else the one with the fewest
/// units left.
pub fn most_restrictive<'a, 'b>(states: &'b [PolicyState<'a>]) -> Option<&'b PolicyState<'a>> {
    let refusing = states
        .iter()
        .filter(|p| !p.outcome.admitted)
        .max_by_key(|p| p.outcome.retry_after.unwrap_or(Duration::MAX));
    refusing.or_else(|| states.iter().min_by_key(|p| p.outcome.remaining))
}

/// Every header to add for these states (`legacy` adds the `X-RateLimit-*` trio); `policy` is a precomputed
/// `RateLimit-Policy` value for these states, if the caller has one.
pub fn headers(
    states: &[PolicyState<'_>],
    legacy: bool,
    policy: Option<&HeaderValue>,
) -> Vec<(HeaderName, HeaderValue)> {
    if states.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(if legacy { 5 } else { 2 });
    let policy = policy.cloned().unwrap_or_else(|| policy_header(states));
    out.push((RATELIMIT_POLICY.clone(), policy));
    out.push((RATELIMIT.clone(), ratelimit_header(states)));
    if legacy && let Some(p) = most_restrictive(states) {
        out.push((
            X_RATELIMIT_LIMIT.clone(),
            HeaderValue::from(p.quota.advertised().0),
        ));
        out.push((
            X_RATELIMIT_REMAINING.clone(),
            HeaderValue::from(p.outcome.remaining),
        ));
        out.push((
            X_RATELIMIT_RESET.clone(),
            HeaderValue::from(ceil_secs(p.outcome.reset)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn state(
        name: &str,
        limit: u32,
        remaining: u64,
        reset_ms: u64,
        retry_ms: Option<u64>,
    ) -> PolicyState<'_> {
        PolicyState {
            name,
            quota: Quota::per_second(NonZeroU32::new(limit).unwrap()),
            outcome: PolicyOutcome {
                admitted: retry_ms.is_none(),
                remaining,
                reset: Duration::from_millis(reset_ms),
                retry_after: retry_ms.map(Duration::from_millis),
            },
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(String::from_utf8(v).unwrap(), n.to_string());
        }
    }

    #[test]
    fn rounding_is_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn formats() {
        let states = [
            state("burst", 10, 3, 700, None),
            state("daily", 5, 0, 1000, Some(200)),
        ];
        assert_eq!(
            policy_header(&states),
            r#""burst";q=10;w=1, "daily";q=5;w=1"#
        );
        assert_eq!(
            ratelimit_header(&states),
            r#""burst";r=3;t=1, "daily";r=0;t=1"#
        );
        let h = headers(&states, true, None);
        assert_eq!(h.len(), 5);
        assert_eq!(h[2].1, "5");
        assert_eq!(h[3].1, "0");
        assert_eq!(h[4].1, "1");
        assert!(headers(&[], true, None).is_empty());
        let pre = HeaderValue::from_static("x");
        assert_eq!(headers(&states, false, Some(&pre))[0].1, "x");
        let admitted = [state("a", 10, 3, 0, None), state("b", 10, 1, 0, None)];
        assert_eq!(most_restrictive(&admitted).unwrap().name, "b");
    }

    const S: u64 = 1_000_000_000;

    fn quota(limit: u32, window: u64, burst: u32) -> Quota {
        Quota::new(NonZeroU32::new(limit).unwrap(), Duration::from_secs(window))
            .unwrap()
            .with_burst(NonZeroU32::new(burst).unwrap())
    }

    /// Rate, window and burst combinations, bursts above and below the limit included.
    const COMBOS: &[(u32, u64, u32)] = &[
        (100, 60, 10), // the demo's defaults
        (100, 60, 100),
        (1, 3600, 10), // burst above the limit
        (1, 3600, 1),
        (5, 60, 5),
        (10, 1, 3),
        (3, 1, 3),
        (7, 60, 2),
        (5, 60, 20),
        (100, 3600, 10),
    ];

    /// The headers of one outcome, as a client reads them.
    fn advertised_t(q: &Quota, o: &PolicyOutcome) -> u64 {
        let st = [PolicyState {
            name: "p",
            quota: *q,
            outcome: *o,
        }];
        let v = ratelimit_header(&st);
        let v = v.to_str().unwrap();
        v.rsplit("t=").next().unwrap().parse().unwrap()
    }

    /// The example the defaults used to get wrong: 1 per hour, burst 10. Ten requests pass, and the headers say so
    /// (`q=10;w=36000`); the refusal's `t` and `Retry-After` are one hour (when one unit is back), not ten.
    #[test]
    fn one_per_hour_with_a_burst_of_ten() {
        let q = quota(1, 3600, 10);
        let st = |outcome| PolicyState {
            name: "per-ip",
            quota: q,
            outcome,
        };
        assert_eq!(
            policy_header(&[st(PolicyOutcome::default())]),
            r#""per-ip";q=10;w=36000"#
        );
        let now = 1_000 * S;
        let mut tat = None;
        for _ in 0..10 {
            let (o, new) = crate::store::gcra(tat, now, &q, 1);
            assert!(o.admitted);
            tat = new;
        }
        let (refused, _) = crate::store::gcra(tat, now, &q, 1);
        assert!(!refused.admitted);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(3600)));
        assert_eq!(ratelimit_header(&[st(refused)]), r#""per-ip";r=0;t=3600"#);
    }

    /// For every combination: a refusal's `t` and `Retry-After` are the true wait rounded up to whole seconds (one
    /// second earlier the request is still refused, at that moment it is admitted), and a client that sends the
    /// advertised `q` units per `w` seconds, all at once or spread out, is never refused.
    #[test]
    fn headers_match_what_the_limiter_does() {
        for &(limit, window, burst) in COMBOS {
            let q = quota(limit, window, burst);
            let ctx = format!("{limit}/{window}s burst {burst}");
            let (units, w) = q.advertised();
            let now = 10_000_000 * S;
            // Spend everything at once: exactly `q` units pass.
            let mut tat = None;
            let mut admitted = 0;
            loop {
                let (o, new) = crate::store::gcra(tat, now, &q, 1);
                if !o.admitted {
                    // The refusal: `t`, `Retry-After` and the truth.
                    let retry = o.retry_after.unwrap();
                    let retry_secs = ceil_secs(retry);
                    assert_eq!(advertised_t(&q, &o), retry_secs, "{ctx}: t = Retry-After");
                    assert!(
                        retry_secs * S - u64::try_from(retry.as_nanos()).unwrap() < S,
                        "{ctx}"
                    );
                    let before = now + (retry_secs - 1) * S;
                    assert!(
                        !crate::store::gcra(tat, before, &q, 1).0.admitted,
                        "{ctx}: early"
                    );
                    let at = now + retry_secs * S;
                    assert!(
                        crate::store::gcra(tat, at, &q, 1).0.admitted,
                        "{ctx}: on time"
                    );
                    break;
                }
                admitted += 1;
                // After each admission, `t` is when the next unit comes back, never the whole burst.
                let next = until_next_unit(&q, &o);
                assert!(
                    next <= Duration::from_nanos(q.emission_interval_nanos()),
                    "{ctx}"
                );
                tat = new;
            }
            assert_eq!(admitted, units, "{ctx}: q is what passes at once");
            // Following the policy: `q` at once every `w` seconds...
            let mut tat = None;
            for k in 0..50 {
                for _ in 0..units {
                    let (o, new) = crate::store::gcra(tat, now + k * w * S, &q, 1);
                    assert!(o.admitted, "{ctx}: window {k}");
                    tat = new;
                }
            }
            // ...or spread evenly over each `w`.
            let mut tat = None;
            let gap = (w * S).div_ceil(units);
            for i in 0..(units * 20) {
                let (o, new) = crate::store::gcra(tat, now + i * gap, &q, 1);
                assert!(o.admitted, "{ctx}: request {i}");
                tat = new;
            }
        }
    }

    /// `t` is zero on a full quota and never more than one emission interval (the next unit) otherwise.
    #[test]
    fn next_unit_bounds() {
        let q = quota(100, 60, 10);
        assert_eq!(
            until_next_unit(&q, &PolicyOutcome::default()),
            Duration::ZERO
        );
        let o = PolicyOutcome {
            reset: Duration::from_millis(900),
            ..Default::default()
        };
        // 0.9 s from full at 0.6 s per unit: 1.5 units spent, the half-spent one is back in 0.3 s.
        assert_eq!(until_next_unit(&q, &o), Duration::from_millis(300));
        let o = PolicyOutcome {
            reset: Duration::MAX,
            ..Default::default()
        };
        assert!(until_next_unit(&q, &o) <= q.emission_interval());
    }
}
