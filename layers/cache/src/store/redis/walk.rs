//! Walks over the key space (never `KEYS`): every primary of a cluster, or the server, `SCAN`ned in steps; the
//! first step on the request's deadline, each later one with a timeout of its own.

use super::{RedisStore, SCAN_COUNT, escape_glob};
use crate::store::{StoreError, StoreUsage};
use tower_kit_core::redis::Deadline;

impl RedisStore {
    /// The nodes a key-space walk must visit: every primary of a cluster (`Some("host:port")`), or the server.
    pub(super) async fn walk_nodes(
        &self,
        operation: &'static str,
    ) -> Result<Vec<Option<String>>, StoreError> {
        if !self.inner.redis.is_cluster() {
            return Ok(vec![None]);
        }
        let mut primaries = self.inner.redis.primaries();
        if primaries.is_empty() {
            // Not connected yet: one call connects and reads the slot map.
            let _: String = self
                .query(operation, async |c| redis::cmd("PING").query_async(c).await)
                .await?;
            primaries = self.inner.redis.primaries();
        }
        Ok(primaries.into_iter().map(Some).collect())
    }

    /// One `SCAN` step (never `KEYS`): the next cursor (0 at the end) and a batch of keys matching `pattern`.
    async fn scan(
        &self,
        operation: &'static str,
        node: Option<&str>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>), StoreError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        self.query_node(operation, node, cmd).await
    }

    /// Walks the key space with `SCAN`, removing what matches. The first step runs on the request's deadline (a
    /// stalled Redis costs the request no more than its timeout); once Redis has answered, each later step gets a
    /// timeout of its own, so a large key space is never cut short by a deadline meant for one request's lookups.
    pub(super) async fn unlink_matching(
        &self,
        operation: &'static str,
        pattern: &str,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut first = true;
        for node in self.walk_nodes(operation).await? {
            removed += self
                .unlink_matching_on(operation, node.as_deref(), pattern, &mut first)
                .await?;
        }
        Ok(removed)
    }

    async fn unlink_matching_on(
        &self,
        operation: &'static str,
        node: Option<&str>,
        pattern: &str,
        first: &mut bool,
    ) -> Result<u64, StoreError> {
        let (mut cursor, mut removed) = (0, 0);
        let step = async |cursor: u64| -> Result<(u64, u64), StoreError> {
            let (next, keys) = self.scan(operation, node, cursor, pattern).await?;
            let mut n = 0;
            if !keys.is_empty() {
                // Routed by key: on a cluster, the client splits it into one `UNLINK` per slot and adds the counts.
                n = self
                    .query(operation, async |c| {
                        redis::cmd("UNLINK").arg(&keys).query_async(c).await
                    })
                    .await?;
            }
            Ok((next, n))
        };
        loop {
            let (next, n) = if *first {
                *first = false;
                step(cursor).await?
            } else {
                Deadline::new().scope(step(cursor)).await?
            };
            removed += n;
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// The entries and bytes under the value prefix, on every primary (`SCAN` and `STRLEN`): O(keys).
    pub(super) async fn walk_usage(&self) -> Result<StoreUsage, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.redis_key("")));
        let mut usage = StoreUsage::default();
        for node in self.walk_nodes("usage").await? {
            let node = node.as_deref();
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan("usage", node, cursor, &pattern).await?;
                if !keys.is_empty() {
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("STRLEN").arg(k);
                    }
                    let lens: Vec<u64> = self.pipeline_node("usage", node, pipe).await?;
                    for len in lens.into_iter().filter(|l| *l > 0) {
                        usage.entries += 1;
                        usage.bytes += len;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(usage)
    }
}
