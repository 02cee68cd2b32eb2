//! Ready-made key functions for [`per_key`](crate::ConcurrencyLayerBuilder::per_key).

use http::{HeaderName, request::Parts};

/// The client's IP address (from axum's `ConnectInfo<SocketAddr>` or a `SocketAddr` extension, see
/// [`tower_kit_core::client_addr`]); no key (no per-key cap) when the server did not record it.
///
/// `X-Forwarded-For` is not read: behind a proxy, write your own key function that trusts only your proxies.
pub fn client_ip() -> impl Fn(&Parts) -> Option<String> + Send + Sync + Clone + 'static {
    |parts: &Parts| tower_kit_core::client_addr(&parts.extensions).map(|a| a.ip().to_string())
}

/// The value of a request header (an API key, a tenant id); no key when the header is absent or not visible
/// ASCII. Values longer than 256 bytes are cut, so a hostile client cannot make keys of any size.
pub fn header(
    name: HeaderName,
) -> impl Fn(&Parts) -> Option<String> + Send + Sync + Clone + 'static {
    move |parts: &Parts| {
        let value = parts.headers.get(&name)?.to_str().ok()?;
        let cut = value.get(..value.len().min(256)).unwrap_or(value);
        Some(cut.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn client_ip_reads_the_extension() {
        let mut req = http::Request::new(());
        let f = client_ip();
        let (parts, _) = http::Request::new(()).into_parts();
        assert_eq!(f(&parts), None);
        req.extensions_mut()
            .insert("[::ffff:10.0.0.1]:9".parse::<SocketAddr>().unwrap());
        let (parts, _) = req.into_parts();
        assert_eq!(f(&parts).as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn header_key_is_bounded_and_ascii() {
        let f = header(HeaderName::from_static("x-api-key"));
        let mut req = http::Request::new(());
        req.headers_mut()
            .insert("x-api-key", "k".repeat(1000).parse().unwrap());
        let (parts, _) = req.into_parts();
        assert_eq!(f(&parts).unwrap().len(), 256);
        let mut req = http::Request::new(());
        req.headers_mut().insert(
            "x-api-key",
            http::HeaderValue::from_bytes(b"\xffbad").unwrap(),
        );
        let (parts, _) = req.into_parts();
        assert_eq!(f(&parts), None);
    }
}
