//! The demo serves through `tower_kit::serve`: silent sockets beyond `--max-connections` neither take it offline
//! nor stay open past `--header-read-timeout`, and idle keep-alive connections close after `--idle-timeout`.
//! Real sockets and real time, with short timeouts and generous bounds.

use metrics_exporter_prometheus::PrometheusHandle;
use std::{net::SocketAddr, sync::OnceLock, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    time::Instant,
};

fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            demo_server::observability::prometheus_builder()
                .unwrap()
                .install_recorder()
                .unwrap()
        })
        .clone()
}

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(config: demo_server::Config) -> Running {
    let listener = demo_server::server::bind(config.listen, &config.server).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(demo_server::serve(
        listener,
        config,
        metrics(),
        async move {
            let _ = stopped.await;
        },
    ));
    Running { addr, stop, done }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.done)
            .await
            .expect("the demo stops")
            .unwrap()
            .unwrap();
    }
}

/// Sends one request and reads its response head and `content-length` body; returns the status line and body.
async fn request(s: &mut TcpStream, path: &str, close: bool) -> (String, String) {
    let connection = if close { "close" } else { "keep-alive" };
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: {connection}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response");
        data.extend_from_slice(&buf[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        while data.len() < end + 4 + len {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-body");
            data.extend_from_slice(&buf[..n]);
        }
        let status = head.lines().next().unwrap_or_default().to_owned();
        return (
            status,
            String::from_utf8_lossy(&data[end + 4..end + 4 + len]).to_string(),
        );
    }
}

/// Reads until the peer closes; the time from `since`, or `None` if still open after `within`.
async fn closed_after(s: &mut TcpStream, since: Instant, within: Duration) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(since + within, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_beyond_the_cap_do_not_take_the_demo_offline() {
    let header = Duration::from_millis(1500);
    let mut config = demo_server::Config::for_tests();
    config.server.header_read_timeout = header;
    config.server.max_connections = Some(20);
    config.server.listen_backlog = 256;
    let demo = start(config);
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push((Instant::now(), TcpStream::connect(demo.addr).await.unwrap()));
    }
    let asked = Instant::now();
    let mut probe = TcpStream::connect(demo.addr).await.unwrap();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(5), request(&mut probe, "/health", true))
            .await
            .expect("/health answers while 40 silent sockets are held");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"));
    assert!(asked.elapsed() < header, "{:?}", asked.elapsed());
    let mut at_deadline = 0;
    for (opened, s) in &mut silent {
        let closed = closed_after(s, *opened, Duration::from_secs(10))
            .await
            .expect("every silent socket is closed");
        if closed >= header {
            at_deadline += 1;
        }
    }
    // 20 made room for the next 20 and one for /health; the 19 left were closed at the header deadline.
    assert_eq!(at_deadline, 19);
    demo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let mut config = demo_server::Config::for_tests();
    config.server.idle_timeout = Duration::from_millis(700);
    let demo = start(config);
    let mut s = TcpStream::connect(demo.addr).await.unwrap();
    let (status, _) = request(&mut s, "/health", false).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let answered = Instant::now();
    let closed = closed_after(&mut s, answered, Duration::from_secs(8))
        .await
        .expect("closed after the idle timeout");
    assert!(closed >= Duration::from_millis(350), "{closed:?}");
    demo.stop().await;
}
