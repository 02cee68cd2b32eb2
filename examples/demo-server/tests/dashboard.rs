//! The dashboard at `/` in a real browser: headless Chromium (Debian package `chromium`), driven over the DevTools
//! protocol by a small client on a WebSocket. The test waits until every panel shows data, runs each "try it"
//! burst and checks that the panel that should react does, and saves a screenshot (to `book/src/figures/` with
//! `UPDATE_SCREENSHOT=1`). An uncaught exception or a `console.error` call from the page fails it; the browser's
//! own log lines for the intended 429 and 503 responses do not (they are `Log` domain entries, not enabled here).
//!
//! Real sockets and real time, with generous bounds.

use futures_util::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};
use tokio::{net::TcpStream, sync::oneshot};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

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

/// Starts the demo in this process; it stops when the sender is dropped.
async fn start_demo(config: demo_server::Config) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(demo_server::serve(
        listener,
        config,
        metrics(),
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// The Chromium binary: `$CHROMIUM`, or `chromium` / `chromium-browser` / `google-chrome` on `PATH`.
fn chromium_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "the dashboard test needs headless Chromium and found none on PATH: install the Debian package `chromium` \
         (apt-get install -y chromium), or point $CHROMIUM at a Chromium or Chrome binary"
    );
}

/// A headless Chromium process, killed on drop, with its temporary profile.
struct Browser {
    child: Child,
    profile: PathBuf,
    ws_url: String,
}

impl Browser {
    fn launch() -> Browser {
        let binary = chromium_binary();
        static LAUNCHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LAUNCHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let profile =
            std::env::temp_dir().join(format!("demo-dashboard-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install the Debian package `chromium`",
                    binary.display()
                )
            });
        // Chromium prints `DevTools listening on ws://...` on stderr once it is ready.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    let _ = tx.send(Ok(url.trim().to_owned()));
                } else if seen.len() < 50 {
                    seen.push(line);
                }
            }
            let _ = tx.send(Err(seen.join("\n")));
        });
        let ws_url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Ok(url)) => url,
            Ok(Err(log)) => panic!("Chromium exited before it was ready:\n{log}"),
            Err(_) => panic!("Chromium did not print its DevTools address within 60 s"),
        };
        Browser {
            child,
            profile,
            ws_url,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A minimal DevTools protocol client: one page session over the browser's WebSocket (flattened sessions).
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: Option<String>,
    /// Uncaught exceptions and `console.error` calls of the page, as text.
    page_errors: Vec<String>,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Cdp {
            ws,
            next_id: 1,
            session: None,
            page_errors: Vec::new(),
        }
    }

    /// Sends a command and waits for its answer, recording the events that arrive meanwhile.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method} within 60 s"))
                .unwrap_or_else(|| panic!("the browser closed the connection during {method}"))
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            if value["id"] == json!(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].clone();
            }
            self.record(&value);
        }
    }

    fn record(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("exception");
                self.page_errors.push(format!(
                    "uncaught exception: {text} ({}:{})",
                    details["url"].as_str().unwrap_or("?"),
                    details["lineNumber"]
                ));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| a["description"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| a["value"].to_string())
                    })
                    .collect();
                self.page_errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Inspector.targetCrashed") => self.page_errors.push("the page crashed".into()),
            _ => {}
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page, checking every 200 ms for at most `limit`.
    async fn wait_for(&mut self, expression: &str, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        // Until the page has loaded, its elements are missing: that is "not yet", not a failure.
        let guarded = format!(
            "(() => {{ try {{ return ({expression}) === true; }} catch (e) {{ return false; }} }})()"
        );
        loop {
            if self.eval(&guarded).await == json!(true) {
                return;
            }
            if Instant::now() > deadline {
                let panels = self.eval(PANEL_STATES).await;
                let log = self.eval(TRY_LOG).await;
                panic!(
                    "waited {limit:?} for {what} (`{expression}`)\npanels: {panels}\ntry-it log: {log}\npage errors: {:?}",
                    self.page_errors
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn number(&mut self, id: &str) -> f64 {
        let v = self
            .eval(&format!(
                "Number(document.getElementById('{id}').dataset.value)"
            ))
            .await;
        v.as_f64()
            .unwrap_or_else(|| panic!("#{id} has no numeric data-value: {v}"))
    }

    /// Opens a new tab, attaches to it and turns on the domains the test listens to.
    async fn open_page(&mut self, width: u32, height: u32) {
        self.session = None;
        let target = self
            .call("Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        self.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        self.call("Runtime.enable", json!({})).await;
        self.call("Page.enable", json!({})).await;
        self.call("Inspector.enable", json!({})).await;
        self.resize(width, height).await;
    }

    async fn resize(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url })).await;
        assert!(
            result.get("errorText").is_none(),
            "navigating to {url}: {result}"
        );
    }
}

const PANEL_STATES: &str = "JSON.stringify([...document.querySelectorAll('.panel[data-layer]')]\
    .map(p => p.dataset.layer + ':' + p.dataset.state))";
const TRY_LOG: &str =
    "document.getElementById('try-log') && document.getElementById('try-log').innerText";
const ALL_LIVE: &str = "[...document.querySelectorAll('.panel[data-layer]')].length === 6 && \
    [...document.querySelectorAll('.panel[data-layer]')].every(p => p.dataset.state === 'live')";

/// Clicks a "try it" button and waits for its burst to finish; returns its line in the log.
async fn burst(cdp: &mut Cdp, name: &str) -> String {
    let before = cdp
        .eval(&format!(
            "document.querySelectorAll('li[data-burst=\"{name}\"]').length"
        ))
        .await;
    cdp.eval(&format!(
        "document.getElementById('try-{name}').click(), true"
    ))
    .await;
    cdp.wait_for(
        &format!(
            "document.querySelectorAll('li[data-burst=\"{name}\"][data-done]').length > {before}"
        ),
        Duration::from_secs(30),
        &format!("the {name} burst to finish"),
    )
    .await;
    cdp.eval(&format!(
        "[...document.querySelectorAll('li[data-burst=\"{name}\"]')].pop().innerText"
    ))
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

fn figures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../book/src/figures")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_every_layer_and_reacts_to_the_bursts() {
    let (addr, _stop) = start_demo(demo_server::Config::for_tests()).await;
    let browser = Browser::launch();
    let mut cdp = Cdp::connect(&browser.ws_url).await;
    cdp.open_page(1280, 1000).await;
    cdp.navigate(&format!("http://{addr}/")).await;

    cdp.wait_for(
        ALL_LIVE,
        Duration::from_secs(30),
        "every panel to show data",
    )
    .await;
    assert_eq!(
        cdp.eval("document.getElementById('status').textContent")
            .await,
        json!("live")
    );
    // Nothing has been sent to the API yet.
    assert_eq!(cdp.number("ratelimit-refused").await, 0.0);
    assert_eq!(cdp.number("concurrency-shed").await, 0.0);
    assert_eq!(cdp.number("cache-hits").await, 0.0);
    assert!(
        cdp.number("cache-stored-bytes").await > 0.0,
        "the list is stored by the warm-up"
    );

    // Cache: the report is a miss, then hits; the panel's hit ratio rises above zero.
    let line = burst(&mut cdp, "cache").await;
    assert!(line.contains("MISS") && line.contains("HIT"), "{line}");
    cdp.wait_for(
        "Number(document.getElementById('cache-hit-ratio').dataset.value) > 0",
        Duration::from_secs(10),
        "the cache hit ratio to rise above zero",
    )
    .await;

    // Invalidation: adding an item drops the cached list, so the next read is a miss.
    let line = burst(&mut cdp, "invalidate").await;
    assert!(line.contains("POST 201"), "{line}");
    assert!(line.contains("GET 200 MISS"), "{line}");
    cdp.wait_for(
        "Number(document.getElementById('cache-invalidations').dataset.value) > 0",
        Duration::from_secs(10),
        "the invalidation to show",
    )
    .await;

    // Let the browser's rate-limit bucket refill before the shedding burst (the page's "Run all" waits too).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let line = burst(&mut cdp, "shed").await;
    assert!(line.contains("503"), "{line}");
    cdp.wait_for(
        "Number(document.getElementById('concurrency-shed').dataset.value) > 0",
        Duration::from_secs(10),
        "the shed count to rise above zero",
    )
    .await;

    // Rate limit last: calls until the first 429.
    let line = burst(&mut cdp, "ratelimit").await;
    assert!(line.contains("429 after"), "{line}");
    cdp.wait_for(
        "Number(document.getElementById('ratelimit-refused').dataset.value) > 0",
        Duration::from_secs(10),
        "the 429 count to rise above zero",
    )
    .await;

    // The timing panel lists the routes the bursts called, and its charts have lines.
    cdp.wait_for(
        "document.getElementById('routes-body').innerText.includes('/api/report') && \
         document.getElementById('routes-body').innerText.includes('/api/slow') && \
         document.querySelectorAll('#chart-rps path.series').length > 0 && \
         document.querySelectorAll('#chart-latency path.series').length > 0",
        Duration::from_secs(10),
        "the timing panel to show the API routes",
    )
    .await;
    for chart in [
        "chart-cache",
        "chart-ratelimit",
        "chart-concurrency",
        "chart-batch",
    ] {
        let lines = cdp
            .eval(&format!(
                "document.querySelectorAll('#{chart} path.series').length"
            ))
            .await;
        assert!(lines.as_u64().unwrap_or(0) > 0, "{chart} has no line");
    }
    assert!(
        cdp.number("batch-count").await > 0.0,
        "the rate-limit burst's lookups were batched"
    );
    // The browser accepts compressed responses: the 100 KiB list and /metrics itself are compressed.
    assert!(cdp.number("compression-count").await > 0.0);
    assert!(cdp.number("compression-out").await < cdp.number("compression-in").await);
    let codings = cdp
        .eval("document.getElementById('codings-body').innerText")
        .await;
    assert!(
        !codings.as_str().unwrap_or("").trim().is_empty(),
        "no coding listed: {codings}"
    );

    // A couple more refreshes so the charts show the bursts, then a full-page screenshot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let height = cdp
        .eval("document.documentElement.scrollHeight")
        .await
        .as_u64()
        .unwrap() as u32;
    cdp.resize(1280, height.clamp(600, 4000)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shot = cdp
        .call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        )
        .await;
    let png = decode_base64(shot["data"].as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();
    if std::env::var_os("UPDATE_SCREENSHOT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(figures_dir()).unwrap();
        std::fs::write(figures_dir().join("dashboard.png"), &png).unwrap();
    }

    // Narrow window: the page reflows instead of scrolling sideways.
    cdp.resize(380, 800).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cdp.wait_for(
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        Duration::from_secs(5),
        "the page to fit a 380 px wide window",
    )
    .await;

    assert!(
        cdp.page_errors.is_empty(),
        "the page reported errors: {:#?}",
        cdp.page_errors
    );
    drop(browser);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_layers_say_so() {
    let mut config = demo_server::Config::for_tests();
    config.disable = vec![
        demo_server::LayerName::Batch,
        demo_server::LayerName::Ratelimit,
    ];
    let (addr, _stop) = start_demo(config).await;
    let browser = Browser::launch();
    let mut cdp = Cdp::connect(&browser.ws_url).await;
    cdp.open_page(1000, 800).await;
    cdp.navigate(&format!("http://{addr}/")).await;
    cdp.wait_for(
        "document.getElementById('panel-cache').dataset.state === 'live'",
        Duration::from_secs(30),
        "the cache panel to show data",
    )
    .await;
    let states = cdp.eval(PANEL_STATES).await;
    assert_eq!(
        states,
        json!(
            r#"["timing:live","cache:live","ratelimit:disabled","concurrency:live","compression:live","batch:disabled"]"#
        )
    );
    let text = cdp
        .eval("document.getElementById('panel-batch').innerText")
        .await;
    assert!(text.as_str().unwrap().contains("--disable batch"), "{text}");
    assert!(cdp.page_errors.is_empty(), "{:#?}", cdp.page_errors);
    drop(browser);
}

/// Standard base64 (the screenshot's encoding), without a dependency.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &c)| acc | (value(c) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
