//! The in-process store: a sharded, bounded hash table of GCRA states.

use super::{
    Check, CheckRequest, Decision, MAX_POLICIES, PolicyId, PolicyOutcome, RateLimitStore, gcra,
};
use crate::Key;
use hashbrown::HashTable;
use std::{
    convert::Infallible,
    fmt,
    hash::BuildHasher,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower_kit_core::ConfigError;
use tower_kit_core::{MonotonicClock, SystemMonotonicClock};

const DEFAULT_MAX_KEYS: usize = 100_000;
const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);
const MAX_SHARDS: usize = 64;

/// Counters of an [`InMemoryStore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// `(policy, key)` states held now.
    pub tracked_keys: usize,
    /// States dropped because the key cap was reached while they still held information (not back to a full quota).
    pub evictions: u64,
    /// Idle states dropped because they were back to a full quota (no information lost).
    pub forgotten: u64,
}

/// The in-process [`RateLimitStore`]: GCRA states in a sharded hash table with a hard cap on the number of states,
/// and no background task.
///
/// - **Idle keys are forgotten** by the requests themselves: when a request adds a state to a shard and the shard
///   has not been swept for [`idle_sweep_interval`](InMemoryStoreBuilder::idle_sweep_interval) (default 10 s), the
///   shard drops every state that is back to a full quota (it carries no information).
/// - **The key cap holds under a flood** ([`max_keys`](InMemoryStoreBuilder::max_keys), default 100 000): a shard
///   at its share of the cap first drops its full-quota states, then, if still full, evicts the eighth of its states
///   that are *closest to a full quota*. A throttled client has the state furthest from full, so a flood of new keys
///   evicts the flood's own keys first and cannot reset a throttled client's quota. Such evictions are counted
///   (`tower_kit.ratelimit.evictions` and [`StoreStats::evictions`]).
///
/// Clones share the same states (an `Arc`), so one store can back several layers and a clone can read
/// [`stats`](Self::stats).
pub struct InMemoryStore<C: MonotonicClock = SystemMonotonicClock> {
    inner: Arc<Inner<C>>,
}

impl<C: MonotonicClock> Clone for InMemoryStore<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: MonotonicClock> fmt::Debug for InMemoryStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("shard_cap", &self.inner.shard_cap)
            .field("stats", &self.stats())
            .finish()
    }
}

struct Inner<C> {
    shards: Box<[Shard]>,
    clock: C,
    /// Random per store: the keys of [`Inner::hash`].
    seeds: [u64; 4],
    shard_cap: usize,
    sweep_interval_ns: u64,
    tracked: AtomicUsize,
    evictions: AtomicU64,
    forgotten: AtomicU64,
}

/// One shard, on its own cache lines so two cores working on two shards do not share a line.
#[repr(align(128))]
struct Shard {
    table: Mutex<Table>,
}

struct Table {
    slots: HashTable<Slot>,
    next_sweep: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    policy: PolicyId,
    key: Key,
    tat: u64,
}

/// Configures an [`InMemoryStore`].
#[derive(Debug)]
pub struct InMemoryStoreBuilder<C = SystemMonotonicClock> {
    max_keys: usize,
    sweep_interval: Duration,
    clock: C,
}

impl InMemoryStore {
    /// A store on the real clock with the defaults (100 000 states at most, idle sweep every 10 s).
    pub fn new() -> Self {
        Self::with_clock(SystemMonotonicClock::new())
    }

    /// A builder to set the key cap, the idle sweep interval and the clock.
    pub fn builder() -> InMemoryStoreBuilder {
        InMemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            clock: SystemMonotonicClock::new(),
        }
    }
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: MonotonicClock> InMemoryStore<C> {
    /// A store with the defaults on `clock` (a [`ManualMonotonicClock`](tower_kit_core::ManualMonotonicClock) in tests).
    pub fn with_clock(clock: C) -> Self {
        Self::build(DEFAULT_MAX_KEYS, DEFAULT_SWEEP_INTERVAL, clock)
    }

    fn build(max_keys: usize, sweep_interval: Duration, clock: C) -> Self {
        // At least 16 states per shard, at most 64 shards.
        let target = (max_keys / 16).clamp(1, MAX_SHARDS);
        let shards = 1usize << target.ilog2();
        let shard_cap = (max_keys / shards).max(1);
        let shards = (0..shards)
            .map(|_| Shard {
                table: Mutex::new(Table {
                    slots: HashTable::new(),
                    next_sweep: 0,
                }),
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                clock,
                seeds: random_seeds(),
                shard_cap,
                sweep_interval_ns: u64::try_from(sweep_interval.as_nanos()).unwrap_or(u64::MAX),
                tracked: AtomicUsize::new(0),
                evictions: AtomicU64::new(0),
                forgotten: AtomicU64::new(0),
            }),
        }
    }

    /// Counters: states held, evictions, idle states forgotten.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            tracked_keys: self.inner.tracked.load(Ordering::Relaxed),
            evictions: self.inner.evictions.load(Ordering::Relaxed),
            forgotten: self.inner.forgotten.load(Ordering::Relaxed),
        }
    }

    /// The most states the store holds (the key cap, rounded down to a multiple of the shard count).
    pub fn capacity(&self) -> usize {
        self.inner.shard_cap * self.inner.shards.len()
    }

    /// Decides one request synchronously (what [`RateLimitStore::check`] does).
    pub fn decide(&self, request: &CheckRequest<'_>) -> Decision {
        self.inner.decide(request)
    }
}

impl<C> InMemoryStoreBuilder<C> {
    /// The most `(policy, key)` states held at once (default 100 000; at least 1). Each costs about 64 bytes.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How often, at most, a shard is swept of idle (full-quota) states when a new state is added (default 10 s).
    #[must_use]
    pub fn idle_sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// The clock (default: [`SystemMonotonicClock`]).
    pub fn clock<C2: MonotonicClock>(self, clock: C2) -> InMemoryStoreBuilder<C2> {
        InMemoryStoreBuilder {
            max_keys: self.max_keys,
            sweep_interval: self.sweep_interval,
            clock,
        }
    }

    /// The store; fails when `max_keys` is 0.
    pub fn build(self) -> Result<InMemoryStore<C>, ConfigError>
    where
        C: MonotonicClock,
    {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1 (got 0)"));
        }
        Ok(InMemoryStore::build(
            self.max_keys,
            self.sweep_interval,
            self.clock,
        ))
    }
}

impl<C: MonotonicClock> RateLimitStore for InMemoryStore<C> {
    type Error = Infallible;
    type Future = std::future::Ready<Result<Decision, Infallible>>;

    #[inline]
    fn check(&self, request: &CheckRequest<'_>) -> Self::Future {
        std::future::ready(Ok(self.inner.decide(request)))
    }

    #[inline]
    fn try_admit_one(&self, check: &Check) -> bool {
        self.inner.try_admit_one(check)
    }
}

/// The 64-bit product of `x` and `y` folded onto itself (high half XOR low half): foldhash's mixing step.
#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Four random seeds for [`Inner::hash`], from foldhash's per-process random source.
fn random_seeds() -> [u64; 4] {
    let state = foldhash::fast::RandomState::default();
    // Odd multipliers keep every bit of the other operand in the product.
    std::array::from_fn(|i| state.hash_one(i) | 1)
}

#[inline]
fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    // A table is consistent between statements (no user code runs under the lock): ignore poisoning.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: MonotonicClock> Inner<C> {
    /// The hash of a state: two folded multiplies (foldhash's mixing step) of the key's words and the policy id,
    /// keyed by the store's random seeds, so clients cannot aim keys at one bucket without knowing them.
    #[inline]
    fn hash(&self, policy: PolicyId, key: &Key) -> u64 {
        let [s0, s1, s2, s3] = self.seeds;
        let (lo, hi, tag) = key.words();
        let h = folded_multiply(lo ^ s0, hi ^ s1);
        folded_multiply(h ^ tag ^ s2, policy.0 ^ s3)
    }

    /// Decides a request of one check at cost 1 if it is admitted (see [`RateLimitStore::try_admit_one`]): the
    /// GCRA step of [`gcra`] with `cost = 1`, without the outcome.
    #[inline]
    fn try_admit_one(&self, check: &Check) -> bool {
        let t = check.quota.emission_interval_nanos();
        let capacity = check.quota.capacity_nanos();
        let hash = self.hash(check.policy, &check.key);
        let now = self.clock.now_nanos();
        let mut table = lock(&self.shards[self.shard_of(hash)].table);
        match table
            .slots
            .find_mut(hash, |s| s.policy == check.policy && s.key == check.key)
        {
            Some(slot) => {
                let new_tat = slot.tat.max(now).saturating_add(t);
                if new_tat - now > capacity {
                    return false;
                }
                slot.tat = new_tat;
                true
            }
            None => {
                let new_tat = now.saturating_add(t);
                if new_tat - now > capacity {
                    return false;
                }
                self.insert(&mut table, hash, check, new_tat, now);
                true
            }
        }
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        // Bits 32.. pick the shard; hashbrown uses the low bits (bucket) and the top 7 (control byte).
        (hash >> 32) as usize & (self.shards.len() - 1)
    }

    fn decide(&self, request: &CheckRequest<'_>) -> Decision {
        let checks = &request.checks[..request.checks.len().min(MAX_POLICIES)];
        let now = self.clock.now_nanos();
        if let [check] = checks {
            let hash = self.hash(check.policy, &check.key);
            let mut table = lock(&self.shards[self.shard_of(hash)].table);
            let outcome = self.decide_one(&mut table, hash, check, now, request.cost);
            return Decision::single(outcome);
        }
        self.decide_many(checks, now, request.cost)
    }

    fn decide_one(
        &self,
        table: &mut Table,
        hash: u64,
        check: &Check,
        now: u64,
        cost: u32,
    ) -> PolicyOutcome {
        let slot = table
            .slots
            .find_mut(hash, |s| s.policy == check.policy && s.key == check.key);
        let (outcome, new_tat) = gcra(slot.as_ref().map(|s| s.tat), now, &check.quota, cost);
        if let Some(new_tat) = new_tat {
            match slot {
                Some(slot) => slot.tat = new_tat,
                None => self.insert(table, hash, check, new_tat, now),
            }
        }
        outcome
    }

    fn decide_many(&self, checks: &[Check], now: u64, cost: u32) -> Decision {
        let mut hashes = [0u64; MAX_POLICIES];
        // Distinct shards in ascending order: locking in one global order cannot deadlock.
        let mut order = [usize::MAX; MAX_POLICIES];
        let mut n_shards = 0;
        for (i, c) in checks.iter().enumerate() {
            hashes[i] = self.hash(c.policy, &c.key);
            let s = self.shard_of(hashes[i]);
            if !order[..n_shards].contains(&s) {
                order[n_shards] = s;
                n_shards += 1;
            }
        }
        order[..n_shards].sort_unstable();
        let mut guards: [Option<MutexGuard<'_, Table>>; MAX_POLICIES] = Default::default();
        for (g, s) in guards.iter_mut().zip(&order[..n_shards]) {
            *g = Some(lock(&self.shards[*s].table));
        }
        let guard_of = |hash: u64| {
            order[..n_shards]
                .iter()
                .position(|s| *s == self.shard_of(hash))
                .unwrap_or(0)
        };

        let mut outcomes = [PolicyOutcome::default(); MAX_POLICIES];
        let mut new_tats = [None; MAX_POLICIES];
        let mut tats = [None; MAX_POLICIES];
        for (i, c) in checks.iter().enumerate() {
            let Some(table) = guards[guard_of(hashes[i])].as_mut() else {
                continue;
            };
            tats[i] = table
                .slots
                .find(hashes[i], |s| s.policy == c.policy && s.key == c.key)
                .map(|s| s.tat);
            (outcomes[i], new_tats[i]) = gcra(tats[i], now, &c.quota, cost);
        }
        let admitted = outcomes[..checks.len()].iter().all(|o| o.admitted);
        if !admitted {
            // Nothing is consumed: the admitting checks report their state as it stays.
            for (i, c) in checks.iter().enumerate() {
                if outcomes[i].admitted {
                    outcomes[i] = gcra(tats[i], now, &c.quota, 0).0;
                }
            }
        }
        if admitted {
            for (i, c) in checks.iter().enumerate() {
                let (Some(new_tat), Some(table)) =
                    (new_tats[i], guards[guard_of(hashes[i])].as_mut())
                else {
                    continue;
                };
                match table
                    .slots
                    .find_mut(hashes[i], |s| s.policy == c.policy && s.key == c.key)
                {
                    Some(slot) => slot.tat = new_tat,
                    None => self.insert(table, hashes[i], c, new_tat, now),
                }
            }
        }
        Decision::from_outcomes(outcomes.into_iter().take(checks.len()))
    }

    fn insert(&self, table: &mut Table, hash: u64, check: &Check, tat: u64, now: u64) {
        if now >= table.next_sweep || table.slots.len() >= self.shard_cap {
            self.sweep(table, now);
        }
        table.slots.insert_unique(
            hash,
            Slot {
                policy: check.policy,
                key: check.key,
                tat,
            },
            |s| self.hash(s.policy, &s.key),
        );
        let tracked = self.tracked.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(crate::metrics::TRACKED_KEYS).set(tracked as f64);
    }

    /// Drops the full-quota states, then, if the shard is still at its cap, evicts the states closest to full.
    fn sweep(&self, table: &mut Table, now: u64) {
        table.next_sweep = now.saturating_add(self.sweep_interval_ns);
        let before = table.slots.len();
        table.slots.retain(|s| s.tat > now);
        let forgotten = before - table.slots.len();
        let mut evicted = 0;
        if table.slots.len() >= self.shard_cap {
            // Evict an eighth of the cap (at least one), smallest `tat` (closest to a full quota) first.
            let k = (self.shard_cap / 8).max(1).min(table.slots.len());
            let mut tats: Vec<u64> = table.slots.iter().map(|s| s.tat).collect();
            let (_, threshold, _) = tats.select_nth_unstable(k - 1);
            let threshold = *threshold;
            let mut at_threshold = k - tats[..k - 1].iter().filter(|t| **t < threshold).count();
            table.slots.retain(|s| {
                if s.tat < threshold {
                    false
                } else if s.tat == threshold && at_threshold > 0 {
                    at_threshold -= 1;
                    false
                } else {
                    true
                }
            });
            evicted = k;
        }
        let removed = forgotten + evicted;
        if removed > 0 {
            let tracked = self.tracked.fetch_sub(removed, Ordering::Relaxed) - removed;
            self.forgotten
                .fetch_add(forgotten as u64, Ordering::Relaxed);
            metrics::gauge!(crate::metrics::TRACKED_KEYS).set(tracked as f64);
        }
        if evicted > 0 {
            self.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
            metrics::counter!(crate::metrics::EVICTIONS).increment(evicted as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Quota;
    use std::num::NonZeroU32;
    use tower_kit_core::ManualMonotonicClock;

    fn quota(limit: u32, burst: u32) -> Quota {
        Quota::per_second(NonZeroU32::new(limit).unwrap())
            .with_burst(NonZeroU32::new(burst).unwrap())
    }

    fn store(max_keys: usize) -> (InMemoryStore<ManualMonotonicClock>, ManualMonotonicClock) {
        let clock = ManualMonotonicClock::new();
        let store = InMemoryStore::builder()
            .max_keys(max_keys)
            .clock(clock.clone())
            .build()
            .unwrap();
        (store, clock)
    }

    fn one(store: &InMemoryStore<ManualMonotonicClock>, key: Key, q: Quota) -> Decision {
        store.decide(&CheckRequest {
            checks: &[Check {
                policy: PolicyId::of("p"),
                key,
                quota: q,
            }],
            cost: 1,
        })
    }

    #[test]
    fn shard_layout() {
        for (max, cap_at_most) in [(1, 1), (10, 10), (100, 100), (100_000, 100_000), (7, 7)] {
            let (s, _) = store(max);
            assert!(
                s.capacity() <= cap_at_most && s.capacity() >= 1,
                "{max}: {}",
                s.capacity()
            );
            assert!(s.inner.shards.len().is_power_of_two());
        }
        assert!(InMemoryStore::builder().max_keys(0).build().is_err());
    }

    #[test]
    fn idle_keys_are_forgotten_by_later_inserts() {
        let (s, clock) = store(1000);
        for i in 0..100 {
            one(&s, Key::from_u128(i), quota(10, 10));
        }
        assert_eq!(s.stats().tracked_keys, 100);
        clock.advance(Duration::from_secs(11));
        // New keys sweep the shards they land in; enough of them touch every shard.
        for i in 1000..1400 {
            one(&s, Key::from_u128(i), quota(1, 1));
        }
        let stats = s.stats();
        assert_eq!(stats.forgotten, 100, "{stats:?}");
        assert_eq!(stats.tracked_keys, 400);
        assert_eq!(stats.evictions, 0);
    }

    #[test]
    fn cap_evicts_closest_to_full_first() {
        let (s, _clock) = store(64);
        let q = quota(1, 5);
        let throttled = Key::from_u128(u128::MAX);
        for _ in 0..5 {
            assert!(one(&s, throttled, q).admitted());
        }
        assert!(!one(&s, throttled, q).admitted());
        for i in 0..10_000 {
            one(&s, Key::from_u128(i), q);
            assert!(s.stats().tracked_keys <= s.capacity());
        }
        assert!(s.stats().evictions > 9_000);
        assert!(!one(&s, throttled, q).admitted(), "throttled key kept");
    }

    proptest::proptest! {
        /// `try_admit_one` admits exactly when `decide` at cost 1 would, consumes the same, and changes nothing when
        /// it declines (the layer then asks `decide`).
        #[test]
        fn try_admit_one_matches_decide(
            steps in proptest::collection::vec((0u64..400_000_000, 0u128..3, 0usize..3), 1..200),
        ) {
            let quotas = [quota(10, 3), quota(1, 1), quota(1000, 1000)];
            let (reference, ref_clock) = store(1000);
            let (fast, fast_clock) = store(1000);
            for (advance, key, q) in steps {
                ref_clock.advance(Duration::from_nanos(advance));
                fast_clock.advance(Duration::from_nanos(advance));
                let check = Check { policy: PolicyId::of("p"), key: Key::from_u128(key), quota: quotas[q] };
                let request = CheckRequest { checks: std::slice::from_ref(&check), cost: 1 };
                let expected = reference.decide(&request);
                let got = if fast.try_admit_one(&check) { None } else { Some(fast.decide(&request)) };
                match got {
                    None => proptest::prop_assert!(expected.admitted()),
                    Some(d) => {
                        proptest::prop_assert!(!expected.admitted());
                        proptest::prop_assert_eq!(d, expected);
                    }
                }
                // Same state afterwards: a zero-cost request reports it.
                let peek = CheckRequest { checks: std::slice::from_ref(&check), cost: 0 };
                proptest::prop_assert_eq!(fast.decide(&peek), reference.decide(&peek));
            }
            proptest::prop_assert_eq!(fast.stats(), reference.stats());
        }
    }

    #[test]
    fn a_refused_request_reports_unconsumed_states() {
        let (s, _clock) = store(1000);
        let key = Key::from_u128(7);
        let checks = [
            Check {
                policy: PolicyId::of("burst"),
                key,
                quota: quota(2, 2),
            },
            Check {
                policy: PolicyId::of("daily"),
                key,
                quota: Quota::per_day(NonZeroU32::new(3).unwrap()),
            },
        ];
        let decide = || {
            s.decide(&CheckRequest {
                checks: &checks,
                cost: 1,
            })
        };
        assert!(decide().admitted());
        assert!(decide().admitted());
        for _ in 0..3 {
            let d = decide();
            assert!(!d.admitted());
            assert_eq!(d.outcomes()[1].remaining, 1);
            assert_eq!(d.outcomes()[1].reset, Duration::from_secs(2 * 28_800));
            assert!(d.outcomes()[1].admitted, "daily alone would admit");
        }
    }
}
