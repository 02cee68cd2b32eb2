//! Runs the quickstart binary on a free port: a route answers 200 and `/metrics` has histogram buckets. Also checks
//! that the README and the book show the example as it is.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// Kills the server when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.1: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the quickstart");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("read the response");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn serves_routes_and_histogram_buckets() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the quickstart binary");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();

    let (status, body) = get(&addr, "/users/7");
    assert_eq!((status, body.as_str()), (200, "user 7\n"));
    assert_eq!(get(&addr, "/users/4242").0, 404, "ids not found");
    let (status, body) = get(&addr, "/report");
    assert_eq!(status, 200);
    assert!(body.starts_with("report line\n"), "{body:?}");

    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_server_request_duration_seconds_bucket{")),
        "no duration buckets in:\n{metrics}"
    );
    drop(server);
}

/// The example's source, as the README and the book's quick start show it.
const SOURCE: &str = include_str!("../src/main.rs");

#[test]
fn readme_shows_the_example_verbatim() {
    let readme = include_str!("../../../README.md");
    let block = format!("```rust,no_run\n{SOURCE}```\n");
    assert!(
        readme.contains(&block),
        "README.md's quickstart block differs from examples/quickstart/src/main.rs: copy the file into it"
    );
}

#[test]
fn book_shows_the_example_verbatim() {
    let chapter = include_str!("../../../book/src/quick-start.md");
    let block = format!("```rust,no_run\n{SOURCE}```\n");
    assert!(
        chapter.contains(&block),
        "book/src/quick-start.md's quickstart block differs from examples/quickstart/src/main.rs: copy the file into it"
    );
}
