//! The per-request record: created in `call`, carried by the response future and then by the body, and finished
//! exactly once: at the end of the body, on a body or service error, or when dropped (client gone, panic).

use crate::{
    method,
    registry::{Common, ErrorType, Rec, Registry, RouteSlot, SeriesKey},
};
use http::HeaderMap;
use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};
// The TSC clock where the CPU has a reliable one (about 10 ns a read against 25 ns for `std` on the development
// machine), else the OS monotonic clock.
use quanta::Instant;
use tower_kit_core::{BodyEnd, BodyObserver, grpc};

/// Where the route label comes from.
pub(crate) enum Route {
    /// Known at the call (axum's `MatchedPath`, the user's mapping, or `unmatched`).
    Known(Arc<RouteSlot>),
    /// A gRPC call: its path becomes the route once the service shows it implements the method.
    GrpcPending(Box<GrpcPending>),
}

pub(crate) struct GrpcPending {
    pub(crate) uri: http::Uri,
    pub(crate) registry: Arc<Registry>,
}

pub(crate) struct RequestGuard {
    route: Route,
    /// `None` when the layer records no metrics.
    recorder: Option<Rec>,
    /// Whether this request was counted in its route's stats `active` yet.
    stats_active: bool,
    method: u8,
    /// Set while the inner future is being polled: a drop that finds it set was a panic unwinding through `poll`
    /// (tokio catches a task's panic and drops the future afterwards, when `thread::panicking()` is false again).
    pub(crate) polling: bool,
    finished: bool,
    grpc: bool,
    grpc_status: Option<u8>,
    status: u16,
    start: Instant,
    /// Taken only when something needs it (the head histogram, `Server-Timing`).
    head: Option<Duration>,
    request_size: Option<u64>,
    response_bytes: u64,
}

impl RequestGuard {
    #[inline]
    pub(crate) fn start(
        recorder: Option<Rec>,
        route: Route,
        method: usize,
        grpc: bool,
        request_size: Option<u64>,
        start: Instant,
    ) -> Self {
        let mut guard = Self {
            route,
            recorder,
            stats_active: false,
            // `method::COUNT` is 10.
            method: method as u8,
            polling: false,
            finished: false,
            grpc,
            grpc_status: None,
            status: 0,
            start,
            head: None,
            request_size,
            response_bytes: 0,
        };
        let common = guard.common();
        if let Some(recorder) = guard
            .recorder
            .as_ref()
            .and_then(|r| common.recorders.get(r))
        {
            recorder.active[method].increment(1.0);
        }
        guard.count_active();
        guard
    }

    #[inline]
    fn common(&self) -> &Common {
        match &self.route {
            Route::Known(slot) => &slot.common,
            Route::GrpcPending(pending) => &pending.registry.common,
        }
    }

    pub(crate) fn is_head_request(&self) -> bool {
        usize::from(self.method) == method::HEAD
    }

    #[inline]
    fn count_active(&mut self) {
        if let Route::Known(slot) = &self.route
            && slot.common.config.stats
        {
            slot.method(usize::from(self.method))
                .stats
                .active
                .fetch_add(1, Relaxed);
            self.stats_active = true;
        }
    }

    /// The response head is ready: note the status and (for gRPC) whether the method exists, and the time when the
    /// head histogram records it or `server_timing` asks for it (which is then returned).
    #[inline]
    pub(crate) fn on_head(
        &mut self,
        status: http::StatusCode,
        headers: &HeaderMap,
        server_timing: bool,
    ) -> Option<Duration> {
        let config = &self.common().config;
        if server_timing || (config.metrics && config.head_duration) {
            self.head = Some(self.start.elapsed());
        }
        self.status = status.as_u16();
        if self.grpc {
            self.grpc_status = grpc::status_code(headers);
        }
        if let Route::GrpcPending(pending) = &self.route {
            self.grpc_route(pending.uri.path().to_owned(), Arc::clone(&pending.registry));
        }
        self.head
    }

    #[cold]
    fn grpc_route(&mut self, path: String, registry: Arc<Registry>) {
        // A trailers-only UNIMPLEMENTED answer means no such method: its path must not become a label value.
        let slot = if self.grpc_status == Some(12) {
            Arc::clone(&registry.unmatched)
        } else {
            registry.route(&path, self.recorder.as_ref())
        };
        self.route = Route::Known(slot);
        self.count_active();
    }

    fn finish(&mut self, error: ErrorType) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let total = self.start.elapsed();
        let method = usize::from(self.method);
        let route: &RouteSlot = match &self.route {
            Route::Known(slot) => slot,
            // No head ever came: we cannot tell whether the method exists.
            Route::GrpcPending(pending) => &pending.registry.unmatched,
        };
        let common = &*route.common;
        let config = &common.config;
        let error = match error {
            ErrorType::None if self.status >= 500 => ErrorType::Status,
            other => other,
        };
        if let Some(recorder) = self.recorder.as_ref().and_then(|r| common.recorders.get(r)) {
            recorder.active[method].decrement(1.0);
            let key = SeriesKey {
                status: self.status,
                error,
                grpc_status: self.grpc_status,
            };
            let (head, req, resp) = (self.head, self.request_size, self.response_bytes);
            route.with_series(method, key, recorder, |series| {
                series.duration.record(total.as_secs_f64());
                if let (Some(histogram), Some(head)) = (&series.head_duration, head) {
                    histogram.record(head.as_secs_f64());
                }
                if let (Some(histogram), Some(req)) = (&series.request_size, req) {
                    histogram.record(req as f64);
                }
                if let Some(histogram) = &series.response_size {
                    histogram.record(resp as f64);
                }
            });
        }
        let is_error = error != ErrorType::None
            || self
                .grpc_status
                .is_some_and(|c| matches!(c, 2 | 4 | 12 | 13 | 14 | 15));
        if config.stats {
            let stats = &route.method(method).stats;
            if self.stats_active {
                stats.active.fetch_sub(1, Relaxed);
            }
            stats.record(total, is_error);
        }
        let threshold = *route
            .slow_threshold
            .get_or_init(|| config.slow_threshold_for(&route.name));
        if let Some(threshold) = threshold
            && total >= threshold
        {
            slow_request(route, method, self.status, error, total, threshold);
        }
    }

    pub(crate) fn service_error(mut self) {
        self.finish(ErrorType::ServiceError);
    }
}

#[cold]
fn slow_request(
    route: &RouteSlot,
    method: usize,
    status: u16,
    error: ErrorType,
    total: Duration,
    threshold: Duration,
) {
    tracing::warn!(
        http.request.method = method::LABELS[method],
        http.route = &*route.name,
        http.response.status_code = status,
        error.type = ?error,
        duration_ms = total.as_secs_f64() * 1000.0,
        threshold_ms = threshold.as_secs_f64() * 1000.0,
        "slow request"
    );
}

impl BodyObserver for RequestGuard {
    #[inline]
    fn on_data(&mut self, len: usize) {
        self.response_bytes += len as u64;
    }

    fn on_trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc
            && let Some(code) = grpc::status_code(trailers)
        {
            self.grpc_status = Some(code);
        }
    }

    fn on_end(mut self, end: BodyEnd) {
        self.finish(match end {
            BodyEnd::Completed => ErrorType::None,
            BodyEnd::Errored => ErrorType::BodyError,
            BodyEnd::Aborted => ErrorType::Aborted,
        });
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        // Only reached without an ending when the response future was dropped before the head (the client went
        // away, or a timeout outside cancelled it) or a panic unwound through it.
        self.finish(if self.polling || std::thread::panicking() {
            ErrorType::Panic
        } else {
            ErrorType::Aborted
        });
    }
}
