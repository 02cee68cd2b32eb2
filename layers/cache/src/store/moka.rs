use super::{Store, StoreError, StoreUsage};
use crate::entry::StoredValue;
use moka::{Expiry, notification::RemovalCause, sync::Cache};
use std::{
    collections::{HashMap, HashSet},
    fmt,
    future::{Ready, ready},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// The in-process store: a [moka](https://docs.rs/moka) cache weighted by bytes, with a TTL per entry and a tag
/// index.
///
/// Every operation completes without waiting (the futures are ready at once), so a hit costs no task switch.
/// Clones share one cache.
#[derive(Clone)]
pub struct MokaStore {
    cache: Cache<String, Slot>,
    tags: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    max_bytes: u64,
}

#[derive(Clone)]
struct Slot {
    value: StoredValue,
    ttl: Duration,
}

struct PerEntryTtl;

impl Expiry<String, Slot> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Slot,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Slot,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// What moka keeps per entry besides the key and value, in bytes, measured with a counting allocator (moka 0.12,
/// a weighed cache with per-entry expiry): the map's bucket and its share of the bucket array, the `Arc`s around
/// the key and the value entry, the entry's bookkeeping (timestamps, policy weight, deque and timer-wheel nodes),
/// and its share of the frequency sketch; plus the `Slot` around the value. The `memory` test checks it.
const MOKA_ENTRY_OVERHEAD: usize = 400;

/// One tag of an entry in the tag index: the key's copy in the tag's set and its share of the set's table.
const TAG_INDEX_SLOT: usize = 64;

/// The memory one entry takes in the store: moka's bookkeeping, the key, the value and the tag index.
fn slot_weight(key: &str, value: &StoredValue) -> usize {
    let tags = value.tags().len();
    MOKA_ENTRY_OVERHEAD
        + crate::entry::block(key.len())
        + value.weight()
        + tags * (TAG_INDEX_SLOT + crate::entry::block(key.len()))
}

impl MokaStore {
    /// A store holding at most `max_bytes` bytes of entries; least recently and frequently used entries are
    /// evicted first.
    ///
    /// An entry weighs the memory it takes: its key, its value ([`StoredValue::weight`], counted on the compact
    /// copy the store keeps, see [`Entry::compacted`](crate::Entry::compacted)), moka's own bookkeeping per entry
    /// and the tag index. So `max_bytes` bounds the heap the store holds, for large bodies and tiny ones alike.
    pub fn new(max_bytes: u64) -> Self {
        let tags: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
        let index = Arc::clone(&tags);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, slot: &Slot| {
                u32::try_from(slot_weight(key, &slot.value)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .eviction_listener(move |key: Arc<String>, slot: Slot, cause: RemovalCause| {
                // A replaced value's new tags were indexed by `put`; only removals drop index entries.
                if cause == RemovalCause::Replaced {
                    return;
                }
                let tags = slot.value.tags();
                if tags.is_empty() {
                    return;
                }
                let mut index = index.lock().unwrap_or_else(PoisonError::into_inner);
                for tag in tags {
                    if let Some(keys) = index.get_mut(tag) {
                        keys.remove(key.as_str());
                        if keys.is_empty() {
                            index.remove(tag);
                        }
                    }
                }
            })
            .build();
        Self {
            cache,
            tags,
            max_bytes,
        }
    }

    /// The capacity in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MokaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaStore")
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

// The futures are `Ready`: callers that hold a `MokaStore` may rely on every operation finishing at once.
#[allow(refining_impl_trait)]
impl Store for MokaStore {
    fn get(&self, key: &str) -> Ready<Result<Option<StoredValue>, StoreError>> {
        ready(Ok(self.cache.get(key).map(|slot| slot.value)))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<StoredValue>, StoreError>> {
        Some(Ok(self.cache.get(key).map(|slot| slot.value)))
    }

    fn put(&self, key: &str, value: StoredValue, ttl: Duration) -> Ready<Result<(), StoreError>> {
        let tags = value.tags();
        if !tags.is_empty() {
            let mut index = self.index();
            for tag in tags {
                index.entry(tag.clone()).or_default().insert(key.to_owned());
            }
        }
        // The store keeps a compact copy: whatever allocations the given value's `Bytes` pin are let go.
        let value = value.compacted();
        self.cache.insert(key.to_owned(), Slot { value, ttl });
        ready(Ok(()))
    }

    fn remove(&self, key: &str) -> Ready<Result<bool, StoreError>> {
        ready(Ok(self.cache.remove(key).is_some()))
    }

    fn remove_prefix(&self, prefix: &str) -> Ready<Result<u64, StoreError>> {
        let keys: Vec<Arc<String>> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        let removed = keys
            .iter()
            .filter(|k| self.cache.remove(k.as_str()).is_some())
            .count();
        ready(Ok(removed as u64))
    }

    fn remove_tag(&self, tag: &str) -> Ready<Result<u64, StoreError>> {
        let keys = self.index().remove(tag).unwrap_or_default();
        let removed = keys
            .iter()
            .filter(|k| {
                // The key may hold a newer value without this tag: leave that one alone.
                let tagged = self
                    .cache
                    .get(k.as_str())
                    .is_some_and(|slot| slot.value.tags().iter().any(|t| t == tag));
                tagged && self.cache.remove(k.as_str()).is_some()
            })
            .count();
        ready(Ok(removed as u64))
    }

    fn clear(&self) -> Ready<Result<(), StoreError>> {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        self.index().clear();
        ready(Ok(()))
    }

    fn usage(&self) -> Ready<Result<StoreUsage, StoreError>> {
        self.cache.run_pending_tasks();
        ready(Ok(StoreUsage {
            entries: self.cache.entry_count(),
            bytes: self.cache.weighted_size(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moka_store_passes_the_conformance_suite() {
        super::super::conformance::run(MokaStore::new).await;
        super::super::conformance::capacity_is_enforced(MokaStore::new).await;
    }
}
