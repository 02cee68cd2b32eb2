//! The body wrapper's endings as a real hyper 1 server produces them: hyper drops a body without polling it to the
//! end for HEAD, after `Content-Length` bytes, and when `is_end_stream()` is true; each of those is a normal end.
//! A client that goes away mid-stream is an abort.

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tower_kit_core::{BodyEnd, ObservedBody};

/// A streaming body fed by a channel; it ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx)
    }
}

type Either = http_body_util::Either<Full<Bytes>, ChannelBody>;

/// Starts a server whose bodies report their end on the returned channel.
async fn server() -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<(String, BodyEnd)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let (body, content_length): (Either, Option<&str>) = match path.as_str() {
                            "/full" => {
                                (Either::Left(Full::new(Bytes::from_static(b"hello"))), None)
                            }
                            "/stream-with-length" => {
                                let (ftx, frx) = mpsc::channel(4);
                                ftx.send(Ok(Frame::data(Bytes::from_static(b"hel"))))
                                    .await
                                    .unwrap();
                                ftx.send(Ok(Frame::data(Bytes::from_static(b"lo"))))
                                    .await
                                    .unwrap();
                                // The sender stays alive: the stream never says it is over by itself.
                                tokio::spawn(async move {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    drop(ftx);
                                });
                                (Either::Right(ChannelBody(frx)), Some("5"))
                            }
                            "/endless" => {
                                let (ftx, frx) = mpsc::channel(4);
                                tokio::spawn(async move {
                                    loop {
                                        if ftx
                                            .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                                            .await
                                            .is_err()
                                        {
                                            break;
                                        }
                                        tokio::time::sleep(Duration::from_millis(5)).await;
                                    }
                                });
                                (Either::Right(ChannelBody(frx)), None)
                            }
                            "/error" => {
                                let (ftx, frx) = mpsc::channel(4);
                                ftx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
                                    .await
                                    .unwrap();
                                ftx.send(Err(std::io::Error::other("backend failed")))
                                    .await
                                    .unwrap();
                                (Either::Right(ChannelBody(frx)), None)
                            }
                            _ => (Either::Left(Full::new(Bytes::new())), None),
                        };
                        let mut builder = Response::builder();
                        if let Some(len) = content_length {
                            builder = builder.header("content-length", len);
                        }
                        let head = builder.body(()).unwrap();
                        let (parts, ()) = head.into_parts();
                        let observed = ObservedBody::for_response(
                            body,
                            move |end| {
                                let _ = tx.send((path, end));
                            },
                            req.method(),
                            parts.status,
                            &parts.headers,
                        );
                        Ok::<_, Infallible>(Response::from_parts(parts, observed))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

/// Sends one raw request and reads `read_at_least` bytes of the answer (or until EOF); returns what was read.
async fn raw(
    addr: std::net::SocketAddr,
    request: &str,
    read_at_least: usize,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while got.len() < read_at_least {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    (s, String::from_utf8_lossy(&got).into_owned())
}

async fn next_end(rx: &mut mpsc::UnboundedReceiver<(String, BodyEnd)>) -> (String, BodyEnd) {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("body end reported")
        .unwrap()
}

#[tokio::test]
async fn known_length_body_is_completed() {
    let (addr, mut rx) = server().await;
    let (_s, text) = raw(addr, "GET /full HTTP/1.1\r\nhost: t\r\n\r\n", 40).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, end) = next_end(&mut rx).await;
    assert_eq!(end, BodyEnd::Completed);
}

#[tokio::test]
async fn content_length_reached_is_completed_even_if_the_stream_is_not_over() {
    let (addr, mut rx) = server().await;
    let (_s, text) = raw(
        addr,
        "GET /stream-with-length HTTP/1.1\r\nhost: t\r\n\r\n",
        1,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        next_end(&mut rx).await,
        ("/stream-with-length".into(), BodyEnd::Completed)
    );
}

#[tokio::test]
async fn head_is_completed() {
    let (addr, mut rx) = server().await;
    let (_s, text) = raw(addr, "HEAD /endless HTTP/1.1\r\nhost: t\r\n\r\n", 10).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        next_end(&mut rx).await,
        ("/endless".into(), BodyEnd::Completed)
    );
}

#[tokio::test]
async fn client_disconnect_mid_stream_is_aborted() {
    let (addr, mut rx) = server().await;
    let (s, text) = raw(addr, "GET /endless HTTP/1.1\r\nhost: t\r\n\r\n", 200).await;
    assert!(text.contains("tick"), "{text}");
    drop(s);
    assert_eq!(
        next_end(&mut rx).await,
        ("/endless".into(), BodyEnd::Aborted)
    );
}

#[tokio::test]
async fn body_error_is_errored() {
    let (addr, mut rx) = server().await;
    let (_s, _text) = raw(addr, "GET /error HTTP/1.1\r\nhost: t\r\n\r\n", 1).await;
    assert_eq!(next_end(&mut rx).await, ("/error".into(), BodyEnd::Errored));
}
