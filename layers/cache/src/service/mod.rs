//! `Cache<S>`: looks a request up, answers hits itself, coalesces misses, and stores what the origin allows.
//!
//! - `mod.rs`: the service, its `call` (a fresh hit answered at once, else [`serve`]) and the responses built
//!   from stored entries.
//! - [`lookup`]: finding an entry (through a `Vary` record) and what it can do for a request (RFC 9111 §4.2).
//! - [`plan`]: what to do with a request: serve, serve stale while revalidating, or forward (coalesced with
//!   other requests and other servers).
//! - [`forward`]: the origin call and the decision to store its response while it streams.
//! - [`revalidate`]: conditional requests to the origin, `304` refreshes (RFC 9111 §4.3.4), `stale-if-error` and
//!   background revalidation.
//! - [`invalidate`]: what a response invalidates: unsafe methods (§4.4) and `HEAD` with new validators (§4.3.5).

mod forward;
mod invalidate;
mod lookup;
mod plan;
// The range logic is its own module of the crate; declared here until `lib.rs` lists it.
#[path = "../range.rs"]
pub(crate) mod range;
mod revalidate;

use crate::{
    body::CacheBody,
    conditional,
    control::RequestDirectives,
    entry::{Entry, StoredValue},
    future::ResponseFuture,
    layer::{Config, Shared},
    stats::Outcome as Count,
    status::{self, Mark, StaleWhy},
    store::{MokaStore, Store, deadline::Deadline},
    vary,
};
use bytes::Buf;
use http::{HeaderValue, Method, Request, Response, StatusCode, header, request::Parts};
use http_body::Body;
use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::SystemTime,
};
use tower_kit_core::ServerTiming;
use tower_service::Service;

use forward::{Origin, forward};
use plan::{Forward, Plan, plan};

/// The cache service made by [`CacheLayer`](crate::CacheLayer).
pub struct Cache<S, St = MokaStore> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S, St> Cache<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    tower_kit_core::inner_service_accessors!();
}

impl<S, St: Store> Cache<S, St> {
    /// The handle of the cache this service belongs to (the same as its layer's
    /// [`handle`](crate::CacheLayer::handle)).
    pub fn handle(&self) -> crate::CacheHandle<St> {
        crate::CacheHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Clone, St> Clone for Cache<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Cache<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, St, ReqB, ResB> Service<Request<ReqB>> for Cache<S, St>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let (parts, body) = req.into_parts();
        let primary = (parts.method == Method::GET || parts.method == Method::HEAD)
            .then(|| self.shared.config.key.primary(&parts));
        if let Some(primary) = &primary
            && let Some(response) = hit_now(&self.shared, &parts, primary)
        {
            // Answered without waiting: the inner service stays ready for the next request.
            return ResponseFuture::ready(response);
        }
        // The ready service handles this request; a clone waits for the next `poll_ready`.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(serve(
            Arc::clone(&self.shared),
            inner,
            Request::from_parts(parts, body),
            primary,
        )))
    }
}

/// A fresh hit the store can give without waiting (moka), served inside `call`, for a request without
/// `Cache-Control` or `Pragma`. `None` sends the request down the general path, which also records store errors.
fn hit_now<St: Store, B>(
    shared: &Shared<St>,
    parts: &Parts,
    primary: &str,
) -> Option<Response<CacheBody<B>>> {
    if parts.headers.contains_key(header::CACHE_CONTROL)
        || parts.headers.contains_key(header::PRAGMA)
    {
        return None;
    }
    let entry = match shared.store.get_now(primary)?.ok()?? {
        StoredValue::Response(entry) => entry,
        StoredValue::Variants(v) => {
            let values = vary::values(&v.headers, &parts.headers, &shared.config.key.vary);
            let key = vary::secondary_key(primary, &v.headers, &values);
            match shared.store.get_now(&key)?.ok()?? {
                StoredValue::Response(entry) => entry,
                _ => return None,
            }
        }
        StoredValue::Pass { .. } => return None,
    };
    let now = shared.clock.now();
    if entry.no_cache
        || !entry.is_fresh(now)
        || !allowed(&shared.config, parts, &entry)
        || !answers(&shared.config, parts, &entry)
    {
        return None;
    }
    shared.counters.count(Count::Hit);
    let mark = Mark::Hit {
        ttl: entry.ttl_secs(now),
    };
    describe(parts.extensions.get::<ServerTiming>(), mark);
    Some(stored_response(shared, &entry, parts, mark, now))
}

/// Adds the cache's Server-Timing entry (`cache;desc=hit`, ...) when the timing layer provides the context.
fn describe(timing: Option<&ServerTiming>, mark: Mark) {
    if let Some(timing) = timing {
        timing.describe("cache", mark.timing());
    }
}

/// Whether a stored entry may be served to this request (the `Authorization` and `Cookie` rules).
fn allowed(config: &Config, parts: &Parts, entry: &Entry) -> bool {
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let cookie = config.policy.cookie_bypass && parts.headers.contains_key(header::COOKIE);
    (!authorization || entry.shared_with_authorization) && (!cookie || entry.public)
}

/// Whether a stored entry can answer this request at all: a stored `206` part only a range wholly inside it
/// (RFC 9111 §3.3), and only while ranges are on; anything else, always.
fn answers(config: &Config, parts: &Parts, entry: &Entry) -> bool {
    entry.status != StatusCode::PARTIAL_CONTENT
        || (config.ranges
            && range::serve(
                &parts.method,
                &parts.headers,
                entry.status,
                &entry.headers,
                entry.body.len(),
            ) != range::Serve::Elsewhere)
}

/// The general path: plans the request (on the request's Redis deadline) and carries the plan out.
async fn serve<S, St, ReqB, ResB>(
    shared: Arc<Shared<St>>,
    inner: S,
    request: Request<ReqB>,
    primary: Option<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + 'static,
    ResB::Data: Buf + Send,
{
    let (parts, body) = request.into_parts();
    let directives = RequestDirectives::parse(&parts.headers);
    // One Redis deadline for every store call of this request (lookup, lease, fill, invalidation), never around
    // the origin call.
    let deadline = Deadline::new();
    let plan = match &primary {
        Some(primary) => {
            deadline
                .clone()
                .scope(plan(&shared, &parts, primary, &directives))
                .await
        }
        None => Plan::Forward(Forward::new("method", Count::Bypass)),
    };
    let timing = parts.extensions.get::<ServerTiming>().cloned();
    match plan {
        Plan::Serve { entry, count, mark } => {
            shared.counters.count(count);
            describe(timing.as_ref(), mark);
            let now = shared.clock.now();
            Ok(stored_response(&shared, &entry, &parts, mark, now))
        }
        Plan::OnlyIfCached => {
            shared.counters.count(Count::Miss);
            describe(timing.as_ref(), Mark::OnlyIfCached);
            Ok(gateway_timeout(&shared.config, Mark::OnlyIfCached))
        }
        Plan::WhileRevalidate { entry, key, leader } => {
            shared.counters.count(Count::Stale);
            let now = shared.clock.now();
            let mark = Mark::Stale {
                ttl: entry.ttl_secs(now),
                why: StaleWhy::WhileRevalidate,
                fwd_status: None,
            };
            describe(timing.as_ref(), mark);
            let response = stored_response(&shared, &entry, &parts, mark, now);
            if let Some(leader) = leader {
                let origin = Origin {
                    shared,
                    primary: primary.unwrap_or_default(),
                    timing: None,
                    // A request of its own, on a deadline of its own (made on its task).
                    deadline: Deadline::new(),
                };
                let stale = revalidate::StaleEntry { key, entry };
                let request = Request::from_parts(parts, body);
                revalidate::in_background(origin, inner, request, stale, leader);
            }
            Ok(response)
        }
        Plan::Forward(plan) => {
            let origin = Origin {
                shared,
                primary: primary.unwrap_or_default(),
                timing,
                deadline,
            };
            forward(origin, inner, Request::from_parts(parts, body), plan).await
        }
    }
}

/// A `504` made by the cache: `only-if-cached` and nothing stored fits (RFC 9111 §5.2.1.7), or the origin could
/// not be reached and the stored response must be validated (§4.2.4).
fn gateway_timeout<B>(config: &Config, mark: Mark) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    status::mark(
        response.headers_mut(),
        &config.status_name,
        mark,
        config.x_cache,
    );
    response
}

/// A response built from a stored entry: `304 Not Modified` when the request's `If-None-Match` or
/// `If-Modified-Since` is satisfied by it, else the stored response (without a body for HEAD).
fn stored_response<St, B>(
    shared: &Shared<St>,
    entry: &Entry,
    request: &Parts,
    mark: Mark,
    now: SystemTime,
) -> Response<CacheBody<B>> {
    let not_modified = conditional::is_conditional(&request.headers)
        && conditional::not_modified(
            &request.headers,
            entry.status,
            &entry.headers,
            entry.response_time,
        );
    let mut response = if not_modified {
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = conditional::headers_for_304(&entry.headers);
        response
    } else {
        // One header lookup on a plain hit; a stored part is always cut to the range asked.
        let ranged = entry.status == StatusCode::PARTIAL_CONTENT
            || (shared.config.ranges && request.headers.contains_key(header::RANGE));
        let serve = if ranged {
            range::serve(
                &request.method,
                &request.headers,
                entry.status,
                &entry.headers,
                entry.body.len(),
            )
        } else {
            range::Serve::Whole
        };
        match serve {
            range::Serve::Range(part) => partial_response(entry, part),
            range::Serve::Unsatisfiable { complete } => unsatisfiable_response(entry, complete),
            range::Serve::Whole | range::Serve::Elsewhere => {
                let body = if request.method == Method::HEAD {
                    CacheBody::empty()
                } else {
                    CacheBody::cached(entry.body.clone(), entry.trailers.clone())
                };
                let mut response = Response::new(body);
                *response.status_mut() = entry.status;
                *response.headers_mut() = entry.headers.clone();
                response
            }
        }
    };
    let headers = response.headers_mut();
    shared.config.strip_targeted(headers);
    status::set_age(headers, entry.age(now).as_secs());
    status::mark(
        headers,
        &shared.config.status_name,
        mark,
        shared.config.x_cache,
    );
    response
}

/// `206 Partial Content` with `part` of a stored response (RFC 9110 §15.3.7): its headers, the part's
/// `Content-Range` and `Content-Length`, no trailers.
fn partial_response<B>(entry: &Entry, part: range::Part) -> Response<CacheBody<B>> {
    let held_first = if entry.status == StatusCode::PARTIAL_CONTENT {
        range::part(&entry.headers).map_or(0, |held| held.first)
    } else {
        0
    };
    let body = range::slice(&entry.body, held_first, part);
    let mut headers = entry.headers.clone();
    headers.insert(header::CONTENT_RANGE, range::content_range(part));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut response = Response::new(CacheBody::cached(body, None));
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    *response.headers_mut() = headers;
    response
}

/// `416 Range Not Satisfiable` for a stored representation of `complete` bytes (RFC 9110 §15.5.17): no content,
/// `Content-Range: bytes */complete`, the stored response's other headers.
fn unsatisfiable_response<B>(entry: &Entry, complete: u64) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    let mut headers = entry.headers.clone();
    for name in [header::CONTENT_TYPE, header::CONTENT_ENCODING] {
        headers.remove(name);
    }
    headers.insert(header::CONTENT_RANGE, range::unsatisfied_range(complete));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    *response.headers_mut() = headers;
    response
}
