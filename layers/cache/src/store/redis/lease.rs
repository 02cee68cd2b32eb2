//! Cross-server fill leases: `SET {prefix}l:{key} token NX PX ttl` takes one; the release deletes it only if it
//! still holds the taker's token.

use super::{RedisStore, millis};
use crate::store::{Lease, LeaseRelease, StoreError};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tower_kit_core::redis::Deadline;

impl RedisStore {
    /// `SET {prefix}l:{key} token NX PX ttl`: the first server to ask gets the lease.
    pub(super) async fn take_lease(&self, key: &str, ttl: Duration) -> Result<Lease, StoreError> {
        let lkey = self.lease_key(key);
        let token = lease_token();
        let ms = millis(ttl);
        let taken: Option<String> = self
            .query_keyed("lease", &lkey, async |c| {
                redis::cmd("SET")
                    .arg(&lkey)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(c)
                    .await
            })
            .await?;
        if taken.is_none() {
            return Ok(Lease::Held);
        }
        let store = self.clone();
        // The release is the last call of the request that took the lease: on the same deadline.
        let deadline = Deadline::current().unwrap_or_default();
        Ok(Lease::Acquired(LeaseRelease::new(move || {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return; // It lapses by itself.
            };
            rt.spawn(deadline.scope(async move {
                // `EVAL` (the script is tiny): nothing to load, on whichever shard holds the lease.
                let _ = store
                    .query_keyed::<u64>("release", &lkey, async |c| {
                        redis::cmd("EVAL")
                            .arg(RELEASE_SCRIPT)
                            .arg(1)
                            .arg(&lkey)
                            .arg(&token)
                            .query_async(c)
                            .await
                    })
                    .await;
            }));
        })))
    }
}

/// Deletes the lease only if it still holds the releaser's token (it may have lapsed and been taken by another).
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

static LEASES: AtomicU64 = AtomicU64::new(0);

fn lease_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{:x}-{:x}-{:x}",
        std::process::id(),
        nanos,
        LEASES.fetch_add(1, Ordering::Relaxed)
    )
}
