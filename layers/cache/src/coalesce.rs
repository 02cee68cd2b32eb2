//! The coalescing map: concurrent misses for one key make one origin call.
//!
//! The first request for a key becomes the leader and calls the origin; the others wait for its outcome. The
//! leader's [`Leader`] guard publishes exactly one outcome: the stored entry, `Pass` (not storable: go to the
//! origin at once), `Failed` (the origin errored or panicked: go to the origin yourself), or `Abandoned` (the leader
//! was cancelled or its body cut short: look again, one of you becomes the next leader). Dropping the guard
//! publishes `Failed` while panicking and `Abandoned` otherwise, so no waiter is ever left behind.

use crate::entry::Entry;
use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::watch;

/// What the leader's fill came to.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Pending,
    Filled(Arc<Entry>),
    /// The refresh of a stale entry failed and the entry may answer errors (`stale-if-error`): serve it.
    Stale(Arc<Entry>),
    Pass,
    Failed,
    Abandoned,
}

type Flight = Arc<watch::Sender<Outcome>>;

#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Flight>>,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.len())
            .finish()
    }
}

/// The role a request got for a key.
pub(crate) enum Join {
    Leader(Leader),
    Waiter(Waiter),
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = map.get(key) {
            return Join::Waiter(Waiter {
                rx: flight.subscribe(),
            });
        }
        let flight: Flight = Arc::new(watch::channel(Outcome::Pending).0);
        map.insert(key.to_owned(), Arc::clone(&flight));
        Join::Leader(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            flight,
            done: false,
            on_done: None,
        })
    }

    /// Leads `key` if no one does; `None` when a leader is at work (a background revalidation takes the lead
    /// only when it is the first).
    pub(crate) fn try_lead(self: &Arc<Self>, key: &str) -> Option<Leader> {
        match self.join(key) {
            Join::Leader(leader) => Some(leader),
            Join::Waiter(_) => None,
        }
    }

    /// Keys with a leader at work.
    pub(crate) fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The leader's duty: publish one outcome. Dropped without [`finish`](Leader::finish): `Failed` when panicking,
/// `Abandoned` otherwise.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    flight: Flight,
    done: bool,
    /// Runs once the outcome is published (gives back a cross-server lease).
    on_done: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Leader {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    /// Runs `f` once the outcome is published, whatever it is.
    pub(crate) fn on_done(&mut self, f: impl FnOnce() + Send + Sync + 'static) {
        self.on_done = Some(Box::new(f));
    }

    fn publish(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        {
            let mut map = self
                .flights
                .map
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if map
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                map.remove(&self.key);
            }
        }
        self.flight.send_replace(outcome);
        if let Some(f) = self.on_done.take() {
            f();
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            Outcome::Failed
        } else {
            Outcome::Abandoned
        };
        self.publish(outcome);
    }
}

impl fmt::Debug for Leader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

/// A request waiting for a leader.
pub(crate) struct Waiter {
    rx: watch::Receiver<Outcome>,
}

impl Waiter {
    pub(crate) async fn outcome(mut self) -> Outcome {
        match self.rx.wait_for(|o| !matches!(o, Outcome::Pending)).await {
            Ok(o) => o.clone(),
            // The sender lives in the leader's guard, which always publishes before it goes.
            Err(_) => Outcome::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_leader_many_waiters() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!("first is leader")
        };
        let waiters: Vec<_> = (0..10)
            .map(|_| match flights.join("k") {
                Join::Waiter(w) => tokio::spawn(w.outcome()),
                Join::Leader(_) => panic!("second leader"),
            })
            .collect();
        assert_eq!(flights.len(), 1);
        leader.finish(Outcome::Pass);
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Outcome::Pass));
        }
        assert_eq!(flights.len(), 0);
        assert!(
            matches!(flights.join("k"), Join::Leader(_)),
            "a new flight after the end"
        );
    }

    #[tokio::test]
    async fn dropped_leader_abandons_and_panicking_leader_fails() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Join::Waiter(w) = flights.join("k") else {
            panic!()
        };
        drop(leader);
        assert!(matches!(w.outcome().await, Outcome::Abandoned));

        let Join::Leader(leader) = flights.join("k") else {
            panic!()
        };
        let Join::Waiter(w) = flights.join("k") else {
            panic!()
        };
        let result = std::thread::spawn(move || {
            let _guard = leader;
            panic!("origin panicked");
        })
        .join();
        assert!(result.is_err());
        assert!(matches!(w.outcome().await, Outcome::Failed));
        assert_eq!(flights.len(), 0);
    }

    /// Random cancellation of leaders and waiters: every surviving waiter gets an outcome, the map empties.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stress_with_random_cancellation_leaves_no_waiter_behind() {
        let flights = Arc::new(Flights::default());
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut tasks, mut aborted) = (Vec::new(), Vec::new());
        for i in 0..2000u64 {
            let flights = Arc::clone(&flights);
            let key = format!("k{}", next() % 8);
            let cancel_after = next() % 4;
            let work = next() % 3;
            let task = tokio::spawn(async move {
                loop {
                    match flights.join(&key) {
                        Join::Leader(leader) => {
                            tokio::time::sleep(Duration::from_micros(work * 50)).await;
                            match i % 4 {
                                0 => drop(leader),
                                1 => leader.finish(Outcome::Pass),
                                _ => leader.finish(Outcome::Failed),
                            }
                            return;
                        }
                        Join::Waiter(w) => match w.outcome().await {
                            Outcome::Abandoned => continue,
                            Outcome::Pending => panic!("woken while pending"),
                            _ => return,
                        },
                    }
                }
            });
            if cancel_after == 0 {
                // Cancel some tasks at a random point (they may be leaders or waiters).
                tokio::task::yield_now().await;
                task.abort();
                aborted.push(task);
            } else {
                tasks.push(task);
            }
        }
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
            // `abort` only asks: a task running on the other worker drops its leader or waiter when it stops.
            for t in aborted {
                if let Err(e) = t.await
                    && e.is_panic()
                {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), all)
            .await
            .expect("a waiter was left behind");
        assert_eq!(flights.len(), 0, "flights leaked");
    }
}
