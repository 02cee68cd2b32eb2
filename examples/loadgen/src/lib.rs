//! A closed-loop HTTP/1.1 load generator: `connections` keep-alive connections, each sending its next request as
//! soon as the last answer's body has been read, cycling through a list of paths, for a fixed duration (and at most
//! a fixed number of requests). Bounded in time and count, and meant for servers on this machine only.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::net::TcpStream;

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server (loopback).
    pub addr: SocketAddr,
    /// Paths to cycle through (each connection starts at a different offset).
    pub paths: Vec<String>,
    /// Concurrent connections.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// Stop after this many requests in all, whatever the time.
    pub max_requests: u64,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
}

/// What came back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Requests answered (any status).
    pub requests: u64,
    /// Requests that failed at the transport level (connection refused or reset, truncated body).
    pub transport_errors: u64,
    /// Answers per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Wall time of the run, in seconds.
    pub seconds: f64,
    /// Answered requests per second.
    pub requests_per_second: f64,
    /// Median latency (request sent to body read), in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
    /// Slowest answer, in milliseconds.
    pub max_ms: f64,
}

impl Report {
    /// Answers with this status.
    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct Worker {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
}

/// Runs the plan to completion.
pub async fn run(plan: Plan) -> Report {
    let plan = Arc::new(plan);
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(plan.max_requests));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let workers: Vec<_> = (0..plan.connections.max(1))
        .map(|i| tokio::spawn(worker(Arc::clone(&plan), Arc::clone(&budget), i, deadline)))
        .collect();
    let mut all = Worker::default();
    for w in workers {
        if let Ok(w) = w.await {
            all.latencies_us.extend(w.latencies_us);
            all.transport_errors += w.transport_errors;
            for (s, n) in w.statuses {
                *all.statuses.entry(s).or_default() += n;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let pct = |q: f64| -> f64 {
        if all.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((q * all.latencies_us.len() as f64).ceil() as usize)
            .clamp(1, all.latencies_us.len())
            - 1;
        f64::from(all.latencies_us[i]) / 1000.0
    };
    let requests = all.latencies_us.len() as u64;
    Report {
        requests,
        transport_errors: all.transport_errors,
        statuses: all.statuses,
        seconds,
        requests_per_second: requests as f64 / seconds.max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: all
            .latencies_us
            .last()
            .map_or(0.0, |v| f64::from(*v) / 1000.0),
    }
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

async fn worker(
    plan: Arc<Plan>,
    budget: Arc<std::sync::atomic::AtomicU64>,
    offset: usize,
    deadline: Instant,
) -> Worker {
    let mut out = Worker::default();
    let mut sender: Option<Sender> = None;
    let mut i = offset;
    while Instant::now() < deadline {
        if budget
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_err()
        {
            break;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(plan.addr).await;
            if sender.is_none() {
                out.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let path = &plan.paths[i % plan.paths.len().max(1)];
        i += 1;
        let mut builder = Request::get(path.as_str()).header("host", plan.addr.to_string());
        for (k, v) in &plan.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let Ok(request) = builder.body(Empty::new()) else {
            out.transport_errors += 1;
            continue;
        };
        let sent = Instant::now();
        let answer = async {
            s.ready().await.ok()?;
            let response = s.send_request(request).await.ok()?;
            let status = response.status();
            response.into_body().collect().await.ok()?;
            Some(status)
        };
        match tokio::time::timeout(Duration::from_secs(30), answer).await {
            Ok(Some(status)) => {
                let us = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                out.latencies_us.push(us);
                *out.statuses.entry(status_code(status)).or_default() += 1;
            }
            _ => {
                out.transport_errors += 1;
                sender = None;
            }
        }
    }
    out
}

fn status_code(status: StatusCode) -> u16 {
    status.as_u16()
}
