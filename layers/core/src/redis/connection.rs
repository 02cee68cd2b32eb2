//! The connection every call goes through, the TLS setting of URLs, and how calls fail.

use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster_async::ClusterConnection,
};
use std::fmt;

use super::deadline::TimedOut;

/// A connection to Redis, shared by every request of a store (clones are cheap handles on one connection).
///
/// A single server through one multiplexed connection, or a Redis Cluster through the `redis` crate's async
/// cluster connection (which routes each command by its keys' slot, follows `MOVED`/`ASK` redirects and refreshes
/// the topology). Stores are written against [`ConnectionLike`], not against one kind.
#[derive(Clone)]
#[non_exhaustive]
pub enum Connection {
    /// One server, one multiplexed connection: concurrent commands are pipelined on it.
    Single(MultiplexedConnection),
    /// A Redis Cluster (or Valkey cluster): one multiplexed connection per node, commands routed by slot.
    Cluster(ClusterConnection),
}

impl Connection {
    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Connection::Single"),
            Self::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether `rediss://` URLs are accepted ([`RedisClientBuilder::tls`](super::RedisClientBuilder::tls)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// `rediss://` URLs connect over TLS.
    Enabled,
    /// `rediss://` URLs are refused with this reason (which cargo feature would enable them).
    Disabled(&'static str),
}

/// `rediss://` as this build can connect: over TLS with the `redis-tls` feature, refused naming it without.
pub(super) const DEFAULT_TLS: Tls = if cfg!(feature = "redis-tls") {
    Tls::Enabled
} else {
    Tls::Disabled(
        "rediss:// (TLS) needs the `redis-tls` cargo feature (of tower-kit, tower-kit-ratelimit or tower-kit-cache)",
    )
};

/// How a store classifies the errors of its calls, for the connection and the breaker.
pub trait Failure {
    /// Whether the connection is unusable after this error (it is dropped; the next request connects again).
    fn breaks_connection(&self) -> bool;

    /// Whether the error counts as a failure of Redis for the circuit breaker.
    fn counts_for_breaker(&self) -> bool;
}

impl Failure for RedisError {
    fn breaks_connection(&self) -> bool {
        self.is_io_error()
            || self.is_timeout()
            || self.is_connection_dropped()
            || self.is_unrecoverable_error()
            || self.is_connection_refusal()
    }

    /// Only errors of the connection count: a server's error reply (`WRONGTYPE`) says Redis is there.
    fn counts_for_breaker(&self) -> bool {
        self.breaks_connection()
    }
}

/// Why a call through [`RedisClient::run`](super::RedisClient::run) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The call itself failed.
    Call(E),
    /// Connecting failed.
    Connect(RedisError),
    /// No answer within the request's deadline (or none left: see [`TimedOut`]).
    TimedOut(TimedOut),
    /// The circuit breaker is open: Redis failed repeatedly, and this request did not wait for it.
    CircuitOpen,
    /// No tokio runtime to connect on.
    NoRuntime,
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Call(e) => e.fmt(f),
            Self::Connect(_) => f.write_str("could not connect to redis"),
            Self::TimedOut(t) => t.fmt(f),
            Self::CircuitOpen => {
                f.write_str("redis circuit breaker open: not waiting for a failing redis")
            }
            Self::NoRuntime => f.write_str("the redis store needs a tokio runtime"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Call(e) => Some(e),
            Self::Connect(e) => Some(e),
            Self::TimedOut(t) => Some(t),
            _ => None,
        }
    }
}
