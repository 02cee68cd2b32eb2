//! 1,000 WebSocket clients receive item price updates broadcast to all of them (over 1,000 items): 10 per second
//! (10,000 deliveries per second) and 100 per second (100,000), once with each update in its own frame and once
//! through `MessageBatcher` (10 updates or 100 ms per frame, the newest price per item). Prints frames and updates delivered, the server's CPU time, and the p50/p99 delivery
//! delay (from the update's creation to its arrival at a client).
//!
//! `cargo bench -p bench-websocket` (env: `WS_CLIENTS`, `WS_RATE` broadcast updates/s, `WS_SECONDS`).
#![allow(missing_docs)]

use axum::{
    Router,
    extract::{
        State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};
use tokio::sync::broadcast;
use tower_kit_batch::ws::MessageBatcher;
use tower_kit_timing::ws::WebSocketMetrics;

#[derive(Clone, Copy)]
struct Update {
    id: u64,
    price: u64,
    /// Microseconds since the start of the run, when the update was made.
    t: u64,
}

impl Update {
    fn json(&self) -> String {
        format!(
            r#"{{"id":{},"price":{},"t":{}}}"#,
            self.id, self.price, self.t
        )
    }
}

#[derive(Clone)]
struct Server {
    updates: broadcast::Sender<Update>,
    batched: bool,
    meter: WebSocketMetrics,
    batcher: MessageBatcher<Update, Message, u64>,
}

async fn upgrade(ws: WebSocketUpgrade, State(server): State<Server>) -> Response {
    ws.on_upgrade(move |socket| serve(socket, server))
}

async fn serve(socket: WebSocket, server: Server) {
    let mut updates = server.updates.subscribe();
    let socket = server.meter.wrap(socket, "/ws");
    if server.batched {
        let (sink, mut stream) = socket.split();
        let (sender, driver) = server.batcher.attach(sink);
        let driver = tokio::spawn(driver);
        loop {
            tokio::select! {
                u = updates.recv() => match u {
                    Ok(u) => { let _ = sender.send(u); }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                m = stream.next() => if m.is_none() { break },
            }
        }
        drop(sender);
        let _ = driver.await;
    } else {
        let mut socket = socket;
        loop {
            tokio::select! {
                u = updates.recv() => match u {
                    Ok(u) => if socket.send(Message::Text(u.json().into())).await.is_err() { break },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
                m = socket.next() => if m.is_none() { break },
            }
        }
    }
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`, from /proc.
fn cpu_of_threads(prefix: &str) -> Duration {
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the command name, which is in parentheses: state is field 3, utime 14, stime 15.
            if let Some(rest) = stat.rsplit(')').next() {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                if fields.len() > 12 {
                    ticks += fields[11].parse::<u64>().unwrap_or(0)
                        + fields[12].parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec)
}

struct Outcome {
    frames: u64,
    updates: u64,
    cpu: Duration,
    p50: Duration,
    p99: Duration,
}

fn run(batched: bool, clients: usize, rate: u64, seconds: u64) -> Outcome {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(if batched { "srv-batched" } else { "srv-single" })
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    let (updates, _) = broadcast::channel(16 * 1024);
    let server = Server {
        updates: updates.clone(),
        batched,
        meter: WebSocketMetrics::new(),
        batcher: MessageBatcher::builder(|batch: Vec<Update>| {
            let mut s = String::with_capacity(batch.len() * 48 + 2);
            s.push('[');
            for (i, u) in batch.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(&u.json());
            }
            s.push(']');
            Message::Text(s.into())
        })
        .latest_wins(|u: &Update| u.id)
        .build()
        .unwrap(),
    };
    let addr: SocketAddr = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/ws", get(upgrade)).with_state(server);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    });

    let start = Instant::now();
    let frames = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let delays = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    client_rt.block_on(async {
        for _ in 0..clients {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                .await
                .unwrap();
            let (frames, delivered, measuring, delays) = (
                frames.clone(),
                delivered.clone(),
                measuring.clone(),
                delays.clone(),
            );
            tokio::spawn(async move {
                let mut local = Vec::new();
                while let Some(Ok(m)) = ws.next().await {
                    let tokio_tungstenite::tungstenite::Message::Text(text) = m else {
                        continue;
                    };
                    if !measuring.load(Relaxed) {
                        continue;
                    }
                    let now = start.elapsed().as_micros() as u64;
                    frames.fetch_add(1, Relaxed);
                    // Each update carries "t":<micros>.
                    for part in text.as_str().split("\"t\":").skip(1) {
                        let digits: String =
                            part.chars().take_while(char::is_ascii_digit).collect();
                        if let Ok(t) = digits.parse::<u64>() {
                            delivered.fetch_add(1, Relaxed);
                            local.push(now.saturating_sub(t).min(u64::from(u32::MAX)) as u32);
                        }
                    }
                    if local.len() >= 4096 {
                        delays.lock().unwrap().append(&mut local);
                    }
                }
                delays.lock().unwrap().append(&mut local);
            });
        }
    });

    // Produce on the server runtime: `rate` updates per second, each to every client, over 1,000 items.
    let period = Duration::from_secs(1)
        .checked_div(u32::try_from(rate).unwrap_or(u32::MAX))
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let per_tick = ((rate as f64) * period.as_secs_f64()).round().max(1.0) as u64;
    let producing = server_rt.spawn({
        let updates = updates.clone();
        async move {
            let mut tick = tokio::time::interval(period);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                for _ in 0..per_tick {
                    n += 1;
                    let t = start.elapsed().as_micros() as u64;
                    let _ = updates.send(Update {
                        id: n.wrapping_mul(7919) % 1000,
                        price: n,
                        t,
                    });
                }
            }
        }
    });
    // Warm up one second, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let prefix = if batched { "srv-batched" } else { "srv-single" };
    let cpu_before = cpu_of_threads(prefix);
    measuring.store(true, Relaxed);
    std::thread::sleep(Duration::from_secs(seconds));
    measuring.store(false, Relaxed);
    let cpu = cpu_of_threads(prefix) - cpu_before;
    producing.abort();
    drop(updates);
    server_rt.shutdown_timeout(Duration::from_secs(1));
    client_rt.shutdown_timeout(Duration::from_secs(1));

    let mut delays = std::mem::take(&mut *delays.lock().unwrap());
    delays.sort_unstable();
    let q = |q: f64| {
        if delays.is_empty() {
            return Duration::ZERO;
        }
        let i = ((delays.len() as f64 * q) as usize).min(delays.len() - 1);
        Duration::from_micros(u64::from(delays[i]))
    };
    Outcome {
        frames: frames.load(Relaxed),
        updates: delivered.load(Relaxed),
        cpu,
        p50: q(0.50),
        p99: q(0.99),
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and then this only checks that it runs.
    let bench = std::env::args().any(|a| a == "--bench");
    let clients = env("WS_CLIENTS", if bench { 1000 } else { 10 }) as usize;
    let seconds = env("WS_SECONDS", if bench { 5 } else { 1 });
    let rates = match std::env::var("WS_RATE").ok().and_then(|v| v.parse().ok()) {
        Some(rate) => vec![rate],
        None => vec![10, 100],
    };
    println!(
        "{clients} clients, {seconds} s measured after 1 s of warm-up; server: one tokio worker"
    );
    println!(
        "{:>10} {:>12} {:<28} {:>10} {:>12} {:>11} {:>9} {:>9}",
        "updates/s", "deliveries/s", "mode", "frames/s", "delivered/s", "server CPU", "p50", "p99"
    );
    for rate in rates {
        for batched in [false, true] {
            let o = run(batched, clients, rate, seconds);
            println!(
                "{:>10} {:>12} {:<28} {:>10} {:>12} {:>10.2}s {:>7.1}ms {:>7.1}ms",
                rate,
                rate * clients as u64,
                if batched {
                    "MessageBatcher (10/100 ms)"
                } else {
                    "one frame per update"
                },
                o.frames / seconds,
                o.updates / seconds,
                o.cpu.as_secs_f64(),
                o.p50.as_secs_f64() * 1000.0,
                o.p99.as_secs_f64() * 1000.0,
            );
        }
    }
}
