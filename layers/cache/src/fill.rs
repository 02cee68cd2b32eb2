//! Storing a response once its body has streamed to the first client, and telling the waiters.

use crate::{
    body::FillSink,
    coalesce::{Leader, Outcome},
    entry::{Entry, StoredValue, Variants},
    layer::Shared,
    service::range,
    store::{Store, deadline::Deadline},
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use std::{
    future::Future,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime},
};

/// Everything of the entry but its body, known when the response head arrives.
#[derive(Debug)]
pub(crate) struct Template {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    pub(crate) initial_age: Duration,
    pub(crate) freshness_lifetime: Duration,
    pub(crate) vary: Vec<(HeaderName, Option<String>)>,
    pub(crate) tags: Vec<String>,
    pub(crate) public: bool,
    pub(crate) shared_with_authorization: bool,
    pub(crate) no_cache: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) stale_while_revalidate: Option<Duration>,
    pub(crate) stale_if_error: Option<Duration>,
}

/// The [`FillSink`] of a response being stored.
pub(crate) struct StoreFill<St> {
    pub(crate) shared: Arc<Shared<St>>,
    pub(crate) template: Template,
    pub(crate) primary: String,
    pub(crate) store_key: String,
    pub(crate) coalesce_key: String,
    pub(crate) leader: Option<Leader>,
    pub(crate) generation: u64,
    /// The request's Redis deadline: the writes get what its lookups left.
    pub(crate) deadline: Deadline,
    /// For a `206`: the stored response (a part, or a complete `200`) it may be combined with (RFC 9111 §3.4).
    pub(crate) combine: Option<Arc<Entry>>,
}

impl<St: Store> FillSink for StoreFill<St> {
    fn complete(self: Box<Self>, body: Bytes, trailers: Option<HeaderMap>) {
        let this = *self;
        let mut t = this.template;
        let mut body = body;
        if t.status == StatusCode::PARTIAL_CONTENT {
            // A part is stored only when its body is exactly the range it says it holds.
            match range::part(&t.headers) {
                Some(part) if part.last - part.first + 1 == body.len() as u64 => {}
                _ => return,
            }
            // Combined only within `max_entry_size`; a larger whole is left as the new part.
            if let Some(old) = &this.combine
                && let Some((merged, merged_body)) =
                    range::combine(old.status, &old.headers, &old.body, &t.headers, &body)
                && merged_body.len() <= this.shared.config.max_entry_size
            {
                let (status, mut headers) = range::combined_head(&t.headers, merged);
                if status == StatusCode::OK && this.shared.config.ranges {
                    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                }
                t.status = status;
                t.headers = headers;
                body = merged_body;
            }
        }
        let entry = Arc::new(Entry {
            status: t.status,
            headers: t.headers,
            body,
            trailers,
            request_time: t.request_time,
            response_time: t.response_time,
            initial_age: t.initial_age,
            freshness_lifetime: t.freshness_lifetime,
            vary: t.vary,
            tags: t.tags,
            public: t.public,
            shared_with_authorization: t.shared_with_authorization,
            no_cache: t.no_cache,
            must_revalidate: t.must_revalidate,
            stale_while_revalidate: t.stale_while_revalidate,
            stale_if_error: t.stale_if_error,
        });
        if this.shared.generation.load(Ordering::Acquire) != this.generation {
            // Invalidated while this response was in flight: it may be older than the invalidation. Waiters look
            // again (and one of them asks the origin).
            return;
        }
        let shared = this.shared;
        let leader = this.leader;
        let (primary, store_key) = (this.primary, this.store_key);
        drive(this.deadline.scope(async move {
            put_entry(&shared, &primary, &store_key, &entry).await;
            if let Some(leader) = leader {
                leader.finish(Outcome::Filled(entry));
            }
        }));
    }

    fn too_big(self: Box<Self>) {
        let this = *self;
        if let Some(leader) = this.leader {
            mark_pass(this.shared, this.coalesce_key, leader, this.deadline);
        }
    }

    fn abandon(self: Box<Self>) {
        // Dropping the leader publishes `Abandoned`: waiters look again.
    }
}

/// Writes a response under `store_key` (and its `Vary` record under `primary`), kept while it is fresh and then
/// while it may still be served stale or validated. Returns whether it was written.
pub(crate) async fn put_entry<St: Store>(
    shared: &Shared<St>,
    primary: &str,
    store_key: &str,
    entry: &Arc<Entry>,
) -> bool {
    let now = shared.clock.now();
    let until = entry.fresh_until() + shared.config.retention(entry);
    let ttl = until.duration_since(now).unwrap_or_default();
    if ttl.is_zero() {
        return false;
    }
    if !entry.vary.is_empty() {
        let names: Vec<HeaderName> = entry.vary.iter().map(|(n, _)| n.clone()).collect();
        let mut until = until;
        // Keep the record as long as the longest-lived variant that uses the same names.
        if let Ok(Some(StoredValue::Variants(v))) = shared.store.get(primary).await
            && v.headers == names
        {
            until = until.max(v.until);
        }
        let record = StoredValue::Variants(Arc::new(Variants {
            headers: names,
            until,
        }));
        let ttl = until.duration_since(now).unwrap_or_default();
        if let Err(e) = shared.store.put(primary, record, ttl).await {
            shared.counters.store_error(&e);
        }
    }
    let weight = entry.weight();
    match shared
        .store
        .put(store_key, StoredValue::Response(Arc::clone(entry)), ttl)
        .await
    {
        Ok(()) => {
            shared.counters.stored(weight);
            true
        }
        Err(e) => {
            shared.counters.store_error(&e);
            false
        }
    }
}

/// Marks `key` hit-for-pass (when configured, on the request's Redis `deadline`), then releases the waiters to the
/// origin.
pub(crate) fn mark_pass<St: Store>(
    shared: Arc<Shared<St>>,
    key: String,
    leader: Leader,
    deadline: Deadline,
) {
    drive(deadline.scope(async move {
        let hfp = shared.config.hit_for_pass;
        if !hfp.is_zero() {
            let until = shared.clock.now() + hfp;
            if let Err(e) = shared
                .store
                .put(&key, StoredValue::Pass { until }, hfp)
                .await
            {
                shared.counters.store_error(&e);
            }
        }
        leader.finish(Outcome::Pass);
    }));
}

/// Runs a store write: at once when the store answers at once (moka), else on the tokio runtime.
pub(crate) fn drive(fut: impl Future<Output = ()> + Send + 'static) {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(()) = fut.as_mut().poll(&mut cx) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(fut);
        }
        Err(_) => tracing::warn!(
            "no tokio runtime to finish a cache write on; the response is not stored"
        ),
    }
}
