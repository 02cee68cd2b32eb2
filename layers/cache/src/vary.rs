//! `Vary` (RFC 9111 §4.1): which request headers select a stored response, and their normalised values.

use crate::{control::split_list, key::push_escaped};
use http::{HeaderMap, HeaderName, header};
use std::sync::Arc;

/// What a response's `Vary` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vary {
    /// No `Vary`: one response for every request with this primary key.
    None,
    /// These request headers (lower case, sorted, no duplicates) select the response.
    Headers(Vec<HeaderName>),
    /// `Vary: *` (or a field name that is not a valid token): never reused.
    Star,
}

impl Vary {
    pub(crate) fn parse(headers: &HeaderMap) -> Vary {
        let mut names = Vec::new();
        for value in headers.get_all(header::VARY) {
            let Ok(text) = value.to_str() else {
                return Vary::Star;
            };
            for member in split_list(text) {
                if member == "*" {
                    return Vary::Star;
                }
                match HeaderName::from_bytes(member.as_bytes()) {
                    Ok(name) => names.push(name),
                    Err(_) => return Vary::Star,
                }
            }
        }
        if names.is_empty() {
            return Vary::None;
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Vary::Headers(names)
    }
}

/// A user normaliser of one varied request header: given the request headers, the value the cache keys on (`None`
/// as if the header were absent). Set with
/// [`CacheLayerBuilder::normalize_vary`](crate::CacheLayerBuilder::normalize_vary).
pub(crate) type VaryNormalizer = Arc<dyn Fn(&HeaderMap) -> Option<String> + Send + Sync>;

/// The user normalisers, per header name.
#[derive(Clone, Default)]
pub(crate) struct Normalizers(pub(crate) Vec<(HeaderName, VaryNormalizer)>);

impl std::fmt::Debug for Normalizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

/// The normalised value of one request header for matching: a user normaliser's when one is set for `name`;
/// otherwise field lines joined with `, `, whitespace around commas removed, and `Accept-Encoding` reduced to the
/// sorted set of known codings it accepts. `None` when absent.
pub(crate) fn normalised(
    name: &HeaderName,
    request: &HeaderMap,
    normalizers: &Normalizers,
) -> Option<String> {
    if let Some((_, normalize)) = normalizers.0.iter().find(|(n, _)| n == name) {
        return normalize(request);
    }
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    if name == header::ACCEPT_ENCODING {
        return Some(accept_encoding(request));
    }
    let mut out = String::new();
    for line in lines {
        let text = String::from_utf8_lossy(line.as_bytes());
        for member in text.split(',') {
            let member = member.trim();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(member);
        }
    }
    Some(out)
}

/// The codings a compression layer may choose, in a fixed order.
const CODINGS: [&str; 4] = ["br", "deflate", "gzip", "zstd"];

/// `gzip;q=1.0, br, deflate;q=0` → `br,gzip`; `identity` when nothing known is accepted; `*` accepts every
/// coding not listed with `q=0`.
fn accept_encoding(request: &HeaderMap) -> String {
    let mut accepted = [false; 4];
    let mut refused = [false; 4];
    let mut star = false;
    for line in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = line.to_str() else { continue };
        for member in text.split(',') {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                let p = p.trim();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            let coding = if coding == "x-gzip" {
                "gzip".to_owned()
            } else {
                coding
            };
            if coding == "*" {
                star = !zero;
            } else if let Some(i) = CODINGS.iter().position(|c| *c == coding) {
                if zero {
                    refused[i] = true;
                } else {
                    accepted[i] = true;
                }
            }
        }
    }
    let list: Vec<&str> = CODINGS
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused[*i] && (accepted[*i] || star))
        .map(|(_, c)| *c)
        .collect();
    if list.is_empty() {
        "identity".to_owned()
    } else {
        list.join(",")
    }
}

/// The request's values for `names`, in order.
pub(crate) fn values(
    names: &[HeaderName],
    request: &HeaderMap,
    normalizers: &Normalizers,
) -> Vec<Option<String>> {
    names
        .iter()
        .map(|n| normalised(n, request, normalizers))
        .collect()
}

/// The secondary key: the primary key, then `#v:` and `name=value` (or `name!` when absent) joined by `&`.
pub(crate) fn secondary_key(
    primary: &str,
    names: &[HeaderName],
    values: &[Option<String>],
) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    key.push_str("#v:");
    for (i, (name, value)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(name.as_str());
        match value {
            Some(v) => {
                key.push('=');
                push_escaped(&mut key, v);
            }
            None => key.push('!'),
        }
    }
    key
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http::HeaderValue;

    /// A header map of `pairs`, repeated names appended.
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn parse_vary() {
        assert_eq!(Vary::parse(&headers(&[])), Vary::None);
        assert_eq!(
            Vary::parse(&headers(&[
                ("vary", "Accept-Encoding, X-Tenant"),
                ("vary", "accept-encoding")
            ])),
            Vary::Headers(vec![
                HeaderName::from_static("accept-encoding"),
                HeaderName::from_static("x-tenant")
            ])
        );
        assert_eq!(Vary::parse(&headers(&[("vary", "Accept, *")])), Vary::Star);
        assert_eq!(Vary::parse(&headers(&[("vary", "bad name")])), Vary::Star);
    }

    #[test]
    fn accept_encoding_is_normalised() {
        let ae = |v: &str| {
            normalised(
                &header::ACCEPT_ENCODING,
                &headers(&[("accept-encoding", v)]),
                &Normalizers::default(),
            )
            .unwrap()
        };
        assert_eq!(ae("gzip, deflate, br"), "br,deflate,gzip");
        assert_eq!(ae("br;q=1.0, GZIP;q=0.5"), ae("gzip , br"));
        assert_eq!(ae("gzip;q=0, br"), "br");
        assert_eq!(ae("x-gzip"), "gzip");
        assert_eq!(ae("identity"), "identity");
        assert_eq!(ae("compress, sdch"), "identity");
        assert_eq!(ae("*, zstd;q=0"), "br,deflate,gzip");
        assert_eq!(
            normalised(
                &header::ACCEPT_ENCODING,
                &HeaderMap::new(),
                &Normalizers::default()
            ),
            None
        );
    }

    #[test]
    fn other_headers_join_lines_and_trim() {
        let name = HeaderName::from_static("accept-language");
        let a = normalised(
            &name,
            &headers(&[("accept-language", "en ,  fr"), ("accept-language", "de")]),
            &Normalizers::default(),
        );
        let b = normalised(
            &name,
            &headers(&[("accept-language", "en,fr,de")]),
            &Normalizers::default(),
        );
        assert_eq!(a, b);
        assert_eq!(a.as_deref(), Some("en,fr,de"));
    }

    #[test]
    fn absent_and_empty_differ() {
        let names = [HeaderName::from_static("x-a")];
        let absent = secondary_key(
            "p",
            &names,
            &values(&names, &HeaderMap::new(), &Normalizers::default()),
        );
        let empty = secondary_key(
            "p",
            &names,
            &values(&names, &headers(&[("x-a", "")]), &Normalizers::default()),
        );
        assert_eq!(absent, "p#v:x-a!");
        assert_eq!(empty, "p#v:x-a=");
        let forged = secondary_key(
            "p",
            &names,
            &values(
                &names,
                &headers(&[("x-a", "1&x-b=2")]),
                &Normalizers::default(),
            ),
        );
        assert_eq!(forged, "p#v:x-a=1%26x-b%3D2");
    }

    #[test]
    fn a_user_normaliser_replaces_the_default() {
        let mut normalizers = Normalizers::default();
        normalizers.0.push((
            header::ACCEPT_ENCODING,
            Arc::new(|h: &HeaderMap| {
                let zstd = h
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("zstd"));
                Some(if zstd { "zstd" } else { "gzip" }.to_owned())
            }),
        ));
        let ae = |v: &str| {
            normalised(
                &header::ACCEPT_ENCODING,
                &headers(&[("accept-encoding", v)]),
                &normalizers,
            )
        };
        assert_eq!(ae("gzip, deflate, br, zstd"), ae("zstd, br"));
        assert_eq!(
            ae("gzip, br"),
            ae("deflate, gzip").as_deref().map(str::to_owned)
        );
        assert_ne!(ae("gzip, br"), ae("zstd"));
        // Other headers keep the default.
        let name = HeaderName::from_static("accept-language");
        assert_eq!(
            normalised(
                &name,
                &headers(&[("accept-language", "en , fr")]),
                &normalizers
            )
            .as_deref(),
            Some("en,fr")
        );
    }
}
