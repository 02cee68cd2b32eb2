//! Invalidation by unsafe methods (RFC 9111 §4.4): a `POST`, `PUT`, `PATCH` or `DELETE` (any method but `GET`,
//! `HEAD`, `OPTIONS` and `TRACE`) answered with a 2xx or 3xx removes what the cache holds for its target URI, and
//! for the same-origin URIs in the response's `Location` and `Content-Location`.

use crate::{entry::StoredValue, layer::Shared, store::Store};
use http::{HeaderMap, Uri, header, request::Parts};

/// Removes the stored responses for the request's target and the response's same-origin `Location` and
/// `Content-Location`.
pub(crate) async fn after_unsafe<St: Store>(
    shared: &Shared<St>,
    request: &Parts,
    response: &HeaderMap,
) {
    let key = &shared.config.key;
    let mut keys = vec![key.get_key_of(request, &request.uri)];
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(uri) = response
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|text| same_origin(request, text))
        {
            let k = key.get_key_of(request, &uri);
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    for k in &keys {
        remove_uri(shared, k).await;
    }
    metrics::counter!("tower_kit.cache.invalidations", "kind" => "unsafe-method").increment(1);
}

/// Removes the value under a primary key and, when it is a `Vary` record, every variant under it. A plain lookup
/// first, so that a write to a URI the cache never held costs no scan.
async fn remove_uri<St: Store>(shared: &Shared<St>, primary: &str) {
    let result = match shared.store.get(primary).await {
        Ok(None) => return,
        Ok(Some(StoredValue::Variants(_))) => {
            let variants = format!("{primary}#v:");
            match shared.store.remove_prefix(&variants).await {
                Ok(_) => shared.store.remove(primary).await.map(drop),
                Err(e) => Err(e),
            }
        }
        Ok(Some(_)) => shared.store.remove(primary).await.map(drop),
        // The value may still be there: try to remove it anyway.
        Err(e) => {
            shared.counters.store_error(&e);
            shared.store.remove(primary).await.map(drop)
        }
    };
    if let Err(e) = result {
        shared.counters.store_error(&e);
    }
}

/// A `Location` / `Content-Location` value as a URI of the request's origin: an absolute path (`/a?b`), a relative
/// path without dot segments (`b`, resolved against the request path's directory), or an absolute `http(s)` URL
/// whose authority equals the request's host. Other origins are never invalidated (RFC 9111 §4.4: that would let
/// one site flush another's entries).
pub(crate) fn same_origin(request: &Parts, text: &str) -> Option<Uri> {
    let text = text.trim();
    if text.is_empty() || text.starts_with("//") {
        return None;
    }
    let uri: Option<Uri> = text.parse().ok();
    if let Some(uri) = &uri
        && uri.scheme().is_some()
        && let Some(authority) = uri.authority()
    {
        let scheme_ok = uri
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
        let host = request
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                let h = request.headers.get(header::HOST)?;
                Some(String::from_utf8_lossy(h.as_bytes()).into_owned())
            })?;
        if !scheme_ok || !authority.as_str().eq_ignore_ascii_case(&host) {
            return None;
        }
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        return target.parse().ok();
    }
    if text.starts_with('/') {
        return uri;
    }
    if text
        .split(['?', '#'])
        .next()?
        .split('/')
        .any(|seg| seg == "." || seg == "..")
    {
        return None;
    }
    let path = request.uri.path();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let joined = if text.starts_with('?') {
        format!("{path}{text}")
    } else if dir.is_empty() {
        format!("/{text}")
    } else {
        format!("{dir}{text}")
    };
    joined.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::post(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn same_origin_table() {
        let p = parts("/api/items/7", Some("shop.example:8080"));
        let rows = [
            ("/api/items", Some("/api/items")),
            ("/api/items?page=2", Some("/api/items?page=2")),
            ("8", Some("/api/items/8")),
            ("?x=1", Some("/api/items/7?x=1")),
            ("http://shop.example:8080/a", Some("/a")),
            ("HTTPS://SHOP.EXAMPLE:8080/a?b", Some("/a?b")),
            ("http://shop.example/a", None),
            ("http://evil.example:8080/a", None),
            ("ftp://shop.example:8080/a", None),
            ("//shop.example:8080/a", None),
            ("../x", None),
            ("", None),
            ("not a uri", None),
        ];
        for (text, want) in rows {
            assert_eq!(
                same_origin(&p, text).map(|u| u.to_string()),
                want.map(str::to_owned),
                "{text}"
            );
        }
        // HTTP/2: the authority is in the request URI.
        let p = parts("https://shop.example/api", None);
        assert!(same_origin(&p, "https://shop.example/x").is_some());
        assert!(same_origin(&p, "https://other.example/x").is_none());
        // No host known: only relative references.
        let p = parts("/api", None);
        assert!(same_origin(&p, "http://a/x").is_none());
        assert_eq!(same_origin(&p, "x").unwrap().to_string(), "/x");
    }
}
