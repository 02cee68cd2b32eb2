//! What may be compressed: content-type patterns, skip reasons, and the header edits compression makes.

use http::{
    HeaderMap, HeaderValue, StatusCode,
    header::{ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY},
};
use tower_kit_core::ConfigError;

/// Why a response was sent uncompressed. The label value of the `tower_kit.compression.skipped` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// The request's `Accept-Encoding` allows none of the layer's codings (or prefers identity).
    NotAccepted,
    /// The response already has a `Content-Encoding`.
    AlreadyEncoded,
    /// A HEAD request: there is no body to compress.
    Head,
    /// A 1xx, 204, 206 or 304 status.
    Status,
    /// The response has a `Content-Range`.
    ContentRange,
    /// `Cache-Control: no-transform`, with [`no_transform`](crate::CompressionLayerBuilder::no_transform) respected.
    NoTransform,
    /// No `Content-Type`, one the allowlist lacks, one the denylist holds, or gRPC.
    ContentType,
    /// The user's predicate said no.
    Predicate,
    /// The body is smaller than `min_size`.
    TooSmall,
    /// The compressed form of a body of known size was not smaller than the body: it was sent as it is.
    NotSmaller,
}

impl SkipReason {
    /// The metric label value: `not_accepted`, `already_encoded`, `head`, `status`, `content_range`,
    /// `no_transform`, `content_type`, `predicate`, `too_small`, `not_smaller`.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotAccepted => "not_accepted",
            SkipReason::AlreadyEncoded => "already_encoded",
            SkipReason::Head => "head",
            SkipReason::Status => "status",
            SkipReason::ContentRange => "content_range",
            SkipReason::NoTransform => "no_transform",
            SkipReason::ContentType => "content_type",
            SkipReason::Predicate => "predicate",
            SkipReason::TooSmall => "too_small",
            SkipReason::NotSmaller => "not_smaller",
        }
    }
}

/// A media type pattern: `type/subtype`, `type/*`, or `type/*+suffix` (lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MimePattern {
    ty: Box<str>,
    sub: Sub,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Sub {
    Any,
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl MimePattern {
    pub(crate) fn parse(field: &'static str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::new(
                field,
                format!(
                    "`{text}` is not a media type pattern such as `text/*`, `application/json` or `application/*+json`"
                ),
            )
        };
        let lower = text.trim().to_ascii_lowercase();
        let (ty, sub) = lower.split_once('/').ok_or_else(bad)?;
        if !is_token(ty) || ty == "*" {
            return Err(bad());
        }
        let sub = if sub == "*" {
            Sub::Any
        } else if let Some(suffix) = sub.strip_prefix("*+") {
            if !is_token(suffix) {
                return Err(bad());
            }
            Sub::Suffix(suffix.into())
        } else if is_token(sub) && !sub.contains('*') {
            Sub::Exact(sub.into())
        } else {
            return Err(bad());
        };
        Ok(Self { ty: ty.into(), sub })
    }

    /// 0 = no match; 1 = `type/*`; 2 = `type/*+suffix`; 3 = exact.
    fn specificity(&self, ty: &str, sub: &str) -> u8 {
        if *self.ty != *ty {
            return 0;
        }
        match &self.sub {
            Sub::Any => 1,
            Sub::Suffix(s) => {
                u8::from(
                    sub.len() > s.len() + 1
                        && sub.ends_with(&**s)
                        && sub.as_bytes()[sub.len() - s.len() - 1] == b'+',
                ) * 2
            }
            Sub::Exact(e) => u8::from(**e == *sub) * 3,
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The default allowlist.
pub(crate) const DEFAULT_ALLOW: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-seq",
    "application/yaml",
    "application/x-yaml",
    "application/graphql",
];

/// The default denylist: it wins over the allowlist at equal or greater specificity.
pub(crate) const DEFAULT_DENY: &[&str] = &[
    "image/*",
    "audio/*",
    "video/*",
    "font/woff",
    "font/woff2",
    "application/font-woff",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-brotli",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/grpc",
];

/// Streams that are flushed after every frame by default: SSE and newline-delimited JSON.
pub(crate) const DEFAULT_FLUSH: &[&str] = &[
    "text/event-stream",
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-seq",
];

/// Allow, deny and flush lists.
#[derive(Debug, Clone)]
pub(crate) struct ContentTypes {
    pub(crate) allow: Vec<MimePattern>,
    pub(crate) deny: Vec<MimePattern>,
    pub(crate) flush: Vec<MimePattern>,
}

/// What the content-type lists say about a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeVerdict {
    Skip,
    Compress { flush_each_frame: bool },
}

impl ContentTypes {
    pub(crate) fn parse_defaults() -> Self {
        let parse = |list: &[&str]| {
            list.iter()
                .filter_map(|p| MimePattern::parse("content_type", p).ok())
                .collect()
        };
        Self {
            allow: parse(DEFAULT_ALLOW),
            deny: parse(DEFAULT_DENY),
            flush: parse(DEFAULT_FLUSH),
        }
    }

    pub(crate) fn verdict(&self, headers: &HeaderMap) -> TypeVerdict {
        let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return TypeVerdict::Skip;
        };
        let essence = value.split(';').next().unwrap_or_default().trim();
        let Some((ty, sub)) = essence.split_once('/') else {
            return TypeVerdict::Skip;
        };
        let ty = ty.trim().to_ascii_lowercase();
        let sub = sub.trim().to_ascii_lowercase();
        if ty == "application"
            && (sub == "grpc" || sub.starts_with("grpc+") || sub.starts_with("grpc-"))
        {
            return TypeVerdict::Skip;
        }
        let best = |list: &[MimePattern]| {
            list.iter()
                .map(|p| p.specificity(&ty, &sub))
                .max()
                .unwrap_or(0)
        };
        let allowed = best(&self.allow);
        if allowed == 0 || best(&self.deny) >= allowed {
            return TypeVerdict::Skip;
        }
        TypeVerdict::Compress {
            flush_each_frame: best(&self.flush) > 0,
        }
    }
}

/// Statuses whose bodies are never compressed: 1xx, 204, 206, 304.
pub(crate) fn status_skipped(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether `Cache-Control` carries `no-transform`.
pub(crate) fn has_no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|d| {
                d.split('=')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("no-transform")
            })
        })
    })
}

/// Adds `Accept-Encoding` to `Vary`, once: all `Vary` lines become one; `*` and an existing member are kept as is.
pub(crate) fn merge_vary(headers: &mut HeaderMap) {
    let mut members: Vec<String> = Vec::new();
    for value in headers.get_all(VARY) {
        let Ok(text) = value.to_str() else { return };
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if member == "*" || member.eq_ignore_ascii_case("accept-encoding") {
                return;
            }
            members.push(member.to_owned());
        }
    }
    if members.is_empty() {
        headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
        return;
    }
    members.push("accept-encoding".to_owned());
    if let Ok(value) = HeaderValue::from_str(&members.join(", ")) {
        headers.insert(VARY, value);
    }
}

/// The header edits of a compressed response: `Content-Encoding` (the coding chosen), `Vary`, a weak `ETag`, no `Accept-Ranges`,
/// and no `Content-Length` (the one-shot path sets the compressed length afterwards).
pub(crate) fn mark_compressed(headers: &mut HeaderMap, coding: crate::Coding) {
    headers.insert(http::header::CONTENT_ENCODING, coding.header_value());
    headers.remove(CONTENT_LENGTH);
    headers.remove(ACCEPT_RANGES);
    merge_vary(headers);
    weaken_etags(headers);
}

/// A strong `ETag` names these exact bytes; the compressed bytes differ, so it becomes weak (`W/"..."`).
pub(crate) fn weaken_etags(headers: &mut HeaderMap) {
    if !headers.contains_key(ETAG) {
        return;
    }
    let weakened: Vec<HeaderValue> = headers
        .get_all(ETAG)
        .iter()
        .map(|v| {
            if v.as_bytes().starts_with(b"\"") {
                let mut bytes = Vec::with_capacity(v.len() + 2);
                bytes.extend_from_slice(b"W/");
                bytes.extend_from_slice(v.as_bytes());
                HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| v.clone())
            } else {
                v.clone()
            }
        })
        .collect();
    headers.remove(ETAG);
    for v in weakened {
        headers.append(ETAG, v);
    }
}

/// The response's length from `Content-Length`, if it is a plain number.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(CONTENT_LENGTH)?.to_str().ok()?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: http::HeaderName, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn verdict(ct: &str) -> TypeVerdict {
        ContentTypes::parse_defaults().verdict(&with(CONTENT_TYPE, &[ct]))
    }

    const PLAIN: TypeVerdict = TypeVerdict::Compress {
        flush_each_frame: false,
    };
    const FLUSHED: TypeVerdict = TypeVerdict::Compress {
        flush_each_frame: true,
    };

    #[test]
    fn default_allowlist() {
        for ct in [
            "text/html; charset=utf-8",
            "TEXT/Plain",
            "text/css",
            "text/javascript",
            "application/json",
            "application/problem+json",
            "application/vnd.api+json; charset=utf-8",
            "application/javascript",
            "application/xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
        ] {
            assert_eq!(verdict(ct), PLAIN, "{ct}");
        }
        for ct in [
            "text/event-stream",
            "application/x-ndjson",
            "application/ndjson",
        ] {
            assert_eq!(verdict(ct), FLUSHED, "{ct}");
        }
    }

    #[test]
    fn denylist_and_unknown_types() {
        for ct in [
            "image/png",
            "image/jpeg",
            "image/webp",
            "audio/mpeg",
            "video/mp4",
            "font/woff2",
            "application/zip",
            "application/gzip",
            "application/zstd",
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web+proto",
            "application/octet-stream",
            "application/pdf",
            "",
            "json",
            "/",
        ] {
            assert_eq!(verdict(ct), TypeVerdict::Skip, "{ct}");
        }
        assert_eq!(
            ContentTypes::parse_defaults().verdict(&HeaderMap::new()),
            TypeVerdict::Skip
        );
    }

    #[test]
    fn deny_wins_at_equal_specificity_and_exact_allow_beats_wildcard_deny() {
        let mut types = ContentTypes::parse_defaults();
        types
            .deny
            .push(MimePattern::parse("deny", "text/csv").unwrap());
        types
            .allow
            .push(MimePattern::parse("allow", "image/png").unwrap());
        assert_eq!(
            types.verdict(&with(CONTENT_TYPE, &["text/csv"])),
            TypeVerdict::Skip
        );
        assert_eq!(types.verdict(&with(CONTENT_TYPE, &["image/png"])), PLAIN);
        types
            .deny
            .push(MimePattern::parse("deny", "image/png").unwrap());
        assert_eq!(
            types.verdict(&with(CONTENT_TYPE, &["image/png"])),
            TypeVerdict::Skip
        );
    }

    #[test]
    fn pattern_grammar() {
        assert!(MimePattern::parse("f", "text/*").is_ok());
        assert!(MimePattern::parse("f", "application/*+json").is_ok());
        assert!(MimePattern::parse("f", " Application/JSON ").is_ok());
        for bad in [
            "",
            "text",
            "*/*",
            "text/",
            "text/a b",
            "text/*json",
            "text/*+",
            "te xt/html",
        ] {
            let err = MimePattern::parse("allow_content_type", bad).unwrap_err();
            assert_eq!(err.field(), "allow_content_type", "{bad}");
        }
        let json = MimePattern::parse("f", "application/*+json").unwrap();
        assert_eq!(json.specificity("application", "+json"), 0);
        assert_eq!(json.specificity("application", "ld+json"), 2);
        assert_eq!(json.specificity("application", "ldjson"), 0);
    }

    #[test]
    fn statuses() {
        for s in [100, 101, 204, 206, 304] {
            assert!(status_skipped(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 201, 203, 400, 404, 500] {
            assert!(!status_skipped(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn no_transform_detection() {
        assert!(has_no_transform(&with(CACHE_CONTROL, &["no-transform"])));
        assert!(has_no_transform(&with(
            CACHE_CONTROL,
            &["public, No-Transform, max-age=60"]
        )));
        assert!(has_no_transform(&with(
            CACHE_CONTROL,
            &["max-age=60", "no-transform"]
        )));
        assert!(!has_no_transform(&with(
            CACHE_CONTROL,
            &["no-cache, no-store"]
        )));
        assert!(!has_no_transform(&HeaderMap::new()));
    }

    #[test]
    fn vary_merging() {
        let vary = |values: &[&str]| {
            let mut h = with(VARY, values);
            merge_vary(&mut h);
            h.get_all(VARY)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(vary(&[]), ["accept-encoding"]);
        assert_eq!(vary(&["Origin"]), ["Origin, accept-encoding"]);
        assert_eq!(
            vary(&["Origin", "Cookie"]),
            ["Origin, Cookie, accept-encoding"]
        );
        assert_eq!(
            vary(&["origin, Accept-Encoding"]),
            ["origin, Accept-Encoding"]
        );
        assert_eq!(
            vary(&["Origin", "ACCEPT-ENCODING"]),
            ["Origin", "ACCEPT-ENCODING"]
        );
        assert_eq!(vary(&["*"]), ["*"]);
        assert_eq!(vary(&[" , "]), ["accept-encoding"]);
    }

    #[test]
    fn etags_become_weak() {
        let mut h = with(ETAG, &["\"abc\""]);
        weaken_etags(&mut h);
        assert_eq!(h.get_all(ETAG).iter().collect::<Vec<_>>(), ["W/\"abc\""]);
        let mut h = with(ETAG, &["W/\"abc\""]);
        weaken_etags(&mut h);
        assert_eq!(h.get_all(ETAG).iter().collect::<Vec<_>>(), ["W/\"abc\""]);
    }

    #[test]
    fn content_length_parsing() {
        assert_eq!(content_length(&with(CONTENT_LENGTH, &["12"])), Some(12));
        assert_eq!(content_length(&with(CONTENT_LENGTH, &["+12"])), None);
        assert_eq!(content_length(&with(CONTENT_LENGTH, &[""])), None);
        assert_eq!(content_length(&HeaderMap::new()), None);
    }
}
