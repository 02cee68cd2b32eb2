//! Redis plumbing shared by the Redis stores of the cache and the rate limiter (feature `redis`).
//!
//! - [`Deadline`]: one deadline per request across all of its Redis calls.

mod deadline;

pub use deadline::{Deadline, TimedOut, run};
