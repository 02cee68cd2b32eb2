//! `abuse`: hostile and careless clients against a server on this machine, one scenario per run, each bounded in
//! count and time. `examples/loadgen/abuse.sh` starts the demo server and cache-proxy and runs them all.
//!
//! ```text
//! abuse --addr 127.0.0.1:3000 --pid 1234 silent --count 1100 --seconds 8
//! ```
//!
//! Every scenario prints one line: what it sent, what came back (statuses, connections the server closed and
//! when), and, with `--pid`, the server's resident memory before and after.

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
};

/// Hostile-client scenarios against a server on this machine (loopback only).
#[derive(Debug, Parser)]
struct Args {
    /// The server (loopback).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// The server's process id: its resident memory (VmRSS) is printed before and after.
    #[arg(long)]
    pid: Option<u32>,
    /// What to do.
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Opens `count` connections that never send a byte, probes `GET /health` on a new connection while they are
    /// held, and reports how many the server closed within `seconds`.
    Silent {
        #[arg(long, default_value_t = 500)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
    },
    /// Slowloris: `count` connections that trickle a request head one byte per `gap_ms`.
    Slowloris {
        #[arg(long, default_value_t = 500)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1000)]
        gap_ms: u64,
    },
    /// `count` keep-alive connections that send one request each and then stay silent.
    Idle {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long, default_value = "/health")]
        path: String,
    },
    /// A careless crawler: distinct URLs (`prefix` + a counter) for `seconds` over `connections` keep-alive
    /// connections.
    Urls {
        #[arg(long, default_value = "/api/items?x=")]
        prefix: String,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 1_000_000)]
        max_requests: u64,
        /// Sends `Accept-Encoding: gzip`.
        #[arg(long)]
        gzip: bool,
    },
    /// `count` requests, each with a client-address header (`header`) whose value changes every time
    /// (documentation-range addresses, never contacted); reports how many were admitted.
    Spoof {
        #[arg(long, default_value_t = 30)]
        count: usize,
        #[arg(long, default_value = "forwarded")]
        header: String,
        #[arg(long, default_value = "/api/items/1")]
        path: String,
    },
    /// `count` server-sent event streams (gzip) held for `seconds`, `rounds` times; memory after each round.
    Sse {
        #[arg(long, default_value_t = 2000)]
        count: usize,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value = "/api/events")]
        path: String,
    },
    /// A burst of `count` requests, `concurrency` at a time, on one path (e.g. `/api/slow`): statuses and how many
    /// refusals carried `Retry-After`.
    Burst {
        #[arg(long, default_value = "/api/slow")]
        path: String,
        #[arg(long, default_value_t = 400)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
    },
    /// Times one request (e.g. through cache-proxy to a hung origin): status or transport error, and how long.
    Once {
        #[arg(long, default_value = "/")]
        path: String,
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
    },
    /// Prints the `/metrics` lines whose name contains one of `names` (in-flight and active gauges by default).
    Gauges {
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "in_flight,active,queued,open_connections"
        )]
        names: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        return Err("abuse only targets servers on this machine (a loopback address)".into());
    }
    let before = rss_kib(args.pid);
    let line = match args.scenario {
        Scenario::Silent { count, seconds } => silent(args.addr, count, secs(seconds), None).await,
        Scenario::Slowloris {
            count,
            seconds,
            gap_ms,
        } => {
            silent(
                args.addr,
                count,
                secs(seconds),
                Some(Duration::from_millis(gap_ms)),
            )
            .await
        }
        Scenario::Idle {
            count,
            seconds,
            path,
        } => idle(args.addr, count, secs(seconds), &path).await,
        Scenario::Urls {
            prefix,
            seconds,
            connections,
            max_requests,
            gzip,
        } => {
            urls(
                args.addr,
                &prefix,
                secs(seconds),
                connections,
                max_requests,
                gzip,
            )
            .await
        }
        Scenario::Spoof {
            count,
            header,
            path,
        } => spoof(args.addr, count, &header, &path).await,
        Scenario::Sse {
            count,
            seconds,
            rounds,
            path,
        } => sse(args.addr, count, secs(seconds), rounds, &path, args.pid).await,
        Scenario::Burst {
            path,
            count,
            concurrency,
        } => burst(args.addr, &path, count, concurrency).await,
        Scenario::Once { path, seconds } => once(args.addr, &path, secs(seconds)).await,
        Scenario::Gauges { names } => gauges(args.addr, &names).await,
    };
    let after = rss_kib(args.pid);
    match (before, after) {
        (Some(b), Some(a)) => println!("{line}  rss {} -> {} MB", b / 1024, a / 1024),
        _ => println!("{line}"),
    }
    Ok(())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.1, 600.0))
}

/// The resident set of `pid` in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A one-shot `GET` over a fresh connection (`Connection: close`); the status, or `None` on a transport error.
async fn get(addr: SocketAddr, path: &str, extra: &str) -> (Option<u16>, String) {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let head =
            format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text))
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Some((status, text))) => (Some(status), text),
        _ => (None, String::new()),
    }
}

/// Waits until the server closes `stream` (EOF or reset) or `until`; the time it closed, if it did.
async fn closed_by_server(stream: &mut TcpStream, until: Instant) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(until.into(), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

fn median(mut v: Vec<Duration>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    format!("{:.1}s", v[v.len() / 2].as_secs_f64())
}

async fn silent(
    addr: SocketAddr,
    count: usize,
    hold: Duration,
    trickle: Option<Duration>,
) -> String {
    let start = Instant::now();
    let until = start + hold;
    let mut set = JoinSet::new();
    let opened = Arc::new(AtomicU64::new(0));
    for _ in 0..count {
        let opened = Arc::clone(&opened);
        set.spawn(async move {
            let Ok(Ok(mut stream)) =
                tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
            else {
                return None;
            };
            opened.fetch_add(1, Ordering::Relaxed);
            match trickle {
                None => closed_by_server(&mut stream, until).await,
                Some(gap) => {
                    let head = b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ";
                    let connected = Instant::now();
                    for byte in head.iter().chain(std::iter::repeat(&b'a')) {
                        if Instant::now() >= until {
                            return None;
                        }
                        if stream.write_all(&[*byte]).await.is_err() {
                            return Some(connected.elapsed());
                        }
                        let next = (Instant::now() + gap).min(until);
                        if let Some(t) = closed_by_server(&mut stream, next).await {
                            return Some(connected.elapsed().max(t));
                        }
                    }
                    None
                }
            }
        });
    }
    // While they are held: is the server still answering on a new connection?
    tokio::time::sleep(Duration::from_millis(500).min(hold / 4)).await;
    let probe_start = Instant::now();
    let (probe, _) = get(addr, "/health", "").await;
    let probe_ms = probe_start.elapsed().as_secs_f64() * 1000.0;
    let mut closed = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Some(t)) = r {
            closed.push(t);
        }
    }
    format!(
        "{}: {count} connections ({} opened), {} closed by the server within {:.0}s (median {}); /health while held: {} in {probe_ms:.0} ms",
        if trickle.is_some() {
            "slowloris"
        } else {
            "silent"
        },
        opened.load(Ordering::Relaxed),
        closed.len(),
        hold.as_secs_f64(),
        median(closed),
        probe.map_or("transport error".into(), |s| s.to_string()),
    )
}

async fn idle(addr: SocketAddr, count: usize, hold: Duration, path: &str) -> String {
    let until = Instant::now() + hold;
    let mut set = JoinSet::new();
    for _ in 0..count {
        let path = path.to_owned();
        set.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.ok()?;
            // The answer arrives; then the connection idles until the server closes it (or `until`).
            let sent = Instant::now();
            let mut buf = [0u8; 16 * 1024];
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            closed_by_server(&mut stream, until)
                .await
                .map(|_| sent.elapsed())
        });
    }
    let mut closed = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Some(t)) = r {
            closed.push(t);
        }
    }
    format!(
        "idle keep-alive: {count} connections, {} closed by the server within {:.0}s (median {})",
        closed.len(),
        hold.as_secs_f64(),
        median(closed)
    )
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn urls(
    addr: SocketAddr,
    prefix: &str,
    run: Duration,
    connections: usize,
    max_requests: u64,
    gzip: bool,
) -> String {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run;
    let mut set = JoinSet::new();
    for _ in 0..connections.max(1) {
        let next = Arc::clone(&next);
        let prefix = prefix.to_owned();
        set.spawn(async move {
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            let mut sender: Option<Sender> = None;
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= max_requests {
                    break;
                }
                if sender.as_ref().is_none_or(|s| s.is_closed()) {
                    sender = connect(addr).await;
                }
                let Some(s) = sender.as_mut() else {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut req = Request::get(format!("{prefix}{n}")).header("host", addr.to_string());
                if gzip {
                    req = req.header("accept-encoding", "gzip");
                }
                let Ok(req) = req.body(Empty::new()) else {
                    errors += 1;
                    continue;
                };
                let answer = async {
                    s.ready().await.ok()?;
                    let response = s.send_request(req).await.ok()?;
                    let status = response.status().as_u16();
                    response.into_body().collect().await.ok()?;
                    Some(status)
                };
                match tokio::time::timeout(Duration::from_secs(30), answer).await {
                    Ok(Some(status)) => *statuses.entry(status).or_default() += 1,
                    _ => {
                        errors += 1;
                        sender = None;
                    }
                }
            }
            (statuses, errors)
        });
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors = 0;
    while let Some(r) = set.join_next().await {
        if let Ok((s, e)) = r {
            errors += e;
            for (k, v) in s {
                *statuses.entry(k).or_default() += v;
            }
        }
    }
    let sent: u64 = statuses.values().sum();
    format!(
        "distinct URLs: {sent} answered in {:.0}s{}, statuses {statuses:?}, {errors} transport errors",
        run.as_secs_f64(),
        if gzip { " (gzip)" } else { "" }
    )
}

async fn spoof(addr: SocketAddr, count: usize, header: &str, path: &str) -> String {
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..count {
        // 198.51.100.0/24 and 203.0.113.0/24 are documentation ranges: only ever written into a header.
        let ip = format!("{}.{}", ["198.51.100", "203.0.113"][i % 2], i % 250 + 1);
        let value = match header.to_ascii_lowercase().as_str() {
            "forwarded" => format!("for={ip}"),
            _ => ip,
        };
        let (status, _) = get(addr, path, &format!("{header}: {value}\r\n")).await;
        *statuses.entry(status.unwrap_or(0)).or_default() += 1;
    }
    format!(
        "spoofed `{header}` on {count} requests to {path}: statuses {statuses:?} (0 = transport error)"
    )
}

async fn sse(
    addr: SocketAddr,
    count: usize,
    hold: Duration,
    rounds: usize,
    path: &str,
    pid: Option<u32>,
) -> String {
    let mut out = Vec::new();
    for round in 1..=rounds {
        let until = Instant::now() + hold;
        let mut set = JoinSet::new();
        for _ in 0..count {
            let path = path.to_owned();
            set.spawn(async move {
                let mut stream = TcpStream::connect(addr).await.ok()?;
                let head = format!(
                    "GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\naccept-encoding: gzip\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.ok()?;
                let mut buf = [0u8; 1024];
                let n = tokio::time::timeout_at(until.into(), stream.read(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
                let status: u16 = String::from_utf8_lossy(&buf[..n])
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                // Hold the stream open (reading what comes) until the round ends.
                let _ = closed_by_server(&mut stream, until).await;
                Some(status)
            });
        }
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        let mut held_rss = None;
        tokio::time::sleep(hold.mul_f64(0.8)).await;
        if let Some(kib) = rss_kib(pid) {
            held_rss = Some(kib / 1024);
        }
        while let Some(r) = set.join_next().await {
            *statuses.entry(r.ok().flatten().unwrap_or(0)).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        out.push(format!(
            "round {round}: statuses {statuses:?}, rss held {} MB, after {} MB",
            held_rss.map_or("-".into(), |m| m.to_string()),
            rss_kib(pid).map_or("-".into(), |k| (k / 1024).to_string())
        ));
    }
    format!("sse x{count}: {}", out.join("; "))
}

async fn burst(addr: SocketAddr, path: &str, count: usize, concurrency: usize) -> String {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let sem = Arc::clone(&sem);
        let path = path.to_owned();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.ok()?;
            let (status, text) = get(addr, &path, "").await;
            let retry_after = text
                .lines()
                .take_while(|l| !l.is_empty())
                .any(|l| l.to_ascii_lowercase().starts_with("retry-after:"));
            Some((status.unwrap_or(0), retry_after))
        });
    }
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut refused, mut with_retry_after) = (0, 0);
    while let Some(r) = set.join_next().await {
        if let Ok(Some((status, retry))) = r {
            *statuses.entry(status).or_default() += 1;
            if status == 429 || status == 503 {
                refused += 1;
                with_retry_after += u64::from(retry);
            }
        }
    }
    format!(
        "burst of {count} on {path}: statuses {statuses:?}, {with_retry_after} of {refused} refusals with Retry-After"
    )
}

async fn once(addr: SocketAddr, path: &str, limit: Duration) -> String {
    let start = Instant::now();
    let result = tokio::time::timeout(limit, get(addr, path, "")).await;
    let took = start.elapsed().as_secs_f64();
    match result {
        Ok((Some(status), _)) => format!("GET {path}: {status} after {took:.2}s"),
        Ok((None, _)) => format!("GET {path}: transport error after {took:.2}s"),
        Err(_) => format!("GET {path}: no answer within {took:.0}s"),
    }
}

async fn gauges(addr: SocketAddr, names: &[String]) -> String {
    let (_, text) = get(addr, "/metrics", "").await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let lines: Vec<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    format!("gauges: {}", lines.join(" | "))
}
