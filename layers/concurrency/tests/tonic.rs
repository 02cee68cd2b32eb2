//! tonic 0.14 (no protoc: a hand-written prost message and a hand-written service): a refused call gets
//! HTTP 200 with `grpc-status: 8`, which the tonic client reads as `Code::ResourceExhausted`.

use http::uri::PathAndQuery;
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::sync::Notify;
use tonic::{
    Code, Status,
    body::Body,
    server::{NamedService, UnaryService},
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use tower::Service;
use tower_kit_concurrency::ConcurrencyLayer;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `test.Echo/Say`: waits until the gate opens when asked to, then echoes.
#[derive(Clone)]
struct Echo {
    gate: Arc<Notify>,
}

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Say(Arc<Notify>);

impl UnaryService<Msg> for Say {
    type Response = Msg;
    type Future = BoxFuture<Result<tonic::Response<Msg>, Status>>;

    fn call(&mut self, request: tonic::Request<Msg>) -> Self::Future {
        let gate = self.0.clone();
        Box::pin(async move {
            let msg = request.into_inner();
            if msg.text == "wait" {
                gate.notified().await;
            }
            Ok(tonic::Response::new(msg))
        })
    }
}

impl Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let gate = self.gate.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
            Ok(grpc.unary(Say(gate), request).await)
        })
    }
}

async fn say(channel: Channel, text: &str) -> Result<Msg, Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    client
        .unary(
            tonic::Request::new(Msg { text: text.into() }),
            PathAndQuery::from_static("/test.Echo/Say"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_refused_call_gets_resource_exhausted() {
    let layer = ConcurrencyLayer::new(1.try_into().unwrap());
    let handle = layer.handle();
    let gate = Arc::new(Notify::new());
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(Echo { gate: gate.clone() })
            .serve_with_incoming(incoming),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    assert_eq!(say(channel.clone(), "hi").await.unwrap().text, "hi");
    let holder = tokio::spawn(say(channel.clone(), "wait"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while handle.in_flight() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = say(channel.clone(), "hi").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(refused.message(), "concurrency limit reached");
    gate.notify_one(); // keeps a permit if the handler has not started waiting yet
    assert_eq!(holder.await.unwrap().unwrap().text, "wait");
    assert_eq!(say(channel, "again").await.unwrap().text, "again");
    server.abort();
}
