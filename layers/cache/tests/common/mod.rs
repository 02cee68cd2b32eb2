//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tower::{Service, ServiceExt};
use tower_kit_cache::{CacheBody, CacheLayer, CacheLayerBuilder, ManualWallClock, MokaStore};

/// What the origin answers: status, headers, body; it may wait first (on the tokio clock).
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: &'static str,
    pub delay: Duration,
}

impl Answer {
    pub fn ok(headers: &[(&str, &str)], body: &'static str) -> Self {
        Self {
            status: 200,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body,
            delay: Duration::ZERO,
        }
    }

    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

type AnswerFn = Arc<dyn Fn(&Request<()>) -> Answer + Send + Sync>;

/// An origin that counts calls, records each request's headers, and answers with `answer(request)`.
#[derive(Clone)]
pub struct Origin {
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<HeaderMap>>>,
    answer: AnswerFn,
}

impl Origin {
    pub fn new(answer: impl Fn(&Request<()>) -> Answer + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::default(),
            seen: Arc::default(),
            answer: Arc::new(answer),
        }
    }

    pub fn fixed(answer: Answer) -> Self {
        Self::new(move |_| answer.clone())
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn service(&self) -> OriginService {
        OriginService(self.clone())
    }
}

/// The origin as a `Service`.
#[derive(Clone)]
pub struct OriginService(Origin);

impl Service<Request<()>> for OriginService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let this = self.0.clone();
        Box::pin(async move {
            this.calls.fetch_add(1, Ordering::SeqCst);
            this.seen.lock().unwrap().push(req.headers().clone());
            let a = (this.answer)(&req);
            if !a.delay.is_zero() {
                tokio::time::sleep(a.delay).await;
            }
            let mut b = Response::builder().status(StatusCode::from_u16(a.status).unwrap());
            for (n, v) in &a.headers {
                b = b.header(n.as_str(), v.as_str());
            }
            Ok(b.body(Full::new(Bytes::from_static(a.body.as_bytes())))
                .unwrap())
        })
    }
}

/// A builder on a manual clock, so freshness and `Age` follow the test.
pub fn builder(clock: &ManualWallClock) -> CacheLayerBuilder<MokaStore> {
    CacheLayer::builder().clock(clock.clone())
}

/// Sends a request and reads the whole body.
pub async fn send<S, B>(svc: &S, req: Request<()>) -> (http::response::Parts, Bytes)
where
    S: Service<Request<()>, Response = Response<CacheBody<B>>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts, bytes)
}

pub fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

pub fn get_with(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap()
}

/// Every value of a header, joined with ` | ` (so duplicates show).
pub fn all(parts: &http::response::Parts, name: &str) -> String {
    parts
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A store that answers only after yielding to the runtime, and never without waiting (`get_now` is `None`): the
/// shape of a remote store, to run the cache's general path.
#[derive(Clone, Debug)]
pub struct YieldingStore(pub MokaStore);

impl YieldingStore {
    pub fn new(max_bytes: u64) -> Self {
        Self(MokaStore::new(max_bytes))
    }
}

impl tower_kit_cache::Store for YieldingStore {
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<tower_kit_cache::StoredValue>, tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        value: tower_kit_cache::StoredValue,
        ttl: Duration,
    ) -> Result<(), tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.put(key, value, ttl).await
    }
    async fn remove(&self, key: &str) -> Result<bool, tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.remove(key).await
    }
    async fn remove_prefix(&self, prefix: &str) -> Result<u64, tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.remove_prefix(prefix).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<u64, tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.remove_tag(tag).await
    }
    async fn clear(&self) -> Result<(), tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.clear().await
    }
    async fn usage(&self) -> Result<tower_kit_cache::StoreUsage, tower_kit_cache::StoreError> {
        tokio::task::yield_now().await;
        self.0.usage().await
    }
}
