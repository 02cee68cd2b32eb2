//! The response headers: `Retry-After`, draft-ietf-httpapi-ratelimit-headers (`RateLimit-Policy`, `RateLimit`, in
//! Structured Fields syntax) and the legacy `X-RateLimit-*` trio.

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

/// `RateLimit-Policy` for these policies.
pub fn policy_header(states: &[PolicyState<'_>]) -> HeaderValue {
    let mut s = String::with_capacity(24 * states.len());
    for (i, p) in states.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "\"{}\";q={};w={}",
            p.name,
            p.quota.limit(),
            p.quota.window_secs()
        );
    }
    value(&s)
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
        push_decimal(&mut out, ceil_secs(p.outcome.reset));
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
            HeaderValue::from(p.quota.limit()),
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
            state("daily", 5, 0, 1200, Some(200)),
        ];
        assert_eq!(
            policy_header(&states),
            r#""burst";q=10;w=1, "daily";q=5;w=1"#
        );
        assert_eq!(
            ratelimit_header(&states),
            r#""burst";r=3;t=1, "daily";r=0;t=2"#
        );
        let h = headers(&states, true, None);
        assert_eq!(h.len(), 5);
        assert_eq!(h[2].1, "5");
        assert_eq!(h[3].1, "0");
        assert_eq!(h[4].1, "2");
        assert!(headers(&[], true, None).is_empty());
        let pre = HeaderValue::from_static("x");
        assert_eq!(headers(&states, false, Some(&pre))[0].1, "x");
        let admitted = [state("a", 10, 3, 0, None), state("b", 10, 1, 0, None)];
        assert_eq!(most_restrictive(&admitted).unwrap().name, "b");
    }
}
