//! Cache keys.
//!
//! A primary key is `{namespace}:{version}:{path}[?{query}]#{host}#{method}[#x={extra}]`: the path comes first so
//! that a path prefix is a key prefix (prefix invalidation, Redis `SCAN MATCH`), and the parts after it are
//! separated by `#`, which cannot appear in a request target and is escaped everywhere else, so two different
//! requests never share a key. A response's `Vary` adds a secondary part (see [`crate::vary`]).

use http::{Method, Uri, header, request::Parts};
use std::{fmt::Write as _, sync::Arc};

/// A closure that adds a part to every key (a tenant header, an API version), or `None` for nothing.
pub(crate) type KeyExtension = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// The settings that shape keys.
#[derive(Clone)]
pub(crate) struct KeyConfig {
    /// `{namespace}:{version}:` with the colon.
    pub(crate) prefix: String,
    pub(crate) include_host: bool,
    pub(crate) normalize_query: bool,
    pub(crate) extension: Option<KeyExtension>,
    /// User normalisers of varied request headers.
    pub(crate) vary: crate::vary::Normalizers,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("prefix", &self.prefix)
            .field("include_host", &self.include_host)
            .field("normalize_query", &self.normalize_query)
            .field("extension", &self.extension.is_some())
            .field("vary", &self.vary)
            .finish()
    }
}

impl KeyConfig {
    pub(crate) fn new(namespace: &str, version: u32) -> Self {
        Self {
            prefix: format!("{namespace}:{version}:"),
            include_host: true,
            normalize_query: false,
            extension: None,
            vary: Default::default(),
        }
    }

    /// The primary key of a request. HEAD shares GET's key (a HEAD is answered from a stored GET).
    pub(crate) fn primary(&self, parts: &Parts) -> String {
        self.key_for(parts, &parts.uri, &parts.method)
    }

    /// The primary key a `GET` of `uri` would have, with the rest of the request (`Host`, the key extension) from
    /// `parts`: every stored variant of `uri` has a key that starts with it (invalidation by unsafe methods).
    pub(crate) fn get_key_of(&self, parts: &Parts, uri: &Uri) -> String {
        self.key_for(parts, uri, &Method::GET)
    }

    fn key_for(&self, parts: &Parts, uri: &Uri, method: &Method) -> String {
        let host = if self.include_host {
            match uri.authority() {
                Some(a) => Some(a.as_str().to_owned()),
                None => host_of(parts),
            }
        } else {
            None
        };
        let mut key = String::with_capacity(self.prefix.len() + 48);
        key.push_str(&self.prefix);
        self.push_target(&mut key, uri);
        key.push('#');
        if let Some(host) = host {
            push_escaped(&mut key, &host.to_ascii_lowercase());
        }
        key.push('#');
        let method = if method == Method::HEAD {
            "GET"
        } else {
            method.as_str()
        };
        push_escaped(&mut key, method);
        if let Some(extra) = self.extension.as_ref().and_then(|f| f(parts)) {
            key.push_str("#x=");
            push_escaped(&mut key, &extra);
        }
        key
    }

    /// The key prefix that every key of a path prefix starts with (prefix invalidation).
    pub(crate) fn path_prefix(&self, path_prefix: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + path_prefix.len());
        key.push_str(&self.prefix);
        push_path(&mut key, path_prefix);
        key
    }

    /// The key prefix of one URL: a path with an optional query, or an absolute URL (then only that host).
    pub(crate) fn url_prefix(&self, url: &str) -> Option<String> {
        let uri: Uri = url.parse().ok()?;
        let mut key = String::with_capacity(self.prefix.len() + url.len() + 2);
        key.push_str(&self.prefix);
        self.push_target(&mut key, &uri);
        key.push('#');
        if self.include_host
            && let Some(authority) = uri.authority()
        {
            push_escaped(&mut key, &authority.as_str().to_ascii_lowercase());
            key.push('#');
        }
        Some(key)
    }

    fn push_target(&self, key: &mut String, uri: &Uri) {
        push_path(
            key,
            if uri.path().is_empty() {
                "/"
            } else {
                uri.path()
            },
        );
        match uri.query() {
            Some(q) if self.normalize_query => {
                let q = normalize_query(q);
                if !q.is_empty() {
                    key.push('?');
                    push_path(key, &q);
                }
            }
            Some(q) => {
                key.push('?');
                push_path(key, q);
            }
            None => {}
        }
    }
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the `Host` header.
fn host_of(parts: &Parts) -> Option<String> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.as_str().to_owned());
    }
    let host = parts.headers.get(header::HOST)?;
    Some(String::from_utf8_lossy(host.as_bytes()).into_owned())
}

/// Sorts parameters by name (stable, so repeated names keep their order), drops empty parameters, and writes
/// percent-encodings in upper case.
pub(crate) fn normalize_query(query: &str) -> String {
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(upper_hex)
        .collect();
    params.sort_by(|a, b| {
        let name = |p: &str| p.split('=').next().unwrap_or("").to_owned();
        name(a).cmp(&name(b))
    });
    params.join("&")
}

fn upper_hex(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            out.push('%');
            out.push(bytes[i + 1].to_ascii_uppercase() as char);
            out.push(bytes[i + 2].to_ascii_uppercase() as char);
            i += 3;
        } else {
            let ch = text[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A request target goes in as is, except `#` and bytes outside visible ASCII (never in a valid `Uri`).
fn push_path(key: &mut String, text: &str) {
    for c in text.chars() {
        if c == '#' || !c.is_ascii_graphic() {
            escape_char(key, c);
        } else {
            key.push(c);
        }
    }
}

/// Hosts, methods and extensions: `#`, `%` and anything outside visible ASCII are percent-encoded.
pub(crate) fn push_escaped(key: &mut String, text: &str) {
    for c in text.chars() {
        if c == '#' || c == '%' || c == '&' || c == '=' || !c.is_ascii_graphic() {
            escape_char(key, c);
        } else {
            key.push(c);
        }
    }
}

fn escape_char(key: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        let _ = write!(key, "%{b:02X}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use proptest::prelude::*;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn layout() {
        let k = KeyConfig::new("http", 1);
        assert_eq!(
            k.primary(&parts("/api/items?page=2", Some("Example.COM"))),
            "http:1:/api/items?page=2#example.com#GET"
        );
        assert_eq!(
            k.primary(&parts("http://a.example/x", Some("b.example"))),
            "http:1:/x#a.example#GET",
            "the URI's authority wins over Host"
        );
        let mut head = parts("/x", None);
        head.method = Method::HEAD;
        assert_eq!(k.primary(&head), "http:1:/x##GET");
        assert!(
            k.primary(&parts("/x", None))
                .starts_with(&k.path_prefix("/x"))
        );
        assert!(
            k.primary(&parts("/x?y", None))
                .starts_with(&k.url_prefix("/x?y").unwrap())
        );
        assert!(
            !k.primary(&parts("/xy", None))
                .starts_with(&k.url_prefix("/x").unwrap())
        );
    }

    #[test]
    fn host_is_escaped_so_it_cannot_forge_parts() {
        let k = KeyConfig::new("http", 1);
        let forged = k.primary(&parts("/x", Some("a#GET#x=1")));
        assert_eq!(forged, "http:1:/x#a%23get%23x%3D1#GET");
    }

    #[test]
    fn query_normalisation() {
        assert_eq!(normalize_query("b=2&a=1&&a=0&c=%2f"), "a=1&a=0&b=2&c=%2F");
        let mut k = KeyConfig::new("n", 2);
        assert_eq!(k.primary(&parts("/p?", None)), "n:2:/p?##GET");
        k.normalize_query = true;
        assert_eq!(k.primary(&parts("/p?", None)), "n:2:/p##GET");
        assert_eq!(
            k.primary(&parts("/p?b=1&a=2", None)),
            k.primary(&parts("/p?a=2&b=1", None))
        );
    }

    #[test]
    fn extension_adds_a_part() {
        let mut k = KeyConfig::new("n", 1);
        k.extension = Some(Arc::new(|p: &Parts| {
            p.headers
                .get("x-tenant")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        }));
        let mut a = parts("/p", None);
        a.headers.insert("x-tenant", "acme".parse().unwrap());
        assert_eq!(k.primary(&a), "n:1:/p##GET#x=acme");
        assert_eq!(k.primary(&parts("/p", None)), "n:1:/p##GET");
    }

    /// A parameter `name=value` where the value mixes plain characters and percent-encoded bytes.
    fn query_value() -> impl Strategy<Value = Vec<(bool, String)>> {
        proptest::collection::vec((any::<bool>(), "[a-z0-9]{1,2}|[0-9a-f]{2}"), 0..4)
    }

    fn render(name: &str, value: &[(bool, String)], upper: bool) -> String {
        let mut out = format!("{name}=");
        for (encoded, text) in value {
            if *encoded && text.len() == 2 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push('%');
                out.push_str(&if upper {
                    text.to_uppercase()
                } else {
                    text.to_lowercase()
                });
            } else {
                out.push_str(text);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn any_target_and_host_make_a_key_without_panic(path in "/[ -~]{0,30}", host in "\\PC{0,20}", q in "\\PC{0,20}") {
            let k = KeyConfig { normalize_query: true, ..KeyConfig::new("n", 1) };
            let _ = normalize_query(&q);
            if let Ok(uri) = path.parse::<Uri>() {
                let mut p = parts("/", None);
                p.uri = uri;
                if let Ok(h) = http::HeaderValue::from_str(&host) {
                    p.headers.insert(header::HOST, h);
                }
                let key = k.primary(&p);
                prop_assert!(key.starts_with("n:1:/"));
                prop_assert_eq!(key.matches('#').count(), 2, "{}", key);
            }
        }

        #[test]
        fn equivalent_requests_share_one_key(
            params in proptest::collection::btree_map("[a-z]{1,3}", query_value(), 0..6),
            host in "[a-zA-Z.]{1,12}",
            seed in any::<u64>(),
            empties in 0usize..3,
        ) {
            let k = KeyConfig { normalize_query: true, ..KeyConfig::new("n", 1) };
            // Distinct names (repeated names are order-sensitive): any order, any hex case, stray `&`s.
            let a: Vec<String> = params.iter().map(|(n, v)| render(n, v, true)).collect();
            let mut b: Vec<String> = params.iter().map(|(n, v)| render(n, v, false)).collect();
            let mut s = seed | 1;
            for i in (1..b.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                b.swap(i, (s % (i as u64 + 1)) as usize);
            }
            for _ in 0..empties { b.push(String::new()); }
            let key_a = k.primary(&parts(&format!("/p?{}", a.join("&")), Some(&host.to_uppercase())));
            let key_b = k.primary(&parts(&format!("/p?{}", b.join("&")), Some(&host.to_lowercase())));
            prop_assert_eq!(key_a, key_b);
        }

        #[test]
        fn different_requests_never_share_a_key(p1 in "/[a-z#%]{0,6}", p2 in "/[a-z#%]{0,6}", h1 in "[a-z#%=&]{0,5}", h2 in "[a-z#%=&]{0,5}") {
            let k = KeyConfig::new("n", 1);
            let (Ok(u1), Ok(u2)) = (p1.parse::<Uri>(), p2.parse::<Uri>()) else { return Ok(()) };
            let mut a = parts("/", Some(&h1));
            a.uri = u1.clone();
            let mut b = parts("/", Some(&h2));
            b.uri = u2.clone();
            if (u1.path(), h1.as_str()) != (u2.path(), h2.as_str()) {
                prop_assert_ne!(k.primary(&a), k.primary(&b));
            }
        }
    }
}
