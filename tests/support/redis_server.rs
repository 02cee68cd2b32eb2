//! A private `redis-server` per test, on a free port, killed when dropped.
//!
//! Shared by every test that needs Redis, through the `tower-kit-test-support` dev-dependency. Tests never share
//! a server, so one test can kill, restart or pause its own without disturbing
//! the others running in parallel. A missing `redis-server` binary fails the test with a message saying what to
//! install: Redis tests never skip silently.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `redis-server` owned by one test.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// Extra `redis-server` arguments (the TLS set-up), kept for restarts.
    extra: Vec<String>,
    tls_port: Option<u16>,
}

/// What to install when there is no `redis-server` to run.
pub const MISSING: &str = "this test needs `redis-server` on PATH (or REDIS_SERVER_BIN): install the Debian \
     package `redis-server` (apt-get install redis-server). Redis tests never skip.";

fn binary() -> PathBuf {
    find_binary(
        "redis-server",
        std::env::var_os("REDIS_SERVER_BIN"),
        std::env::var_os("PATH"),
    )
    .unwrap_or_else(|| panic!("{MISSING}"))
}

/// The program `name` from `explicit` (an environment variable such as `REDIS_SERVER_BIN`, which must name a
/// file) or else the first on `PATH`.
pub(crate) fn find_binary(
    name: &str,
    explicit: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(bin) = explicit {
        return Some(PathBuf::from(bin)).filter(|p| p.is_file());
    }
    std::env::split_paths(&path?)
        .map(|p| p.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// A free port `p` below 55536 whose cluster-bus port `p + 10000` is free too (a cluster node listens on both;
/// an ephemeral port plus 10000 may not even exist).
fn free_cluster_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        let n = seed.wrapping_add(
            NEXT.fetch_add(7, Ordering::Relaxed)
                .wrapping_mul(2_654_435_761),
        );
        let port = 20_000 + (n % 35_000) as u16;
        let both = TcpListener::bind(("127.0.0.1", port))
            .and_then(|a| TcpListener::bind(("127.0.0.1", port + 10_000)).map(|b| (a, b)));
        if both.is_ok() {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) for a cluster node");
}

impl RedisServer {
    /// Starts a fresh server (no persistence) and waits until it answers `PING`.
    pub fn start() -> Self {
        Self::start_with(Vec::new())
    }

    /// As [`start`](Self::start), with extra `redis-server` arguments (kept for restarts).
    pub fn start_with(extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-kit-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch dir for redis-server");
        let mut server = RedisServer {
            port: 0,
            child: None,
            dir,
            extra,
            tls_port: None,
        };
        // A port picked free can be taken before redis binds it: try a few.
        let cluster = server.extra.iter().any(|a| a == "--cluster-enabled");
        for _ in 0..5 {
            server.port = if cluster {
                free_cluster_port()
            } else {
                free_port()
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server that also listens with TLS on [`tls_port`](Self::tls_port), with a self-signed certificate
    /// made on the spot by the `openssl` command (clients must not verify it: `rediss://...#insecure`).
    pub fn start_tls() -> Self {
        let mut server = Self::start();
        let (cert, key) = (server.dir.join("cert.pem"), server.dir.join("key.pem"));
        let made = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("this test needs the `openssl` command (Debian package openssl) to make a certificate");
        assert!(made.success(), "openssl could not make a test certificate");
        let tls_port = free_port();
        server.tls_port = Some(tls_port);
        server.extra = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            cert.to_string_lossy().into_owned(),
            "--tls-key-file".into(),
            key.to_string_lossy().into_owned(),
            "--tls-ca-cert-file".into(),
            cert.to_string_lossy().into_owned(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        server.restart();
        server
    }

    /// The TLS port of a server from [`start_tls`](Self::start_tls).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(&self.extra)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.to_string_lossy()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not run redis-server ({e}). {MISSING}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let _ = status;
                self.child = None;
                return false; // exited: most likely the port was taken
            }
            if self.try_command(&["PING"]).is_some_and(|r| r == "+PONG") {
                // Something answers on the port, but it may be another test's server that took the port first
                // (ours then exits a moment later): only ours, by process id, counts.
                let ours = self.child.as_ref().map(Child::id);
                match self.process_id() {
                    Some(pid) if Some(pid) == ours => return true,
                    Some(_) => {
                        self.kill();
                        return false;
                    }
                    None => {} // not ready to answer INFO yet: try again
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// The scratch directory the server runs in (`--dir`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Whether the process runs (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL): connections drop at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: Redis here keeps nothing on disk).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// Runs a command and returns the first line of the reply (`+OK`, `:1`, `$3`...), panicking on failure.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis command {args:?} failed on port {}", self.port))
    }

    /// `CLIENT PAUSE <ms> ALL`: every client waits, as with an overloaded or stuck server.
    pub fn pause(&self, duration: Duration) {
        let ms = duration.as_millis().to_string();
        assert_eq!(self.command(&["CLIENT", "PAUSE", &ms, "ALL"]), "+OK");
    }

    /// The `process_id` that the server answering on the port reports in `INFO server`.
    fn process_id(&self) -> Option<u32> {
        let mut stream = self.send(&["INFO", "server"])?;
        let header = Self::read_line(&mut stream)?;
        let len: usize = header.strip_prefix('$')?.parse().ok()?;
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).ok()?;
        String::from_utf8(body)
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    fn send(&self, args: &[&str]) -> Option<TcpStream> {
        let mut stream =
            TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{}\r\n", arg.len(), arg));
        }
        stream.write_all(request.as_bytes()).ok()?;
        Some(stream)
    }

    fn read_line(stream: &mut TcpStream) -> Option<String> {
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        String::from_utf8(reply).ok()
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut stream = self.send(args)?;
        Self::read_line(&mut stream)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_reported_with_the_package_to_install() {
        let nowhere = std::env::temp_dir().join("tower-kit-no-such-dir");
        assert_eq!(
            find_binary("redis-server", None, Some(nowhere.clone().into_os_string())),
            None
        );
        assert_eq!(
            find_binary(
                "redis-server",
                Some(nowhere.join("redis-server").into_os_string()),
                None
            ),
            None
        );
        assert!(
            MISSING.contains("apt-get install redis-server"),
            "{MISSING}"
        );
    }
}
