//! The names of the metrics and labels the layer records, for dashboards, alerts and tests.
//!
//! Metric names follow the OpenTelemetry HTTP server semantic conventions. A Prometheus exporter with recommended
//! naming renders `http.server.request.duration` (unit: seconds) as `http_server_request_duration_seconds` and label
//! names such as `http.route` as `http_route`.

/// Histogram, seconds: from the call to the end of the response body (or its error, or the client going away).
pub const REQUEST_DURATION: &str = "http.server.request.duration";
/// Histogram, seconds: from the call until the inner service returned the response head (time to first byte).
pub const REQUEST_HEAD_DURATION: &str = "http.server.request.head_duration";
/// Gauge: requests whose response body has not ended yet. Labelled by method only, as OpenTelemetry says.
pub const ACTIVE_REQUESTS: &str = "http.server.active_requests";
/// Histogram, bytes: the request body size, from `Content-Length` (requests without one are not recorded).
pub const REQUEST_BODY_SIZE: &str = "http.server.request.body.size";
/// Histogram, bytes: the response body bytes actually produced.
pub const RESPONSE_BODY_SIZE: &str = "http.server.response.body.size";
/// Counter: label values replaced by [`OTHER_ROUTE`] because the cap on distinct values was reached.
pub const LABEL_OVERFLOW: &str = "tower_kit.timing.label_overflow";

/// Label: the request method; methods outside the standard nine are [`OTHER_METHOD`].
pub const METHOD: &str = "http.request.method";
/// Label: the route template (`/api/items/{id}`), never the raw path.
pub const ROUTE: &str = "http.route";
/// Label: the response status code. Absent when there was no response (the service failed or was cancelled).
pub const STATUS_CODE: &str = "http.response.status_code";
/// Label: why the request failed; absent when it did not. Values: `aborted` (the client went away before the end of
/// the body), `body_error`, `service_error` (the inner service returned an error), `panic`, or the status code for
/// 5xx responses.
pub const ERROR_TYPE: &str = "error.type";
/// Label on gRPC requests: the gRPC status code, from the response headers or trailers.
pub const GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// Label on [`LABEL_OVERFLOW`]: which label overflowed.
pub const LABEL: &str = "label";

/// Route value for requests no route matched (and gRPC calls to unimplemented methods).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Route value once the cap on distinct route values is reached.
pub const OTHER_ROUTE: &str = "__other__";
/// Method value for non-standard methods.
pub const OTHER_METHOD: &str = "_OTHER";
