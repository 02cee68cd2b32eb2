//! Redis plumbing shared by the Redis stores of the cache and the rate limiter (feature `redis`).
//!
//! - [`RedisClient`]: URL checks, one shared connection made on first use with a connect timeout (a
//!   [`Connection`] over [`redis::aio::ConnectionLike`], so other kinds of connection can join it), and every call
//!   run within the request's [`Deadline`] and through the [`CircuitBreaker`].
//! - Redis Cluster: [`RedisClient::cluster_builder`] takes seed nodes; each call whose keys share one hash tag
//!   ([`RedisClient::run_keyed`], [`slot`]) goes through the circuit breaker of the node serving that slot.
//! - [`Deadline`]: one deadline per request across all of its Redis calls.
//! - [`redis_builder_setters!`](crate::redis_builder_setters) and
//!   [`redis_store_constructors!`](crate::redis_store_constructors): the connection setters of a store's builder
//!   and the constructors and accessors of a store, written once for every Redis store.
//! - [`CircuitBreaker`]: after repeated failures requests stop waiting for Redis; one probe per interval finds it
//!   again.

mod breaker;
mod builder;
mod client;
mod cluster;
mod connection;
mod deadline;
mod store_macros;

pub use breaker::{Admission, CircuitBreaker, Transition};
pub use builder::RedisClientBuilder;
pub use client::RedisClient;
pub use cluster::slot;
pub use connection::{CallError, Connection, Failure, Tls};
pub use deadline::{Deadline, TimedOut, run};
