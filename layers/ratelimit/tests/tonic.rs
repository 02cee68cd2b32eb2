//! tonic 0.14 over a real connection: refusals reach the client as `RESOURCE_EXHAUSTED`, with no protoc (a
//! hand-written prost message and tonic's generic client and server).

use http::uri::PathAndQuery;
use std::{convert::Infallible, net::SocketAddr, num::NonZeroU32};
use tonic::{Code, codegen::BoxFuture};
use tonic_prost::ProstCodec;
use tower_kit_ratelimit::{Policy, Quota, RateLimitLayer};

#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    text: String,
}

#[derive(Clone)]
struct Echo;

impl tonic::server::UnaryService<Ping> for Echo {
    type Response = Ping;
    type Future = BoxFuture<tonic::Response<Ping>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<Ping>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(request.into_inner())) })
    }
}

#[tokio::test]
async fn grpc_calls_past_the_quota_get_resource_exhausted() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new(
            "rpc",
            Quota::per_hour(NonZeroU32::new(2).unwrap()),
        ))
        .build()
        .unwrap();
    let echo = tower::service_fn(|req: http::Request<axum::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Ping, Ping>::default());
        Ok::<_, Infallible>(grpc.unary(Echo, req.map(tonic::body::Body::new)).await)
    });
    let app = axum::Router::new()
        .route_service("/test.Echo/Ping", echo)
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    let mut codes = Vec::new();
    for i in 0..3 {
        client.ready().await.unwrap();
        let result = client
            .unary(
                tonic::Request::new(Ping {
                    text: format!("ping {i}"),
                }),
                PathAndQuery::from_static("/test.Echo/Ping"),
                ProstCodec::<Ping, Ping>::default(),
            )
            .await;
        match result {
            Ok(r) => {
                assert_eq!(r.into_inner().text, format!("ping {i}"));
                codes.push(Code::Ok);
            }
            Err(status) => {
                assert_eq!(status.message(), "rate limit exceeded");
                // The wait, in milliseconds rounded up (real clock: a little under 30 minutes).
                let pushback: u64 = status
                    .metadata()
                    .get("grpc-retry-pushback-ms")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1_790_000..=1_800_000).contains(&pushback), "{pushback}");
                assert!(status.metadata().get("retry-after").is_none());
                assert!(status.metadata().get("ratelimit").is_some());
                codes.push(status.code());
            }
        }
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::ResourceExhausted]);
    server.abort();
}

#[tokio::test]
async fn tonic_server_keys_by_tcp_connect_info() {
    let layer = RateLimitLayer::builder()
        .policy(Policy::new(
            "rpc",
            Quota::per_hour(NonZeroU32::new(1).unwrap()),
        ))
        .build()
        .unwrap();
    let echo = tower::service_fn(|req: http::Request<axum::body::Body>| async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Ping, Ping>::default());
        Ok::<_, Infallible>(grpc.unary(Echo, req.map(tonic::body::Body::new)).await)
    });
    let routes =
        tonic::service::Routes::from(axum::Router::new().route_service("/test.Echo/Ping", echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = layer.store().clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(layer)
            .add_routes(routes)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    let mut codes = Vec::new();
    for _ in 0..2 {
        client.ready().await.unwrap();
        let result = client
            .unary(
                tonic::Request::new(Ping { text: "x".into() }),
                PathAndQuery::from_static("/test.Echo/Ping"),
                ProstCodec::<Ping, Ping>::default(),
            )
            .await;
        codes.push(result.map_or_else(|s| s.code(), |_| Code::Ok));
    }
    assert_eq!(codes, [Code::Ok, Code::ResourceExhausted]);
    // Keyed by the TCP peer (127.0.0.1), not the shared `unknown` bucket.
    assert_eq!(store.stats().tracked_keys, 1);
    server.abort();
}
