//! Per-key in-flight caps: at most N requests in flight per key (a client IP, an API key, a tenant), in a bounded
//! map that forgets a key as soon as its last request ends, so idle keys cost no memory.
//!
//! The map is keyed by the full key string with std's randomly seeded SipHash: keys come from clients, so a
//! flooding-resistant hash matters more here than a few nanoseconds.

use crate::RefusalReason;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

pub(crate) struct KeyedLimits {
    max_per_key: usize,
    max_keys: usize,
    map: Mutex<HashMap<Box<str>, usize>>,
}

impl KeyedLimits {
    pub(crate) fn new(max_per_key: usize, max_keys: usize) -> Self {
        KeyedLimits {
            max_per_key,
            max_keys,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, usize>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one of `key`'s slots, or says why not.
    pub(crate) fn acquire(self: &Arc<Self>, key: String) -> Result<KeyPermit, RefusalReason> {
        let key = key.into_boxed_str();
        let mut map = self.lock();
        let tracked = map.len();
        match map.get_mut(&key) {
            Some(n) if *n >= self.max_per_key => return Err(RefusalReason::KeyLimit),
            Some(n) => *n += 1,
            None if tracked >= self.max_keys => return Err(RefusalReason::TooManyKeys),
            None => {
                map.insert(key.clone(), 1);
            }
        }
        drop(map);
        Ok(KeyPermit {
            limits: self.clone(),
            key,
        })
    }

    /// Keys with requests in flight.
    pub(crate) fn keys(&self) -> usize {
        self.lock().len()
    }

    /// Requests in flight for `key`.
    pub(crate) fn in_flight(&self, key: &str) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }
}

impl std::fmt::Debug for KeyedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimits")
            .field("max_per_key", &self.max_per_key)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

/// One of a key's slots; dropping it frees the slot, and the key when it was the last.
pub(crate) struct KeyPermit {
    limits: Arc<KeyedLimits>,
    key: Box<str>,
}

impl Drop for KeyPermit {
    fn drop(&mut self) {
        let mut map = self.limits.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

impl std::fmt::Debug for KeyPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPermit").field("key", &self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_key_and_forgets_idle_ones() {
        let k = Arc::new(KeyedLimits::new(2, 10));
        let a1 = k.acquire("a".into()).unwrap();
        let a2 = k.acquire("a".into()).unwrap();
        assert_eq!(k.acquire("a".into()).unwrap_err(), RefusalReason::KeyLimit);
        let b = k.acquire("b".into()).unwrap();
        assert_eq!(k.in_flight("a"), 2);
        assert_eq!(k.keys(), 2);
        drop(a1);
        let _a3 = k.acquire("a".into()).unwrap();
        drop(a2);
        drop(b);
        assert_eq!(k.keys(), 1, "b forgotten when idle");
        assert_eq!(k.in_flight("b"), 0);
    }

    #[test]
    fn the_map_is_bounded() {
        let k = Arc::new(KeyedLimits::new(1, 3));
        let held: Vec<_> = (0..3).map(|i| k.acquire(i.to_string()).unwrap()).collect();
        assert_eq!(
            k.acquire("new".into()).unwrap_err(),
            RefusalReason::TooManyKeys
        );
        drop(held);
        assert_eq!(k.keys(), 0);
        assert!(k.acquire("new".into()).is_ok());
    }

    #[test]
    fn hostile_keys_are_just_keys() {
        let k = Arc::new(KeyedLimits::new(1, 100));
        let long = "x".repeat(100_000);
        let _p = k.acquire(long.clone()).unwrap();
        assert_eq!(k.acquire(long).unwrap_err(), RefusalReason::KeyLimit);
        let _q = k.acquire(String::new()).unwrap();
        let _r = k.acquire("\u{0}\r\n".into()).unwrap();
        assert_eq!(k.keys(), 3);
    }
}
