//! gRPC detection and gRPC-shaped refusals.
//!
//! A gRPC client reads its status from `grpc-status`, not from the HTTP status, so a layer that refuses a gRPC call
//! answers HTTP 200 with `grpc-status` and `grpc-message` in the headers (a "trailers-only" response).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header::CONTENT_TYPE};

/// gRPC status `RESOURCE_EXHAUSTED` (8): a quota or a concurrency limit was reached.
pub const RESOURCE_EXHAUSTED: u8 = 8;
/// gRPC status `UNAVAILABLE` (14): the service cannot take the call now; the client may retry.
pub const UNAVAILABLE: u8 = 14;

/// Whether the request is a gRPC call (`content-type: application/grpc`, with or without `+proto` and the like).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+') | Some(b';'))
    })
}

/// A trailers-only gRPC response: HTTP 200, `content-type: application/grpc`, `grpc-status: <code>` and
/// `grpc-message` (percent-encoded as the gRPC spec says), with an empty body.
pub fn refusal<B: From<Bytes>>(code: u8, message: &str) -> Response<B> {
    let mut response = Response::new(B::from(Bytes::new()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", v);
    }
    response
}

/// The gRPC status code of a response or trailer map, if `grpc-status` is present and valid.
pub fn status_code(headers: &HeaderMap) -> Option<u8> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    v.parse().ok().filter(|c| *c <= 16)
}

fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[test]
    fn detects_grpc_content_types() {
        let mut h = HeaderMap::new();
        for (ct, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json", true),
            ("application/grpc-web", false),
            ("application/grpcx", false),
            ("application/json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), want, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn refusal_shape() {
        let r: Response<Full<Bytes>> = refusal(RESOURCE_EXHAUSTED, "rate limited: 50% über");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(r.headers()["content-type"], "application/grpc");
        assert_eq!(r.headers()["grpc-message"], "rate limited: 50%25 %C3%BCber");
        assert_eq!(status_code(r.headers()), Some(8));
    }

    #[test]
    fn status_code_rejects_garbage() {
        let mut h = HeaderMap::new();
        for bad in ["x", "17", "-1", ""] {
            h.insert("grpc-status", HeaderValue::from_static(bad));
            assert_eq!(status_code(&h), None, "{bad}");
        }
    }
}
