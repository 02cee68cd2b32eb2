//! Revalidation with the origin: `304` refreshes (RFC 9111 §4.3.4), stale entries answering failed refreshes
//! (RFC 5861 `stale-if-error`), and the background revalidation behind `stale-while-revalidate`.

use super::{
    describe,
    forward::{Exchange, Origin, forward},
    gateway_timeout,
    plan::{Forward, StoreTo},
    stored_response,
};
use crate::{
    body::CacheBody,
    coalesce::{Leader, Outcome},
    conditional,
    entry::Entry,
    fill::{mark_pass, put_entry},
    layer::Shared,
    stats::Outcome as Count,
    status::{Mark, StaleWhy},
    storability::{self, RequestFacts},
    store::{Store, deadline::Deadline},
};
use bytes::Buf;
use http::{HeaderMap, Request, Response, StatusCode, response};
use http_body::Body;
use std::{
    future::poll_fn,
    pin::pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};
use tower_kit_core::ServerTiming;
use tower_service::Service;

/// A stored entry being revalidated, and its key.
pub(super) struct StaleEntry {
    pub(super) key: String,
    pub(super) entry: Arc<Entry>,
}

/// Sends the client's own request (made conditional) to the origin on a task of its own and reads the response
/// to its end, so that it refreshes or replaces the entry. Without a tokio runtime, nothing is revalidated.
pub(super) fn in_background<S, St, ReqB, ResB>(
    mut origin: Origin<St>,
    inner: S,
    mut request: Request<ReqB>,
    stale: StaleEntry,
    leader: Leader,
) where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("no tokio runtime to revalidate a stale entry on");
        return;
    };
    // The client was answered: its Server-Timing context must not collect the background request's entries.
    request.extensions_mut().remove::<ServerTiming>();
    // The stored response is revalidated whole, not the client's range of it.
    request.headers_mut().remove(http::header::RANGE);
    request.headers_mut().remove(http::header::IF_RANGE);
    origin.timing = None;
    let StaleEntry { key, entry } = stale;
    let plan = Forward {
        store: Some(StoreTo {
            coalesce_key: key.clone(),
            leader: Some(leader),
        }),
        fwd: "stale",
        detail: None,
        count: None,
        stale: Some((key, entry)),
        partial: None,
    };
    runtime.spawn(async move {
        // A request of its own, on a deadline of its own.
        origin.deadline = Deadline::new();
        if let Ok(response) = forward(origin, inner, request, plan).await {
            let mut body = pin!(response.into_body());
            while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                if frame.is_err() {
                    break;
                }
            }
        }
    });
}

/// The statuses that let `stale-if-error` answer (RFC 5861 §4).
pub(super) fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl<St: Store> Exchange<St> {
    /// The stale entry that may answer a failed refresh, if any, and why: within `stale-if-error` (RFC 5861),
    /// else, when the origin could not be reached at all (`disconnected`), within the cache's
    /// `stale_if_disconnected` (RFC 9111 §4.2.4) for a stored response that is itself stale and does not forbid it.
    fn stale_answer(&self, disconnected: bool) -> Option<(Arc<Entry>, StaleWhy)> {
        let (_, entry) = self.stale.as_ref()?;
        let shared = &self.origin.shared;
        let staleness = entry.staleness(shared.clock.now());
        let past = staleness.unwrap_or(Duration::ZERO);
        if !self.head_only && past < shared.config.stale_if_error(entry) {
            return Some((Arc::clone(entry), StaleWhy::IfError));
        }
        // Only a stored response that is stale by its own freshness; a request's own `no-cache`, `max-age` or
        // `min-fresh` is never answered with a response it refused.
        (disconnected
            && self.fwd == "stale"
            && staleness.is_some()
            && past < shared.config.stale_if_disconnected(entry))
        .then(|| (Arc::clone(entry), StaleWhy::Disconnected))
    }

    /// Answers a failed refresh (an inner error, or `fwd_status`) from the stale entry, when `stale-if-error`
    /// allows, or (for an inner error: the origin could not be reached) the disconnected window does.
    pub(super) fn answer_stale<B>(
        &mut self,
        fwd_status: Option<StatusCode>,
    ) -> Option<Response<CacheBody<B>>> {
        let (entry, why) = self.stale_answer(fwd_status.is_none())?;
        self.client.as_ref()?;
        self.finish(Outcome::Stale(Arc::clone(&entry)));
        self.counted(Some(Count::Stale));
        let now = self.origin.shared.clock.now();
        let mark = Mark::Stale {
            ttl: entry.ttl_secs(now),
            why,
            fwd_status,
        };
        describe(self.origin.timing.as_ref(), mark);
        let client = self.client.as_ref()?;
        Some(stored_response(
            &self.origin.shared,
            &entry,
            client,
            mark,
            now,
        ))
    }

    /// The origin could not be reached and the stored response forbids serving it stale (`must-revalidate`,
    /// `proxy-revalidate`, `s-maxage`, `no-cache`): the client gets a `504` made by the cache (RFC 9111 §4.2.4,
    /// §5.2.2.2) instead of the origin's error. `None` when no such stored response applies.
    pub(super) fn must_revalidate_504<B>(&mut self) -> Option<Response<CacheBody<B>>> {
        let (_, entry) = self.stale.as_ref()?;
        if self.fwd != "stale" || !(entry.must_revalidate || entry.no_cache) {
            return None;
        }
        self.client.as_ref()?;
        self.finish(Outcome::Failed);
        self.counted(Some(Count::Miss));
        describe(self.origin.timing.as_ref(), Mark::Disconnected);
        Some(gateway_timeout(
            &self.origin.shared.config,
            Mark::Disconnected,
        ))
    }

    /// The origin confirmed the stored entry (`304` with its validators): the entry is refreshed
    /// (RFC 9111 §4.3.4) and answers. A `304` about another representation removes the entry.
    pub(super) async fn not_modified<B>(
        &mut self,
        head: &response::Parts,
        response_time: SystemTime,
    ) -> Option<Response<CacheBody<B>>> {
        if !self.validating || head.status != StatusCode::NOT_MODIFIED || self.client.is_none() {
            return None;
        }
        let (key, entry) = self.stale.clone()?;
        let shared = Arc::clone(&self.origin.shared);
        let deadline = self.origin.deadline.clone();
        if !conditional::same_validators(&entry.headers, &head.headers) {
            if let Err(e) = deadline.scope(shared.store.remove(&key)).await {
                shared.counters.store_error(&e);
            }
            self.detail = Some("validator-mismatch");
            return None;
        }
        let fresh = match refresh(&shared, &entry, &head.headers, &self.facts, response_time) {
            Ok(fresh) => {
                if shared.generation.load(Ordering::Acquire) == self.generation {
                    let put = put_entry(&shared, &self.origin.primary, &key, &fresh);
                    deadline.scope(put).await;
                }
                self.finish(Outcome::Filled(Arc::clone(&fresh)));
                fresh
            }
            Err((fresh, not_stored)) => {
                // The refreshed headers forbid storing (`no-store` now): serve this once, keep nothing.
                if let Err(e) = deadline.clone().scope(shared.store.remove(&key)).await {
                    shared.counters.store_error(&e);
                }
                match self.leader.take() {
                    Some(leader) if not_stored.intrinsic => {
                        mark_pass(Arc::clone(&shared), key, leader, deadline)
                    }
                    other => drop(other),
                }
                fresh
            }
        };
        self.counted(Some(Count::Revalidated));
        let mark = Mark::Revalidated { fwd: self.fwd };
        describe(self.origin.timing.as_ref(), mark);
        let client = self.client.as_ref()?;
        Some(stored_response(
            &shared,
            &fresh,
            client,
            mark,
            response_time,
        ))
    }
}

/// The stored entry updated with a `304`'s headers (RFC 9111 §4.3.4): new headers, freshness and age; the body,
/// `Vary` values and tags stay. `Err` carries the updated entry when its new headers forbid storing.
pub(super) fn refresh<St>(
    shared: &Shared<St>,
    entry: &Entry,
    not_modified: &HeaderMap,
    facts: &RequestFacts,
    response_time: SystemTime,
) -> Result<Arc<Entry>, (Arc<Entry>, storability::NotStored)> {
    let mut fresh_headers = not_modified.clone();
    storability::strip_for_storage(&mut fresh_headers);
    for name in &shared.config.tag_headers {
        fresh_headers.remove(name);
    }
    let headers = conditional::freshen(&entry.headers, &fresh_headers);
    let mut head = Response::new(()).into_parts().0;
    head.status = entry.status;
    head.headers = headers;
    // The 304 answers for the stored response, which was allowed for this request: judge it as a plain GET.
    let facts = RequestFacts {
        is_get: true,
        authorization: false,
        cookie: false,
        ..*facts
    };
    let decision = storability::decide(&facts, &head, &shared.config.policy, response_time);
    let mut fresh = Entry {
        status: entry.status,
        headers: head.headers,
        body: entry.body.clone(),
        trailers: entry.trailers.clone(),
        request_time: facts.request_time,
        response_time,
        initial_age: Duration::ZERO,
        freshness_lifetime: Duration::ZERO,
        vary: entry.vary.clone(),
        tags: entry.tags.clone(),
        public: entry.public,
        shared_with_authorization: entry.shared_with_authorization,
        no_cache: entry.no_cache,
        must_revalidate: entry.must_revalidate,
        stale_while_revalidate: entry.stale_while_revalidate,
        stale_if_error: entry.stale_if_error,
    };
    match decision {
        Ok(s) => {
            fresh.initial_age = s.initial_age;
            fresh.freshness_lifetime = s.freshness_lifetime;
            fresh.public = s.public;
            fresh.shared_with_authorization = s.shared_with_authorization;
            fresh.no_cache = s.no_cache;
            fresh.must_revalidate = s.must_revalidate;
            fresh.stale_while_revalidate = s.stale_while_revalidate;
            fresh.stale_if_error = s.stale_if_error;
            Ok(Arc::new(fresh))
        }
        Err(not_stored) => Err((Arc::new(fresh), not_stored)),
    }
}
