//! A private Redis Cluster per test: primaries (and optional replicas) on free ports, each a [`RedisServer`]
//! started with `--cluster-enabled yes --cluster-require-full-coverage no`, joined by `redis-cli --cluster
//! create`, ready once every node reports `cluster_state:ok`. Killed when dropped.
#![allow(dead_code, unreachable_pub)]

use crate::RedisServer;
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// What to install when there is no `redis-cli` to run.
pub const MISSING_CLI: &str = "this test needs `redis-cli` on PATH (or REDIS_CLI_BIN): install the Debian \
     package `redis-tools` (apt-get install redis-server redis-tools). Redis tests never skip.";

/// A local Redis Cluster owned by one test.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    primaries: usize,
}

/// A [`Command`] running `redis-cli`: `REDIS_CLI_BIN` (which must name a file) or else the first on `PATH`. A
/// missing binary fails the test with [`MISSING_CLI`], naming the Debian package to install.
pub fn redis_cli() -> Command {
    let bin = crate::redis_server::find_binary(
        "redis-cli",
        std::env::var_os("REDIS_CLI_BIN"),
        std::env::var_os("PATH"),
    )
    .unwrap_or_else(|| panic!("{MISSING_CLI}"));
    Command::new(bin)
}

/// Runs `redis-cli` with `args`, returning its standard output (`None` if it failed).
fn run_cli(args: &[&str]) -> Option<String> {
    let output = redis_cli()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run redis-cli ({e}). {MISSING_CLI}"));
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// One node: cluster mode, `cluster-require-full-coverage no`, failover after 1 s without an answer.
fn start_node() -> RedisServer {
    RedisServer::start_with(
        [
            "--cluster-enabled",
            "yes",
            "--cluster-require-full-coverage",
            "no",
            "--cluster-node-timeout",
            "1000",
            "--cluster-config-file",
            "nodes.conf",
        ]
        .map(String::from)
        .to_vec(),
    )
}

impl RedisCluster {
    /// `primaries` primaries (at least 3, as Redis requires), no replicas.
    pub fn start(primaries: usize) -> Self {
        Self::start_with_replicas(primaries, 0)
    }

    /// `primaries` primaries, each with `replicas` replicas. Failover after 1 s without an answer
    /// (`cluster-node-timeout 1000`).
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> Self {
        assert!(primaries >= 3, "a Redis Cluster needs at least 3 primaries");
        let total = primaries * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..total).map(|_| start_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let replicas_arg = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas_arg, "--cluster-yes"]);
        // `--cluster create` assigns the first `primaries` addresses as primaries.
        let created = run_cli(&args);
        assert!(created.is_some(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, primaries };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Scales out: starts one more node, joins it (`redis-cli --cluster add-node`) and moves `slots` slots to it
    /// from the other primaries, keys included (`redis-cli --cluster reshard`), then waits until the cluster is ok.
    /// Returns the new primary's index. For a cluster without replicas.
    pub fn add_primary(&mut self, slots: u32) -> usize {
        let node = start_node();
        let existing = format!("127.0.0.1:{}", self.running_port());
        let added = format!("127.0.0.1:{}", node.port());
        let id = self
            .cli(node.port(), &["CLUSTER", "MYID"])
            .map(|id| id.trim().to_owned())
            .unwrap_or_else(|| panic!("CLUSTER MYID failed on the new node"));
        assert!(
            run_cli(&["--cluster", "add-node", &added, &existing]).is_some(),
            "redis-cli --cluster add-node failed"
        );
        self.nodes.push(node);
        self.primaries += 1;
        self.wait_ok(Duration::from_secs(30));
        let slots = slots.to_string();
        let moved = run_cli(&[
            "--cluster",
            "reshard",
            &existing,
            "--cluster-from",
            "all",
            "--cluster-to",
            &id,
            "--cluster-slots",
            &slots,
            "--cluster-yes",
        ]);
        assert!(moved.is_some(), "redis-cli --cluster reshard failed");
        self.wait_ok(Duration::from_secs(30));
        self.nodes.len() - 1
    }

    /// Waits until every running node reports `cluster_state:ok` and knows every other node, and every running
    /// replica is in sync with a primary.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let total = self.nodes.len();
        loop {
            let ok = self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                let info = self.cli(n.port(), &["CLUSTER", "INFO"]).unwrap_or_default();
                let nodes = self
                    .cli(n.port(), &["CLUSTER", "NODES"])
                    .unwrap_or_default();
                let replication = self
                    .cli(n.port(), &["INFO", "replication"])
                    .unwrap_or_default();
                // A replica that never synced with its primary would not take over from it.
                let synced = !replication.contains("role:slave")
                    || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_assigned:16384")
                    && nodes.lines().filter(|l| !l.contains("handshake")).count() == total
                    && synced
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the local Redis Cluster did not reach cluster_state:ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let port = port.to_string();
        let mut all = vec!["-p", &port];
        all.extend_from_slice(args);
        run_cli(&all)
    }

    /// The seed URLs to give a client: every primary's `redis://127.0.0.1:<port>/`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node at `index` (primaries first, in creation order).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The keys matching `pattern` on every running node (`redis-cli --scan`; a replica lists its primary's keys
    /// again).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let port = node.port().to_string();
            let out = run_cli(&["-p", &port, "--scan", "--pattern", pattern])
                .unwrap_or_else(|| panic!("redis-cli --scan failed on port {port}"));
            keys.extend(out.lines().map(str::to_owned));
        }
        keys
    }

    /// The number of primaries it was created with.
    pub fn primaries(&self) -> usize {
        self.primaries
    }

    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        let port = self.running_port();
        self.cli(port, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key} failed"))
    }

    fn running_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .map(RedisServer::port)
            .unwrap_or_else(|| panic!("no node of the cluster runs"))
    }

    /// The index of the node that serves `key` as primary now (by `CLUSTER NODES` from a running node).
    pub fn primary_of(&self, key: &str) -> usize {
        self.try_primary_of(key)
            .unwrap_or_else(|| panic!("no primary serves the slot of {key:?}"))
    }

    /// The index of the node that serves `key` as primary now, if one does (none while a failover is under way).
    pub fn try_primary_of(&self, key: &str) -> Option<usize> {
        let slot = self.slot(key);
        let nodes = self
            .cli(self.running_port(), &["CLUSTER", "NODES"])
            .unwrap_or_default();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.split('-');
                match (
                    ends.next().and_then(|a| a.parse::<u16>().ok()),
                    ends.next().map(|b| b.parse::<u16>().ok()),
                ) {
                    (Some(a), None) => a == slot,
                    (Some(a), Some(Some(b))) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: Option<u16> = fields[1]
                    .split(['@', ','])
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok());
                if let Some(i) = self.nodes.iter().position(|n| Some(n.port()) == port) {
                    return Some(i);
                }
            }
        }
        None
    }

    /// A key (made from `prefix` and a counter) whose slot is served by the primary at `index`.
    pub fn key_on(&self, index: usize, prefix: &str) -> String {
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| self.primary_of(k) == index)
            .unwrap_or_else(|| panic!("no key with prefix {prefix:?} lands on node {index}"))
    }

    /// Kills the node at `index` (SIGKILL, as in a crash).
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts the node at `index` again, on its port, with its cluster state (`nodes.conf`), then waits until the
    /// cluster is ok again.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].restart();
        self.wait_ok(Duration::from_secs(30));
    }

    /// Waits until the primary of `key` is not the node at `index` (a replica took over), then until the cluster
    /// is ok.
    pub fn wait_failover(&self, index: usize, key: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.try_primary_of(key).is_none_or(|i| i == index) {
            assert!(
                Instant::now() < deadline,
                "no replica took over from node {index} within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ok(within);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cli_is_reported_with_the_package_to_install() {
        let nowhere = std::env::temp_dir().join("tower-kit-no-such-dir");
        assert_eq!(
            crate::redis_server::find_binary("redis-cli", None, Some(nowhere.into_os_string())),
            None
        );
        assert!(MISSING_CLI.contains("`redis-tools`"), "{MISSING_CLI}");
    }
}
