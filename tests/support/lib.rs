//! Test support shared by tower-kit's test suites and benchmarks (unpublished; a dev-dependency only).
//!
//! [`RedisServer`]: a private `redis-server` per test, on a free port, killed when dropped, so one test can kill,
//! restart or pause its own server without disturbing the others. A missing `redis-server` binary fails the test
//! with a message naming the Debian package to install (`redis-server`): Redis tests never skip silently.
//!
//! [`RedisCluster`]: a private Redis Cluster per test (three or more primaries on free ports, optional replicas,
//! `cluster-require-full-coverage no`), made with `redis-cli --cluster create`, whose nodes a test can kill and
//! restart one by one. [`redis_cli`] runs the `redis-cli` it uses (from `REDIS_CLI_BIN` or `PATH`).
//!
//! [`Rng`]: a tiny deterministic generator (xorshift64*) for randomised tests. [`wait_until`]: polls a condition
//! with a deadline, for tests over real servers. [`paused_runtime`]: a current-thread runtime on a paused clock.
//!
//! ```no_run
//! let server = tower_kit_test_support::RedisServer::start();
//! let url = server.url(); // redis://127.0.0.1:<port>/
//! # let _ = url;
//! ```

mod redis_cluster;
mod redis_server;
mod rng;
mod runtime;
mod wait;

pub use redis_cluster::{MISSING_CLI, RedisCluster, redis_cli};
pub use redis_server::RedisServer;
pub use rng::Rng;
pub use runtime::paused_runtime;
pub use wait::wait_until;
