//! The per-request record: created in `call`, carried by the response future and then by the body, and finished
//! exactly once: at the end of the body, on a body or service error, or when dropped (client gone, panic).

use crate::{
    layer::Shared,
    method,
    registry::{ErrorType, RecorderState, RouteSlot, SeriesKey},
};
use http::HeaderMap;
use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};
use tower_kit_core::{BodyEnd, BodyObserver, grpc};

/// Where the route label comes from.
pub(crate) enum Route {
    /// Known at the call (axum's `MatchedPath`, the user's mapping, or `unmatched`).
    Known(Arc<RouteSlot>),
    /// A gRPC call: its path becomes the route once the service shows it implements the method.
    GrpcPending(http::Uri),
}

pub(crate) struct RequestGuard {
    shared: Arc<Shared>,
    /// `None` when the layer records no metrics.
    recorder: Option<Arc<RecorderState>>,
    route: Route,
    /// Whether this request was counted in its route's stats `active` yet.
    stats_active: bool,
    method: usize,
    start: Instant,
    head: Option<Duration>,
    status: u16,
    grpc: bool,
    grpc_status: Option<u8>,
    request_size: Option<u64>,
    response_bytes: u64,
    /// Set while the inner future is being polled: a drop that finds it set was a panic unwinding through `poll`
    /// (tokio catches a task's panic and drops the future afterwards, when `thread::panicking()` is false again).
    pub(crate) polling: bool,
    finished: bool,
}

impl RequestGuard {
    pub(crate) fn start(
        shared: Arc<Shared>,
        recorder: Option<Arc<RecorderState>>,
        route: Route,
        method: usize,
        grpc: bool,
        request_size: Option<u64>,
        start: Instant,
    ) -> Self {
        if let Some(recorder) = &recorder {
            recorder.active[method].increment(1.0);
        }
        let mut guard = Self {
            shared,
            recorder,
            route,
            stats_active: false,
            method,
            start,
            head: None,
            status: 0,
            grpc,
            grpc_status: None,
            request_size,
            response_bytes: 0,
            polling: false,
            finished: false,
        };
        guard.count_active();
        guard
    }

    pub(crate) fn is_head_request(&self) -> bool {
        self.method == method::HEAD
    }

    fn count_active(&mut self) {
        if self.shared.config.stats
            && let Route::Known(slot) = &self.route
        {
            slot.method(self.method).stats.active.fetch_add(1, Relaxed);
            self.stats_active = true;
        }
    }

    /// The response head is ready: note the time, the status and (for gRPC) whether the method exists.
    pub(crate) fn on_head(&mut self, status: http::StatusCode, headers: &HeaderMap) -> Duration {
        let elapsed = self.start.elapsed();
        self.head = Some(elapsed);
        self.status = status.as_u16();
        if self.grpc {
            self.grpc_status = grpc::status_code(headers);
        }
        if let Route::GrpcPending(uri) = &self.route {
            // A trailers-only UNIMPLEMENTED answer means no such method: its path must not become a label value.
            let slot = if self.grpc_status == Some(12) {
                Arc::clone(&self.shared.registry.unmatched)
            } else {
                self.shared
                    .registry
                    .route(uri.path(), self.recorder.as_deref())
            };
            self.route = Route::Known(slot);
            self.count_active();
        }
        elapsed
    }

    fn finish(&mut self, error: ErrorType) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let total = self.start.elapsed();
        if let Some(recorder) = &self.recorder {
            recorder.active[self.method].decrement(1.0);
        }
        let registry = &self.shared.registry;
        let route = match &self.route {
            Route::Known(slot) => Arc::clone(slot),
            // No head ever came: we cannot tell whether the method exists.
            Route::GrpcPending(_) => Arc::clone(&registry.unmatched),
        };
        let error = match error {
            ErrorType::None if self.status >= 500 => ErrorType::Status,
            other => other,
        };
        let key = SeriesKey {
            status: self.status,
            error,
            grpc_status: self.grpc_status,
        };
        let config = &self.shared.config;
        if let Some(recorder) = &self.recorder {
            let (head, req, resp) = (self.head, self.request_size, self.response_bytes);
            registry.with_series(&route, self.method, key, recorder, |series| {
                series.duration.record(total.as_secs_f64());
                if let Some(head) = head {
                    series.head_duration.record(head.as_secs_f64());
                }
                if let Some(req) = req {
                    series.request_size.record(req as f64);
                }
                series.response_size.record(resp as f64);
            });
        }
        let is_error = error != ErrorType::None
            || self
                .grpc_status
                .is_some_and(|c| matches!(c, 2 | 4 | 12 | 13 | 14 | 15));
        if config.stats {
            let stats = &route.method(self.method).stats;
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
            tracing::warn!(
                http.request.method = method::LABELS[self.method],
                http.route = &*route.name,
                http.response.status_code = self.status,
                error.type = ?error,
                duration_ms = total.as_secs_f64() * 1000.0,
                threshold_ms = threshold.as_secs_f64() * 1000.0,
                "slow request"
            );
        }
    }

    pub(crate) fn service_error(mut self) {
        self.finish(ErrorType::ServiceError);
    }
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
