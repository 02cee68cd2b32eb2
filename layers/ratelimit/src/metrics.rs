//! Metric names and pre-built metric keys (so counting a request allocates nothing).

use metrics::{Key, Label, Level, Metadata};

/// Counter: requests decided, by `policy` and `outcome` (`admitted`, `refused`, `dry_run_refused`). An admitted
/// request counts once in each policy that applied; a refused one once in each policy that refused it.
pub const REQUESTS: &str = "tower_kit.ratelimit.requests";
/// Counter: requests that skipped every policy because an exemption matched.
pub const EXEMPT: &str = "tower_kit.ratelimit.exempt";
/// Gauge: `(policy, key)` states held by the in-process store.
pub const TRACKED_KEYS: &str = "tower_kit.ratelimit.keys";
/// Counter: states evicted by the key cap while still holding information.
pub const EVICTIONS: &str = "tower_kit.ratelimit.evictions";
/// Counter: requests whose store failed (the failure policy decided them).
pub const STORE_ERRORS: &str = "tower_kit.ratelimit.store_errors";
/// Counter: requests on which a peer-address key (`peer_ip`, `client_ip`) found no peer address, because the server
/// records none (axum served without `into_make_service_with_connect_info`) or this crate cannot read the one it
/// records (built without its `axum` or `tonic` feature). Without a fallback key such requests share the one
/// `unknown` bucket, so any non-zero value is a deployment mistake to fix. Counted once per request.
pub const MISSING_CLIENT_ADDRESS: &str = "tower_kit.ratelimit.missing_client_address";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The counter keys of one policy.
#[derive(Debug)]
pub(crate) struct PolicyMetrics {
    pub(crate) admitted: Key,
    pub(crate) refused: Key,
    pub(crate) dry_run_refused: Key,
}

impl PolicyMetrics {
    pub(crate) fn new(policy: &str) -> Self {
        let key = |outcome: &'static str| {
            Key::from_parts(
                REQUESTS,
                vec![
                    Label::new("policy", policy.to_owned()),
                    Label::from_static_parts("outcome", outcome),
                ],
            )
        };
        Self {
            admitted: key("admitted"),
            refused: key("refused"),
            dry_run_refused: key("dry_run_refused"),
        }
    }
}

/// Adds one to a counter through whatever recorder is current (a thread-local one in tests).
#[inline]
pub(crate) fn increment(key: &Key) {
    metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(1));
}

/// Adds one to an unlabelled counter.
#[inline]
pub(crate) fn with_counter(name: &'static str) {
    metrics::counter!(name).increment(1);
}
