//! The [`Store`] operations: one command (or one atomic pipeline) on the shard of the key's slot for `get`,
//! `put` and `remove`; tags, leases and walks in their own modules.

use super::{REDIS_UNDECODABLE, RedisStore, escape_glob, millis, tags};
use crate::{
    entry::StoredValue,
    store::{Lease, Store, StoreError, StoreUsage, codec},
};
use std::time::Duration;

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<StoredValue>, StoreError> {
        let rkey = self.redis_key(key);
        let raw: Option<Vec<u8>> = self
            .query_keyed("get", &rkey, async |c| {
                redis::cmd("GET").arg(&rkey).query_async(c).await
            })
            .await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        let (stored_generations, encoded) = tags::split_generations(&raw);
        let value = stored_generations.as_ref().and(codec::decode(encoded));
        let Some(value) = value else {
            metrics::counter!(REDIS_UNDECODABLE).increment(1);
            tracing::debug!(key = %rkey, len = raw.len(), "undecodable cache value in Redis: a miss");
            return Ok(None);
        };
        let stored_generations = stored_generations.unwrap_or_default();
        if !value.tags().is_empty() || !stored_generations.is_empty() {
            // Served only if none of its tags was invalidated since it was written.
            if stored_generations.len() != value.tags().len() {
                metrics::counter!(REDIS_UNDECODABLE).increment(1);
                return Ok(None);
            }
            let current = self.generations("get", value.tags()).await?;
            if current != stored_generations {
                return Ok(None);
            }
        }
        Ok(Some(value))
    }

    async fn put(&self, key: &str, value: StoredValue, ttl: Duration) -> Result<(), StoreError> {
        let rkey = self.redis_key(key);
        // The generations of its tags as of now: a tag invalidated after this read makes the entry stale.
        let generations = self.generations("put", value.tags()).await?;
        let raw = tags::with_generations(&generations, codec::encode(&value));
        if raw.len() > self.inner.max_entry_bytes {
            // Not stored; the old value must not outlive the new response either.
            let _: u64 = self
                .query_keyed("put", &rkey, async |c| {
                    redis::cmd("DEL").arg(&rkey).query_async(c).await
                })
                .await?;
            return Ok(());
        }
        let ms = millis(ttl);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&rkey)
            .arg(raw)
            .arg("PX")
            .arg(ms)
            .ignore();
        if self.is_cluster() {
            // The value on its shard, then each tag set on its own: different slots, not one transaction.
            self.query_keyed("put", &rkey, async |c| pipe.query_async::<()>(c).await)
                .await?;
            return self.add_to_tag_sets_cluster(key, value.tags(), ms).await;
        }
        pipe.atomic();
        for tag in value.tags() {
            Self::add_to_tag_set(&mut pipe, &self.tag_key(tag), key, ms);
        }
        self.query("put", async |c| pipe.query_async::<()>(c).await)
            .await
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let rkey = self.redis_key(key);
        let n: u64 = self
            .query_keyed("remove", &rkey, async |c| {
                redis::cmd("DEL").arg(&rkey).query_async(c).await
            })
            .await?;
        Ok(n > 0)
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let pattern = format!("{}*", escape_glob(&self.redis_key(prefix)));
        self.unlink_matching("remove_prefix", &pattern).await
    }

    async fn remove_tag(&self, tag: &str) -> Result<u64, StoreError> {
        self.invalidate_tag(tag).await
    }

    /// `SET {prefix}l:{key} token NX PX ttl`: the first server to ask gets the lease.
    async fn lease(&self, key: &str, ttl: Duration) -> Result<Lease, StoreError> {
        self.take_lease(key, ttl).await
    }

    async fn clear(&self) -> Result<(), StoreError> {
        let pattern = format!("{}*", escape_glob(&self.inner.prefix));
        self.unlink_matching("clear", &pattern).await.map(drop)
    }

    async fn usage(&self) -> Result<StoreUsage, StoreError> {
        self.walk_usage().await
    }
}
