//! The layer in front of a tonic 0.14 server, with a hand-written service and the prost codec (no protoc).

use crate::support::{Metrics, labels};
use http::uri::PathAndQuery;
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::net::TcpListener;
use tonic::{Code, Status, body::Body, server::NamedService};
use tower_kit_timing::{TimingLayer, names};

#[derive(Clone, PartialEq, prost::Message)]
struct Say {
    #[prost(string, tag = "1")]
    text: String,
}

/// The `test.Echo` service: `Say` echoes, `Missing` answers NOT_FOUND, anything else is unimplemented.
#[derive(Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct SayMethod;

impl tonic::server::UnaryService<Say> for SayMethod {
    type Response = Say;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Say>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Say>) -> Self::Future {
        Box::pin(async move {
            let text = request.into_inner().text;
            if text == "missing" {
                Err(Status::not_found("no such thing"))
            } else {
                Ok(tonic::Response::new(Say { text }))
            }
        })
    }
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        match req.uri().path() {
            "/test.Echo/Say" => Box::pin(async move {
                let mut grpc =
                    tonic::server::Grpc::new(tonic_prost::ProstCodec::<Say, Say>::default());
                Ok(grpc.unary(SayMethod, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

async fn call(
    channel: &tonic::transport::Channel,
    path: &'static str,
    text: &str,
) -> Result<Say, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(Say { text: text.into() }),
            PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<Say, Say>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_status_and_method_route() {
    let m = Metrics::new();
    let _g = m.install();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = futures_util::stream::unfold(listener, |l| async move {
        Some((l.accept().await.map(|(s, _)| s), l))
    });
    let layer = TimingLayer::new();
    let stats = layer.handle();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(Echo)
            .serve_with_incoming(incoming),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    assert_eq!(
        call(&channel, "/test.Echo/Say", "hi").await.unwrap().text,
        "hi"
    );
    let err = call(&channel, "/test.Echo/Say", "missing")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    for _ in 0..3 {
        let err = call(&channel, "/test.Echo/Nope", "x").await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
    }
    // The client has its answers once the trailers arrived; give the server time (up to 10 s on a loaded machine)
    // to finish its bodies and record all five calls.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let recorded: usize = m
            .series(names::REQUEST_DURATION)
            .into_iter()
            .map(|(_, v)| v.count())
            .sum();
        if stats.snapshot().active == 0 && recorded == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let got: Vec<_> = m
        .series(names::REQUEST_DURATION)
        .into_iter()
        .map(|(l, v)| (l, v.count()))
        .collect();
    let series = |route: &str, code: &str| {
        labels(&[
            (names::METHOD, "POST"),
            (names::ROUTE, route),
            (names::STATUS_CODE, "200"),
            (names::GRPC_STATUS_CODE, code),
        ])
    };
    assert_eq!(
        got,
        vec![
            (series("/test.Echo/Say", "0"), 1), // OK arrives in the trailers
            (series("/test.Echo/Say", "5"), 1), // an error is a trailers-only response
            (series("unmatched", "12"), 3),     // unknown methods make no route value
        ]
    );
}
