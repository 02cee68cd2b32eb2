//! A tonic client against the example server over TCP: refusals are RESOURCE_EXHAUSTED, and the timing layer
//! records the gRPC status of every call.

use grpc_server::{GET_ITEM, GetItemRequest, Item, Limits};
use http::uri::PathAndQuery;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use std::{collections::BTreeMap, num::NonZeroU32, time::Duration};
use tonic::{Code, Status};
use tower_kit::timing::{TimingLayer, names};

/// The server, with its rate limit's quota counted over a minute: no call is earned back during a test, however
/// slow the machine.
async fn start(limits: Limits) -> (tonic::transport::Channel, tower_kit::timing::TimingHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let timing = TimingLayer::new();
    let stats = timing.handle();
    tokio::spawn(grpc_server::serve_with_window(
        listener,
        limits,
        Duration::from_secs(60),
        timing,
    ));
    let channel = tonic::transport::Endpoint::from_shared(grpc_server::endpoint(addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, stats)
}

async fn get_item(
    channel: &tonic::transport::Channel,
    id: u64,
    work_ms: u32,
) -> Result<Item, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    client
        .unary(
            tonic::Request::new(GetItemRequest { id, work_ms }),
            PathAndQuery::from_static(GET_ITEM),
            tonic_prost::ProstCodec::<GetItemRequest, Item>::default(),
        )
        .await
        .map(tonic::Response::into_inner)
}

/// Duration samples per gRPC status code, once every call has finished its body.
async fn calls_by_grpc_status(
    recorder: &DebuggingRecorder,
    stats: &tower_kit::timing::TimingHandle,
) -> BTreeMap<String, usize> {
    for _ in 0..200 {
        if stats.snapshot().active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = BTreeMap::new();
    for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
        if key.key().name() != names::REQUEST_DURATION {
            continue;
        }
        let route = key
            .key()
            .labels()
            .find(|l| l.key() == names::ROUTE)
            .map(|l| l.value().to_owned());
        assert_eq!(
            route.as_deref(),
            Some(GET_ITEM),
            "the method path is the route"
        );
        let code = key
            .key()
            .labels()
            .find(|l| l.key() == names::GRPC_STATUS_CODE)
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        if let DebugValue::Histogram(samples) = value {
            *out.entry(code).or_default() += samples.len();
        }
    }
    out
}

/// Whether the concurrency limit's in-flight gauge went up since the last look (the debugging recorder's snapshot
/// resets gauges and drains histograms: call it only before any call has finished).
fn slot_taken(recorder: &DebuggingRecorder) -> bool {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, _, _, value)| {
            key.key().name() == tower_kit::concurrency::metrics::IN_FLIGHT
                && matches!(value, DebugValue::Gauge(v) if v.0 > 0.0)
        })
}

#[tokio::test]
async fn over_the_rate_limit_is_resource_exhausted_and_recorded() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (channel, stats) = start(Limits {
        // 3 calls a minute (see `start`).
        per_second: NonZeroU32::new(3).unwrap(),
        max_in_flight: 64,
    })
    .await;
    for id in 1..=3 {
        assert_eq!(get_item(&channel, id, 0).await.unwrap().id, id);
    }
    let refused = get_item(&channel, 4, 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let not_found = get_item(&channel, 0, 0).await;
    // The quota is spent, so even a call for a missing item is refused first.
    assert_eq!(not_found.unwrap_err().code(), Code::ResourceExhausted);

    let by_status = calls_by_grpc_status(&recorder, &stats).await;
    assert_eq!(
        by_status,
        BTreeMap::from([("0".to_owned(), 3), ("8".to_owned(), 2)])
    );
}

#[tokio::test]
async fn over_the_concurrency_limit_is_resource_exhausted() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (channel, stats) = start(Limits {
        per_second: NonZeroU32::new(1000).unwrap(),
        max_in_flight: 1,
    })
    .await;
    let slow = {
        let channel = channel.clone();
        tokio::spawn(async move { get_item(&channel, 1, 3000).await })
    };
    // The slow call holds the only slot (3 s of work: it still does when the next call arrives).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !slot_taken(&recorder) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow call never took the slot"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused = get_item(&channel, 2, 0).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(slow.await.unwrap().unwrap().id, 1);
    assert_eq!(
        get_item(&channel, 0, 0).await.unwrap_err().code(),
        Code::NotFound
    );

    let by_status = calls_by_grpc_status(&recorder, &stats).await;
    assert_eq!(
        by_status,
        BTreeMap::from([
            ("0".to_owned(), 1),
            ("5".to_owned(), 1),
            ("8".to_owned(), 1)
        ])
    );
}
