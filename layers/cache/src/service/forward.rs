//! Forwarding a request to the origin, and storing the response (if it allows) while it streams to the client.

use super::{describe, invalidate::is_unsafe, plan::Forward, revalidate::is_error_status};
use crate::{
    body::{CacheBody, Fill, FillSink},
    coalesce::{Leader, Outcome},
    conditional,
    entry::Entry,
    fill::{StoreFill, Template, mark_pass},
    layer::Shared,
    stats::Outcome as Count,
    status::{self, Mark},
    storability::{self, RequestFacts, Storable},
    store::{Store, deadline::Deadline},
    vary,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header, request, response};
use http_body::Body;
use std::{
    sync::{Arc, atomic::Ordering},
    time::SystemTime,
};
use tower_kit_core::{ServerTiming, content_length};
use tower_service::Service;

/// Where a forwarded request's answer goes: the cache, the primary key, the client's Server-Timing context and
/// the request's Redis deadline for every store call (never around the origin call).
pub(super) struct Origin<St> {
    pub(super) shared: Arc<Shared<St>>,
    pub(super) primary: String,
    pub(super) timing: Option<ServerTiming>,
    pub(super) deadline: Deadline,
}

/// A forwarded request, from the origin call to the response: what its plan and the request left to decide.
pub(super) struct Exchange<St> {
    pub(super) origin: Origin<St>,
    /// The key to store under (and coalesce on), when the plan stores.
    pub(super) store: Option<String>,
    pub(super) leader: Option<Leader>,
    pub(super) fwd: &'static str,
    pub(super) detail: Option<&'static str>,
    pub(super) count: Option<Count>,
    pub(super) stale: Option<(String, Arc<Entry>)>,
    /// The stored `206` part this range request could not be answered from: a new part may be combined with it.
    pub(super) partial: Option<Arc<Entry>>,
    /// The client's own request head: its preconditions are answered from a refreshed entry, an unsafe
    /// method's target is invalidated, `Vary` values are taken from it.
    pub(super) client: Option<request::Parts>,
    /// What storing needs from the request, taken before the request moves into the inner service.
    pub(super) facts: RequestFacts,
    /// The request URI for the tag closure.
    pub(super) uri: Option<Uri>,
    pub(super) head_only: bool,
    /// The cache's invalidation generation when the request started: a fill that started before an
    /// invalidation is not stored.
    pub(super) generation: u64,
    /// Whether the request went out with the stored entry's validators.
    pub(super) validating: bool,
}

impl<St: Store> Exchange<St> {
    fn new(origin: Origin<St>, parts: &mut request::Parts, plan: Forward) -> Self {
        let Forward {
            store,
            fwd,
            detail,
            count,
            stale,
            partial,
        } = plan;
        let shared = &origin.shared;
        let config = &shared.config;
        let head_only = parts.method == Method::HEAD;
        let request_time = shared.clock.now();
        let facts = RequestFacts::new(
            &parts.method,
            &parts.headers,
            config.default_ttl(parts),
            request_time,
        );
        let client = (store.is_some() || stale.is_some() || is_unsafe(&parts.method)).then(|| {
            let mut head = Request::new(()).into_parts().0;
            head.method = parts.method.clone();
            head.uri = parts.uri.clone();
            head.headers = parts.headers.clone();
            head
        });
        let uri = (store.is_some() && config.tag_fn.is_some()).then(|| parts.uri.clone());
        // Validate a stored entry with the origin: the entry's validators replace the client's.
        let validating = match &stale {
            Some((_, entry)) if !head_only => {
                conditional::set_validators(&mut parts.headers, &entry.headers)
            }
            _ => false,
        };
        let (store, leader) = match store {
            Some(s) => (Some(s.coalesce_key), s.leader),
            None => (None, None),
        };
        Self {
            generation: shared.generation.load(Ordering::Acquire),
            origin,
            store,
            leader,
            fwd,
            detail,
            count,
            stale,
            partial,
            client,
            facts,
            uri,
            head_only,
            validating,
        }
    }

    /// Tells the requests waiting on this one (if it leads a flight) how it ended.
    pub(super) fn finish(&mut self, outcome: Outcome) {
        if let Some(leader) = self.leader.take() {
            leader.finish(outcome);
        }
    }

    /// Counts the request (a background revalidation counts nothing), as `count` when given, else as planned.
    pub(super) fn counted(&mut self, count: Option<Count>) {
        if let Some(planned) = self.count.take() {
            self.origin.shared.counters.count(count.unwrap_or(planned));
        }
    }
}

/// Sends the request to the origin and turns its answer into the client's response: refreshed or stale entries,
/// invalidations, and a body stored while it streams.
pub(super) async fn forward<S, St, ReqB, ResB>(
    origin: Origin<St>,
    mut inner: S,
    request: Request<ReqB>,
    plan: Forward,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    St: Store,
    ResB: Body,
{
    let (mut parts, body) = request.into_parts();
    let mut exchange = Exchange::new(origin, &mut parts, plan);
    let (head, body) = match inner.call(Request::from_parts(parts, body)).await {
        Ok(response) => response.into_parts(),
        Err(e) => {
            // No response at all: the origin could not be reached (RFC 9111 §4.2.4, "disconnected").
            if let Some(response) = exchange.answer_stale(None) {
                return Ok(response);
            }
            if let Some(response) = exchange.must_revalidate_504() {
                return Ok(response);
            }
            exchange.finish(Outcome::Failed);
            exchange.counted(None);
            return Err(e);
        }
    };
    let response_time = exchange.origin.shared.clock.now();
    if let Some(response) = exchange.not_modified(&head, response_time).await {
        return Ok(response);
    }
    // The refresh failed: a stale entry within `stale-if-error` answers instead of the error.
    if is_error_status(head.status)
        && let Some(response) = exchange.answer_stale(Some(head.status))
    {
        drop(body);
        return Ok(response);
    }
    exchange.invalidate(&head).await;
    exchange.counted(None);
    Ok(exchange.respond(head, body, response_time))
}

impl<St: Store> Exchange<St> {
    /// The client's response: the origin's, marked, with its body stored as it streams when the response allows.
    fn respond<B: Body>(
        mut self,
        mut head: response::Parts,
        body: B,
        response_time: SystemTime,
    ) -> Response<CacheBody<B>> {
        let config = &self.origin.shared.config;
        let mut tags = Vec::new();
        if self.store.is_some() {
            storability::tags_from(&head.headers, &config.tag_headers, &mut tags);
            if let (Some(f), Some(uri)) = (&config.tag_fn, &self.uri) {
                tags.extend(f(uri, &head));
            }
        }
        if config.strip_tag_headers {
            for name in &config.tag_headers {
                head.headers.remove(name);
            }
        }
        let body = match (self.store.take(), self.client.take()) {
            (Some(coalesce_key), Some(client)) => {
                let target = Fillable {
                    coalesce_key,
                    client: &client,
                    tags,
                    response_time,
                };
                self.fill(&head, body, target)
            }
            _ => CacheBody::inner(body),
        };
        let mark = Mark::Forward {
            fwd: self.fwd,
            status: head.status,
            detail: self.detail,
        };
        describe(self.origin.timing.as_ref(), mark);
        let config = &self.origin.shared.config;
        // After the fill: the stored response keeps its targeted fields.
        config.strip_targeted(&mut head.headers);
        status::mark(&mut head.headers, &config.status_name, mark, config.x_cache);
        Response::from_parts(head, body)
    }

    /// The body, teed into the store when the response may be stored; else why not goes into `detail`.
    fn fill<B: Body>(
        &mut self,
        head: &response::Parts,
        body: B,
        target: Fillable<'_>,
    ) -> CacheBody<B> {
        let shared = &self.origin.shared;
        let config = &shared.config;
        let content_length = content_length(&head.headers);
        let decision = match decide(&self.facts, head, config, target.response_time) {
            Ok(_) if content_length.is_some_and(|n| n > config.max_entry_size as u64) => {
                Err(storability::NotStored {
                    reason: "too-big",
                    intrinsic: true,
                })
            }
            other => other,
        };
        let storable = match decision {
            Ok(storable) => storable,
            Err(not_stored) => {
                self.detail = self.detail.or(Some(not_stored.reason));
                // A reason of this request's own (not the response's) drops the leader: waiters look again.
                if let Some(leader) = self.leader.take()
                    && not_stored.intrinsic
                {
                    let deadline = self.origin.deadline.clone();
                    mark_pass(Arc::clone(shared), target.coalesce_key, leader, deadline);
                }
                return CacheBody::inner(body);
            }
        };
        let (store_key, template) = self.template(
            head,
            storable,
            target.client,
            target.tags,
            target.response_time,
        );
        // A new part is combined with the stored response it continues or belongs to (RFC 9111 §3.4): the part
        // this request could not be answered from, or the stale entry it revalidated.
        let combine = (head.status == StatusCode::PARTIAL_CONTENT)
            .then(|| {
                self.partial
                    .take()
                    .or_else(|| self.stale.as_ref().map(|(_, e)| Arc::clone(e)))
            })
            .flatten();
        let sink = StoreFill {
            combine,
            shared: Arc::clone(shared),
            template,
            primary: self.origin.primary.clone(),
            store_key,
            coalesce_key: target.coalesce_key,
            leader: self.leader.take(),
            generation: self.generation,
            deadline: self.origin.deadline.clone(),
        };
        if body.is_end_stream() {
            // An empty body (a 204, `Full` of nothing) that a server will never poll: it is whole now.
            Box::new(sink).complete(bytes::Bytes::new(), None);
            CacheBody::inner(body)
        } else {
            let fill = Fill::new(Box::new(sink), config.max_entry_size, content_length);
            CacheBody::tee(body, fill)
        }
    }

    /// The key to store under (the secondary key of the response's `Vary` values) and the entry without its body.
    fn template(
        &self,
        head: &response::Parts,
        storable: Storable,
        client: &request::Parts,
        tags: Vec<String>,
        response_time: SystemTime,
    ) -> (String, Template) {
        let primary = &self.origin.primary;
        let vary: Vec<_> = storable
            .vary
            .iter()
            .map(|name| {
                let normalizers = &self.origin.shared.config.key.vary;
                (
                    name.clone(),
                    vary::normalised(name, &client.headers, normalizers),
                )
            })
            .collect();
        let store_key = if vary.is_empty() {
            primary.clone()
        } else {
            let names: Vec<_> = vary.iter().map(|(n, _)| n.clone()).collect();
            let values: Vec<_> = vary.iter().map(|(_, v)| v.clone()).collect();
            vary::secondary_key(primary, &names, &values)
        };
        let mut headers = head.headers.clone();
        storability::strip_for_storage(&mut headers);
        if self.origin.shared.config.policy.strip_set_cookie {
            headers.remove(header::SET_COOKIE);
        }
        if self.origin.shared.config.ranges && head.status == StatusCode::OK {
            // The cache answers ranges from a complete stored response itself.
            headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        }
        let template = Template {
            status: head.status,
            headers,
            request_time: self.facts.request_time,
            response_time,
            initial_age: storable.initial_age,
            freshness_lifetime: storable.freshness_lifetime,
            vary,
            tags,
            public: storable.public,
            shared_with_authorization: storable.shared_with_authorization,
            no_cache: storable.no_cache,
            must_revalidate: storable.must_revalidate,
            stale_while_revalidate: storable.stale_while_revalidate,
            stale_if_error: storable.stale_if_error,
        };
        (store_key, template)
    }
}

/// Whether a response may be stored (RFC 9111 §3). A single-part `206` with a known complete length (RFC 9111
/// §3.3) is judged as its `200` would be, while ranges are on; a `206` is otherwise never stored.
fn decide(
    facts: &RequestFacts,
    head: &response::Parts,
    config: &crate::layer::Config,
    response_time: SystemTime,
) -> Result<Storable, storability::NotStored> {
    if head.status == StatusCode::PARTIAL_CONTENT {
        if !config.ranges || super::range::part(&head.headers).is_none() {
            // The answer to this request's range, not to the URL: no hit-for-pass.
            return Err(storability::NotStored {
                reason: "status",
                intrinsic: false,
            });
        }
        let mut whole = Response::new(()).into_parts().0;
        whole.version = head.version;
        whole.headers = head.headers.clone();
        return storability::decide(facts, &whole, &config.policy, response_time);
    }
    storability::decide(facts, head, &config.policy, response_time)
}

/// A response the plan stores: the key it coalesces on, the client's request head, its tags and when it came.
struct Fillable<'a> {
    coalesce_key: String,
    client: &'a request::Parts,
    tags: Vec<String>,
    response_time: SystemTime,
}
