use http::{HeaderMap, HeaderValue, Request};
use std::{
    borrow::Cow,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// A request extension that collects `Server-Timing` entries from every layer a request passes through.
///
/// The timing layer (with Server-Timing switched on) inserts one into each request; any layer may then add an entry
/// with [`ServerTiming::record`] through [`ServerTiming::from_request`]. When the response head leaves, the layer that
/// owns the extension calls [`seal`](ServerTiming::seal) to get the header value; entries added after that are
/// dropped, or kept for a trailer when the client sent `TE: trailers` (see [`with_trailers`](ServerTiming::with_trailers)).
///
/// Names are written as RFC 9110 tokens (other characters become `_`); descriptions as tokens when they can be,
/// otherwise as quoted strings with `"` and `\` escaped; control characters are removed.
///
/// ```
/// use std::time::Duration;
/// use tower_kit_core::ServerTiming;
///
/// let timing = ServerTiming::new();
/// timing.describe("cache", "hit");
/// timing.duration("queue", Duration::from_micros(1200));
/// assert_eq!(timing.seal().unwrap(), "cache;desc=hit, queue;dur=1.2");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ServerTiming {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    entries: Vec<Entry>,
    late: Vec<Entry>,
    sealed: bool,
    keep_late: bool,
}

#[derive(Debug)]
struct Entry {
    name: Cow<'static, str>,
    dur: Option<Duration>,
    desc: Option<Cow<'static, str>>,
}

impl ServerTiming {
    /// An empty collection; entries added after [`seal`](Self::seal) are dropped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep entries added after the head left, for a trailer. Use it only when the client sent `TE: trailers`
    /// ([`accepts_trailers`]).
    #[must_use]
    pub fn with_trailers(self, keep: bool) -> Self {
        self.lock().keep_late = keep;
        self
    }

    /// The collection in a request's extensions, if a layer outside put one there.
    pub fn from_request<B>(request: &Request<B>) -> Option<&ServerTiming> {
        request.extensions().get::<ServerTiming>()
    }

    /// Adds an entry: a metric name, an optional duration (written in milliseconds) and an optional description.
    pub fn record(
        &self,
        name: impl Into<Cow<'static, str>>,
        dur: Option<Duration>,
        desc: Option<Cow<'static, str>>,
    ) {
        let entry = Entry {
            name: name.into(),
            dur,
            desc,
        };
        let mut state = self.lock();
        if !state.sealed {
            state.entries.push(entry);
        } else if state.keep_late {
            state.late.push(entry);
        }
    }

    /// Adds a `name;dur=<ms>` entry.
    pub fn duration(&self, name: impl Into<Cow<'static, str>>, dur: Duration) {
        self.record(name, Some(dur), None);
    }

    /// Adds a `name;desc=<desc>` entry.
    pub fn describe(&self, name: impl Into<Cow<'static, str>>, desc: impl Into<Cow<'static, str>>) {
        self.record(name, None, Some(desc.into()));
    }

    /// Marks the head as sent and returns the header value for the entries so far (`None` when there are none).
    pub fn seal(&self) -> Option<HeaderValue> {
        let mut state = self.lock();
        state.sealed = true;
        format_entries(&state.entries, None)
    }

    /// Like [`seal`](Self::seal), with one more entry first (the timing layer's own `app;dur=`).
    pub fn seal_with(&self, name: &str, dur: Duration) -> Option<HeaderValue> {
        let mut state = self.lock();
        state.sealed = true;
        format_entries(&state.entries, Some((name, dur)))
    }

    /// The entries added after [`seal`](Self::seal), formatted for a trailer, if trailers were asked for.
    pub fn take_late(&self) -> Option<HeaderValue> {
        let mut state = self.lock();
        let late = std::mem::take(&mut state.late);
        format_entries(&late, None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // An entry list is valid whatever a panicking holder was doing: ignore poisoning.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether the request's `TE` header lists `trailers` (the client will read a trailer section).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|member| {
                member
                    .split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        })
    })
}

fn format_entries(entries: &[Entry], first: Option<(&str, Duration)>) -> Option<HeaderValue> {
    if entries.is_empty() && first.is_none() {
        return None;
    }
    let mut out = String::with_capacity(16 * (entries.len() + 1));
    if let Some((name, dur)) = first {
        write_entry(&mut out, name, Some(dur), None);
    }
    for e in entries {
        if !out.is_empty() {
            out.push_str(", ");
        }
        write_entry(&mut out, &e.name, e.dur, e.desc.as_deref());
    }
    // Every byte written is visible ASCII, a space or a tab, so this cannot fail; stay total anyway.
    HeaderValue::from_str(&out).ok()
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn write_entry(out: &mut String, name: &str, dur: Option<Duration>, desc: Option<&str>) {
    if name.is_empty() {
        out.push('_');
    }
    out.extend(name.chars().map(|c| if is_tchar(c) { c } else { '_' }));
    if let Some(dur) = dur {
        out.push_str(";dur=");
        write_millis(out, dur);
    }
    if let Some(desc) = desc {
        out.push_str(";desc=");
        if !desc.is_empty() && desc.chars().all(is_tchar) {
            out.push_str(desc);
        } else {
            out.push('"');
            for c in desc.chars() {
                match c {
                    '"' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    ' ' | '\t' => out.push(c),
                    c if c.is_ascii_graphic() => out.push(c),
                    _ => {} // control characters and non-ASCII cannot go in a header value
                }
            }
            out.push('"');
        }
    }
}

/// Milliseconds with at most three decimals, trailing zeros trimmed: `1.2`, `0.003`, `250`.
fn write_millis(out: &mut String, dur: Duration) {
    let micros = dur.as_micros();
    let (whole, frac) = (micros / 1000, micros % 1000);
    let _ = write!(out, "{whole}");
    if frac != 0 {
        let mut digits = format!("{frac:03}");
        while digits.ends_with('0') {
            digits.pop();
        }
        out.push('.');
        out.push_str(&digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_several_entries_in_order() {
        let t = ServerTiming::new();
        t.describe("cache", "hit");
        t.record(
            "db",
            Some(Duration::from_millis(53)),
            Some("users query".into()),
        );
        assert_eq!(
            t.seal_with("app", Duration::from_micros(47_250)).unwrap(),
            r#"app;dur=47.25, cache;desc=hit, db;dur=53;desc="users query""#
        );
    }

    #[test]
    fn escapes_quotes_backslashes_and_drops_controls() {
        let t = ServerTiming::new();
        t.describe("bad name,;=", "a\"b\\c\r\nd\u{7f}é");
        assert_eq!(t.seal().unwrap(), r#"bad_name___;desc="a\"b\\cd""#);
        let t = ServerTiming::new();
        t.describe("", "");
        assert_eq!(t.seal().unwrap(), r#"_;desc="""#);
    }

    #[test]
    fn millis_formatting() {
        for (micros, want) in [
            (0, "0"),
            (3, "0.003"),
            (1200, "1.2"),
            (250_000, "250"),
            (1_000_001, "1000.001"),
        ] {
            let mut s = String::new();
            write_millis(&mut s, Duration::from_micros(micros));
            assert_eq!(s, want);
        }
    }

    #[test]
    fn empty_has_no_header() {
        assert!(ServerTiming::new().seal().is_none());
    }

    #[test]
    fn late_entries_are_dropped_unless_trailers_were_asked_for() {
        let t = ServerTiming::new();
        t.describe("a", "x");
        assert_eq!(t.seal().unwrap(), "a;desc=x");
        t.duration("late", Duration::from_millis(1));
        assert!(t.take_late().is_none());

        let t = ServerTiming::new().with_trailers(true);
        t.seal();
        t.duration("late", Duration::from_millis(1));
        assert_eq!(t.take_late().unwrap(), "late;dur=1");
        assert!(t.take_late().is_none(), "taken once");
    }

    #[test]
    fn te_trailers_detection() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(http::header::TE, "gzip, Trailers;q=1".parse().unwrap());
        assert!(accepts_trailers(&h));
        h.insert(http::header::TE, "trailersx".parse().unwrap());
        assert!(!accepts_trailers(&h));
    }

    proptest::proptest! {
        #[test]
        fn any_entry_makes_a_valid_header(name in ".{0,40}", desc in proptest::option::of(".{0,40}"), ms in 0u64..10_000_000) {
            let t = ServerTiming::new();
            t.record(name, Some(Duration::from_micros(ms)), desc.map(Into::into));
            proptest::prop_assert!(t.seal().is_some());
        }
    }
}
