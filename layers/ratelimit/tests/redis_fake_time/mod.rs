//! The Redis store on a fake clock, for the behaviour suite on one server and on a cluster: every check runs the
//! script with `now` from a counter that only the harness moves ([`RedisStore::check_at`]), so the suite's
//! decisions are exact whatever the machine's speed. The counter starts at the real time (a realistic `now`); the
//! states' TTLs are relative to it.
#![allow(dead_code, unreachable_pub)]

use crate::common::Harness;
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tower_kit_ratelimit::{RateLimitStore, RedisStore, RedisStoreError, store::CheckRequest};

/// A [`RedisStore`] whose checks read the fake clock.
#[derive(Clone)]
pub struct FakeTimeRedis {
    store: RedisStore,
    now_nanos: Arc<AtomicU64>,
}

impl RateLimitStore for FakeTimeRedis {
    type Error = RedisStoreError;
    type Future = <RedisStore as RateLimitStore>::Future;
    fn check(&self, request: &CheckRequest<'_>) -> Self::Future {
        let decision = self
            .store
            .check_at(self.now_nanos.load(Ordering::SeqCst), request);
        Box::pin(async move {
            // A failure would be decided by the layer's fail-open policy and pass for an admission: fail loudly.
            Ok(decision.await.expect("redis decided"))
        })
    }
}

/// The suite's harness: the store on the fake clock, and what keeps its Redis running (a server or a cluster).
pub struct FakeTime<G> {
    store: FakeTimeRedis,
    _redis: G,
}

impl<G> FakeTime<G> {
    /// `store` on a fake clock starting now; `redis` is dropped with the harness.
    pub fn new(store: RedisStore, redis: G) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Self {
            store: FakeTimeRedis {
                store,
                now_nanos: Arc::new(AtomicU64::new(u64::try_from(now.as_nanos()).unwrap())),
            },
            _redis: redis,
        }
    }

    /// The store itself.
    pub fn redis_store(&self) -> &RedisStore {
        &self.store.store
    }
}

impl<G> Harness for FakeTime<G> {
    type Store = FakeTimeRedis;
    fn store(&self) -> FakeTimeRedis {
        self.store.clone()
    }
    async fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap();
        self.store.now_nanos.fetch_add(by, Ordering::SeqCst);
    }
}
