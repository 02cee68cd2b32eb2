//! Every Redis call of the store: on the shared connection, within the request's deadline, through the circuit
//! breaker (a cluster node's, for a call on one slot), with its failures counted; routed to one node of a cluster
//! for walks; and `PUBLISH` for the tiered store's invalidation messages.

use super::RedisStore;
use crate::store::StoreError;
use redis::{Client, FromRedisValue};
use tower_kit_core::redis::{CallError, Connection, Failure};

impl RedisStore {
    /// Clients for pub/sub: the server's, or one per seed node of a cluster (a message published on any node
    /// reaches the subscribers of all nodes).
    pub(crate) fn pubsub_clients(&self) -> Vec<Client> {
        self.inner.redis.pubsub_clients()
    }

    /// Runs one command or pipeline on the shared connection (connecting first if needed), within the current
    /// request's deadline and through the circuit breaker.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        operation: &'static str,
        run: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.inner.redis.run(run).await;
        self.check(operation, result)
    }

    /// As [`query`](Self::query), for a call whose keys all share the slot of `key`: on a cluster, through the
    /// circuit breaker of the node serving it.
    pub(crate) async fn query_keyed<T: FromRedisValue>(
        &self,
        operation: &'static str,
        key: &str,
        run: impl AsyncFnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let result = self.inner.redis.run_keyed(key.as_bytes(), run).await;
        self.check(operation, result)
    }

    /// Runs `cmd` on one node (`host:port`) of a cluster, or on the server.
    pub(super) async fn query_node<T: FromRedisValue>(
        &self,
        operation: &'static str,
        node: Option<&str>,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let route = node.and_then(by_address);
        self.query(operation, async |c| match (c, route) {
            (Connection::Cluster(c), Some(route)) => {
                let value = c.route_command(cmd, route).await?;
                T::from_redis_value(value).map_err(Into::into)
            }
            (c, _) => cmd.query_async(c).await,
        })
        .await
    }

    /// Runs `pipe` on one node (`host:port`) of a cluster, or on the server.
    pub(super) async fn pipeline_node<T: FromRedisValue>(
        &self,
        operation: &'static str,
        node: Option<&str>,
        pipe: redis::Pipeline,
    ) -> Result<Vec<T>, StoreError> {
        let route = node.and_then(by_address);
        self.query(operation, async |c| match (c, route) {
            (
                Connection::Cluster(c),
                Some(redis::cluster_routing::RoutingInfo::SingleNode(route)),
            ) => {
                let n = pipe.len();
                let values = c.route_pipeline(pipe, 0, n, route).await?;
                values
                    .into_iter()
                    .map(|v| T::from_redis_value(v).map_err(Into::into))
                    .collect()
            }
            (c, _) => pipe.query_async(c).await,
        })
        .await
    }

    /// `PUBLISH`es `message` on `channel`. A message published on any node of a cluster reaches the subscribers
    /// of every node: on a cluster, the primaries are tried in turn until one takes it (a failed node must not
    /// lose invalidations).
    pub(crate) async fn publish(&self, channel: &str, message: &str) -> Result<u64, StoreError> {
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(channel).arg(message);
        let nodes = self.walk_nodes("publish").await?;
        let mut last = None;
        for node in nodes {
            match self
                .query_node("publish", node.as_deref(), publish.clone())
                .await
            {
                Ok(n) => return Ok(n),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| StoreError::new("publish", "no node to publish on")))
    }

    fn check<T>(
        &self,
        operation: &'static str,
        result: Result<T, CallError<redis::RedisError>>,
    ) -> Result<T, StoreError> {
        result.map_err(|e| {
            let kind = match &e {
                CallError::Call(e) if !e.breaks_connection() => "server",
                CallError::TimedOut(_) => "timeout",
                CallError::CircuitOpen => "unavailable",
                _ => "connection",
            };
            metrics::counter!(super::REDIS_ERRORS, "kind" => kind).increment(1);
            StoreError::new(operation, e)
        })
    }
}

/// `host:port` as a route to that node of a cluster.
fn by_address(node: &str) -> Option<redis::cluster_routing::RoutingInfo> {
    let (host, port) = node.rsplit_once(':')?;
    Some(redis::cluster_routing::RoutingInfo::SingleNode(
        redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port: port.parse().ok()?,
        },
    ))
}
