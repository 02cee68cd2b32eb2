//! Redis Cluster plumbing: the slot of a key, and one circuit breaker per node, found through the slot map.

use super::CircuitBreaker;
use redis::{
    Value,
    cluster_async::ClusterConnection,
    cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the first `{` and the next `}`,
/// when not empty) or else of the whole key, modulo 16384. Keys with one hash tag share a slot, so one script may
/// touch them all.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|b| *b == b'}')
                .filter(|close| *close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The least time between two reads of the slot map.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// One circuit breaker per primary, found by slot: a failing node opens its own breaker, and keys in the other
/// nodes' slots are unaffected. The slot map comes from `CLUSTER SLOTS`, read on connect and again (at most every
/// 500 ms) after a failure, so a failover's new primary gets a breaker of its own at once, and every
/// `topology_refresh` while calls succeed, so a primary added by a resharding is found without a failure.
#[derive(Debug)]
pub(crate) struct Nodes {
    threshold: u32,
    retry_interval: Duration,
    topology_refresh: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `(first slot, last slot, node)`, sorted by first slot.
    ranges: Vec<(u16, u16, Arc<str>)>,
    breakers: HashMap<Arc<str>, Arc<CircuitBreaker>>,
    last_refresh: Option<Instant>,
    refreshing: bool,
}

impl Nodes {
    pub(crate) fn new(
        threshold: u32,
        retry_interval: Duration,
        topology_refresh: Duration,
    ) -> Self {
        Self {
            threshold,
            retry_interval,
            topology_refresh,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker of the node serving `slot`, with its address (`None` until the slot map is known).
    pub(crate) fn breaker(&self, slot: u16) -> Option<(Arc<str>, Arc<CircuitBreaker>)> {
        let state = self.lock();
        let i = state.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, node) = state.ranges.get(i.checked_sub(1)?)?;
        if slot > *last {
            return None;
        }
        let breaker = state.breakers.get(node)?;
        Some((Arc::clone(node), Arc::clone(breaker)))
    }

    /// The primaries of the slot map, as `host:port`, sorted.
    pub(crate) fn primaries(&self) -> Vec<String> {
        let state = self.lock();
        let mut primaries: Vec<String> =
            state.ranges.iter().map(|(_, _, n)| n.to_string()).collect();
        primaries.sort();
        primaries.dedup();
        primaries
    }

    /// The nodes whose breaker is open.
    pub(crate) fn open_nodes(&self) -> Vec<String> {
        let state = self.lock();
        let mut open: Vec<String> = state
            .breakers
            .iter()
            .filter(|(_, b)| b.is_open())
            .map(|(n, _)| n.to_string())
            .collect();
        open.sort();
        open
    }

    /// Whether a refresh is due: claims it (the caller then runs [`refresh`](Self::refresh)).
    pub(crate) fn claim_refresh(&self, now: Instant) -> bool {
        let mut state = self.lock();
        if state.refreshing || state.last_refresh.is_some_and(|t| now < t + REFRESH_EVERY) {
            return false;
        }
        state.refreshing = true;
        state.last_refresh = Some(now);
        true
    }

    /// Whether the slot map is older than `topology_refresh` (and no read is running): the periodic read is due.
    /// Before the first read (no connection yet) nothing is due: connecting reads it.
    pub(crate) fn refresh_due(&self, now: Instant) -> bool {
        let state = self.lock();
        !state.refreshing
            && state
                .last_refresh
                .is_some_and(|t| now >= t + self.topology_refresh)
    }

    /// Ends a refresh claimed with [`claim_refresh`](Self::claim_refresh) (done, failed or timed out).
    pub(crate) fn release_refresh(&self) {
        self.lock().refreshing = false;
    }

    /// Reads `CLUSTER SLOTS` from any reachable node and installs the map (keeping the breakers of known nodes).
    pub(crate) async fn refresh(&self, connection: &mut ClusterConnection) {
        let reply = connection
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await;
        let mut state = self.lock();
        let Ok(Value::Array(entries)) = reply else {
            return;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                continue;
            };
            let (Some(Value::Int(first)), Some(Value::Int(last)), Some(Value::Array(primary))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let host = match primary.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                continue;
            };
            let (Ok(first), Ok(last)) = (u16::try_from(*first), u16::try_from(*last)) else {
                continue;
            };
            ranges.push((first, last, Arc::<str>::from(format!("{host}:{port}"))));
        }
        if ranges.is_empty() {
            return;
        }
        ranges.sort_by_key(|(first, _, _)| *first);
        for (_, _, node) in &ranges {
            if !state.breakers.contains_key(node) {
                let breaker = Arc::new(CircuitBreaker::new(self.threshold, self.retry_interval));
                state.breakers.insert(Arc::clone(node), breaker);
            }
        }
        state.ranges = ranges;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_map_is_read_again_every_topology_refresh() {
        let nodes = Nodes::new(3, Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(
            !nodes.refresh_due(t0),
            "nothing is due before the first read"
        );
        assert!(nodes.claim_refresh(t0));
        assert!(
            !nodes.refresh_due(t0 + Duration::from_secs(60)),
            "a read is running"
        );
        nodes.release_refresh();
        assert!(!nodes.refresh_due(t0 + Duration::from_secs(9)));
        assert!(nodes.refresh_due(t0 + Duration::from_secs(10)));
        // A failure may read it sooner, but not twice within 500 ms.
        assert!(!nodes.claim_refresh(t0 + Duration::from_millis(499)));
        assert!(nodes.claim_refresh(t0 + Duration::from_secs(10)));
        nodes.release_refresh();
        assert!(!nodes.refresh_due(t0 + Duration::from_secs(19)));
        assert!(nodes.refresh_due(t0 + Duration::from_secs(20)));
    }

    #[test]
    fn slots_match_the_cluster_specification() {
        // Examples from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }
}
