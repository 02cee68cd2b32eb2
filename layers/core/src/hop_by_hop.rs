//! [`strip_hop_by_hop`]: the connection-specific header fields of RFC 9110 §7.6.1.

use http::{HeaderMap, HeaderName, header};

/// Removes the fields that describe one connection rather than the message (RFC 9110 §7.6.1): the fields
/// `Connection` names, `Connection` itself, `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding` and
/// `Upgrade`. A cache must not store them and a proxy must not forward them; each adds its own extras (a cache
/// `Age`, a proxy `Trailer` and `Proxy-*`).
///
/// ```
/// use http::{HeaderMap, HeaderValue};
/// let mut h = HeaderMap::new();
/// h.insert("connection", HeaderValue::from_static("close, x-hop"));
/// h.insert("x-hop", HeaderValue::from_static("1"));
/// h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
/// h.insert("content-type", HeaderValue::from_static("text/plain"));
/// tower_kit_core::strip_hop_by_hop(&mut h);
/// assert_eq!(h.len(), 1);
/// assert!(h.contains_key("content-type"));
/// ```
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
