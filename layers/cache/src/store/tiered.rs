use super::{Lease, MokaStore, RedisStore, Store, StoreError, StoreUsage};
use crate::entry::StoredValue;
use futures_util::StreamExt;
use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

const DEFAULT_L1_TTL: Duration = Duration::from_secs(60);

/// Counter: L1 flushes after the invalidation channel (re)connected, since messages may have been missed.
pub const L1_FLUSHES: &str = "tower_kit.cache.tiered.l1_flushes";

/// A two-level [`Store`] (feature `redis`): an in-process [`MokaStore`] (L1) in front of a shared [`RedisStore`]
/// (L2).
///
/// - **Reads**: an L1 hit is served without waiting ([`get_now`](Store::get_now)); on an L1 miss the L2 is asked
///   and a hit there is promoted to L1 (for at most [`l1_ttl`](TieredStore::with_l1_ttl)).
/// - **Writes** go to both, so warm-up fills both.
/// - **Invalidation** removes from both, then is broadcast on the Redis channel `{prefix}invalidate`: every
///   tiered store on the same Redis (and prefix) drops the key, prefix or tag from its L1. When the subscription
///   is (re)established after a failure, the store flushes its L1, which may have missed messages meanwhile.
/// - **Redis down or slow**: L2 operations fail within the Redis store's timeout (or at once while it is backing
///   off); L1 hits keep being served, L1 misses go to the origin, and nothing reaches clients as an error.
///
/// Clones share both levels and the subscription, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct TieredStore {
    l1: MokaStore,
    l2: RedisStore,
    l1_ttl: Duration,
    channel: Arc<str>,
    subscription: Arc<Subscription>,
}

struct Subscription {
    task: Option<tokio::task::AbortHandle>,
    /// How many times the subscription was established.
    connected: Arc<AtomicU64>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for TieredStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredStore")
            .field("l1", &self.l1)
            .field("l2", &self.l2)
            .field("l1_ttl", &self.l1_ttl)
            .finish()
    }
}

impl TieredStore {
    /// `l1` in front of `l2`, and a task that listens for invalidations from other servers (started when a tokio
    /// runtime is running; without one, nothing is broadcast to this store).
    pub fn new(l1: MokaStore, l2: RedisStore) -> Self {
        let channel: Arc<str> = format!("{}invalidate", l2.prefix()).into();
        let connected = Arc::new(AtomicU64::new(0));
        let task = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(listen(
                l1.clone(),
                l2.clone(),
                Arc::clone(&channel),
                Arc::clone(&connected),
            ))
            .abort_handle()
        });
        Self {
            l1,
            l2,
            l1_ttl: DEFAULT_L1_TTL,
            channel,
            subscription: Arc::new(Subscription { task, connected }),
        }
    }

    /// The longest an entry stays in L1 (default 60 s): bounds how long a server may serve an entry invalidated
    /// elsewhere while it could not hear the broadcast.
    #[must_use]
    pub fn with_l1_ttl(mut self, ttl: Duration) -> Self {
        self.l1_ttl = ttl;
        self
    }

    /// The first level.
    pub fn l1(&self) -> &MokaStore {
        &self.l1
    }

    /// The second level.
    pub fn l2(&self) -> &RedisStore {
        &self.l2
    }

    /// How many times the invalidation subscription was established (0: not yet).
    pub fn subscriptions(&self) -> u64 {
        self.subscription.connected.load(Ordering::Relaxed)
    }

    /// Tells the other servers' L1s; a failure only means they may serve the old entry up to their L1 TTL.
    async fn broadcast(&self, message: String) {
        let _ = self.l2.publish(&self.channel, &message).await;
    }
}

/// Applies one invalidation message (`k`ey, `p`refix, `t`ag, `c`lear) to `l1`.
async fn apply(l1: &MokaStore, message: &str) {
    let (kind, arg) = message.split_at(message.len().min(1));
    let _ = match kind {
        "k" => l1.remove(arg).await.map(drop),
        "p" => l1.remove_prefix(arg).await.map(drop),
        "t" => l1.remove_tag(arg).await.map(drop),
        "c" => l1.clear().await,
        _ => Ok(()),
    };
}

async fn listen(l1: MokaStore, l2: RedisStore, channel: Arc<str>, connected: Arc<AtomicU64>) {
    let retry = Duration::from_millis(200);
    let clients = l2.pubsub_clients();
    let mut next = 0usize;
    loop {
        // On a cluster, any node will do: try the seeds in turn.
        let Some(client) = clients.get(next % clients.len().max(1)).cloned() else {
            return;
        };
        next = next.wrapping_add(1);
        let subscribed = async {
            let mut pubsub =
                tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
                    .await
                    .ok()?
                    .ok()?;
            tokio::time::timeout(Duration::from_secs(1), pubsub.subscribe(&*channel))
                .await
                .ok()?
                .ok()?;
            Some(pubsub)
        }
        .await;
        let Some(pubsub) = subscribed else {
            tokio::time::sleep(retry).await;
            continue;
        };
        if connected.fetch_add(1, Ordering::Relaxed) > 0 {
            // Messages sent while we were away are lost: whatever L1 holds may be stale.
            metrics::counter!(L1_FLUSHES).increment(1);
            let _ = l1.clear().await;
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            if let Ok(text) = msg.get_payload::<String>() {
                apply(&l1, &text).await;
            }
        }
        tokio::time::sleep(retry).await;
    }
}

impl Store for TieredStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        if let Ok(Some(v)) = self.l1.get(key).await {
            return Ok(Some(v));
        }
        let value = self.l2.get(key).await?;
        if let Some(v) = &value {
            let _ = self.l1.put(key, v.clone(), self.l1_ttl).await;
        }
        Ok(value)
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<StoredValue>, StoreError>> {
        match self.l1.get_now(key) {
            Some(Ok(Some(v))) => Some(Ok(Some(v))),
            _ => None,
        }
    }

    async fn put(&self, key: &str, value: StoredValue, ttl: Duration) -> Result<(), StoreError> {
        // L2 first: the L1 copy's lifetime then starts after L2's, so L1 never expires while L2 still holds the
        // value (a read in that gap would promote it back into L1 for a whole `l1_ttl`).
        let stored = self.l2.put(key, value.clone(), ttl).await;
        let _ = self.l1.put(key, value, ttl.min(self.l1_ttl)).await;
        stored
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let local = self.l1.remove(key).await.unwrap_or(false);
        let shared = self.l2.remove(key).await;
        self.broadcast(format!("k{key}")).await;
        Ok(shared? || local)
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let local = self.l1.remove_prefix(prefix).await.unwrap_or(0);
        let shared = self.l2.remove_prefix(prefix).await;
        self.broadcast(format!("p{prefix}")).await;
        Ok(shared?.max(local))
    }

    async fn remove_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let local = self.l1.remove_tag(tag).await.unwrap_or(0);
        let shared = self.l2.remove_tag(tag).await;
        self.broadcast(format!("t{tag}")).await;
        Ok(shared?.max(local))
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let _ = self.l1.clear().await;
        let shared = self.l2.clear().await;
        self.broadcast("c".to_owned()).await;
        shared
    }

    async fn usage(&self) -> Result<StoreUsage, StoreError> {
        self.l2.usage().await
    }

    async fn lease(&self, key: &str, ttl: Duration) -> Result<Lease, StoreError> {
        self.l2.lease(key, ttl).await
    }
}
