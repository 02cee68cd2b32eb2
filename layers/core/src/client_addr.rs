use http::Extensions;
use std::net::{IpAddr, SocketAddr};

/// The peer address of the connection a request came in on, if the server recorded it.
///
/// Looked up in the request extensions, in this order:
/// 1. axum's `ConnectInfo<SocketAddr>` (with the `axum` feature; serve with
///    `into_make_service_with_connect_info::<SocketAddr>()`),
/// 2. tonic's `TcpConnectInfo` (with the `tonic` feature; tonic's server inserts it),
/// 3. a plain `SocketAddr`, which plain-hyper servers insert themselves (`req.extensions_mut().insert(peer)`).
///
/// The IP is canonicalised ([`canonical_ip`]): `::ffff:192.0.2.1` becomes `192.0.2.1`, so one client has one
/// address whichever socket family accepted it. Headers such as `X-Forwarded-For` are never read here: they are
/// the client's words, and only a trusted-proxy policy (the rate-limit layer's) may believe them.
///
/// ```
/// use std::net::SocketAddr;
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert("[::ffff:192.0.2.1]:4000".parse::<SocketAddr>().unwrap());
/// assert_eq!(tower_kit_core::client_addr(req.extensions()), Some("192.0.2.1:4000".parse().unwrap()));
/// ```
pub fn client_addr(extensions: &Extensions) -> Option<SocketAddr> {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(SocketAddr::new(canonical_ip(addr.ip()), addr.port()));
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(SocketAddr::new(canonical_ip(addr.ip()), addr.port()));
    }
    extensions
        .get::<SocketAddr>()
        .map(|addr| SocketAddr::new(canonical_ip(addr.ip()), addr.port()))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it maps; any other address unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext_with<T: Clone + Send + Sync + 'static>(v: T) -> Extensions {
        let mut e = Extensions::new();
        e.insert(v);
        e
    }

    #[test]
    fn none_without_connect_info() {
        assert_eq!(client_addr(&Extensions::new()), None);
    }

    #[test]
    fn plain_socket_addr() {
        let a: SocketAddr = "203.0.113.9:5555".parse().unwrap();
        assert_eq!(client_addr(&ext_with(a)), Some(a));
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(client_addr(&ext_with(v6)), Some(v6));
    }

    #[test]
    fn mapped_v6_is_canonicalised() {
        let a: SocketAddr = "[::ffff:10.1.2.3]:9".parse().unwrap();
        assert_eq!(
            client_addr(&ext_with(a)),
            Some("10.1.2.3:9".parse().unwrap())
        );
        // IPv4-compatible (deprecated ::a.b.c.d) addresses are not mapped ones and stay IPv6.
        let compat: IpAddr = "::10.1.2.3".parse().unwrap();
        assert_eq!(canonical_ip(compat), compat);
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_connect_info() {
        let e = ext_with(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: Some("[::ffff:203.0.113.4]:7".parse().unwrap()),
        });
        assert_eq!(client_addr(&e), Some("203.0.113.4:7".parse().unwrap()));
        // A connection without a known peer falls through to a plain SocketAddr, if any.
        let mut e = ext_with(tonic::transport::server::TcpConnectInfo {
            local_addr: None,
            remote_addr: None,
        });
        assert_eq!(client_addr(&e), None);
        e.insert("192.0.2.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(client_addr(&e), Some("192.0.2.1:1".parse().unwrap()));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_wins() {
        let mut e = Extensions::new();
        e.insert(axum::extract::ConnectInfo(
            "[::ffff:198.51.100.7]:1234".parse::<SocketAddr>().unwrap(),
        ));
        e.insert("127.0.0.1:1".parse::<SocketAddr>().unwrap());
        assert_eq!(client_addr(&e), Some("198.51.100.7:1234".parse().unwrap()));
    }
}
