//! The binary layout of a [`StoredValue`] in a remote store.
//!
//! `b"TKC"`, the [`Entry::FORMAT_VERSION`] byte, a kind byte, then the fields in a fixed order: integers big endian,
//! byte strings prefixed by their `u32` length, times as seconds and nanoseconds since the Unix epoch. A value that
//! does not decode exactly (other magic or version, truncated, trailing bytes, invalid header) is `None`: the
//! store reads it as a miss.

use crate::entry::{Entry, StoredValue, Variants};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const MAGIC: &[u8; 3] = b"TKC";
const RESPONSE: u8 = 0;
const VARIANTS: u8 = 1;
const PASS: u8 = 2;

/// Serialises `value`.
pub(crate) fn encode(value: &StoredValue) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(value.weight()));
    w.0.extend_from_slice(MAGIC);
    w.0.push(Entry::FORMAT_VERSION);
    match value {
        StoredValue::Response(e) => {
            w.0.push(RESPONSE);
            w.u16(e.status.as_u16());
            w.headers(&e.headers);
            w.bytes(&e.body);
            match &e.trailers {
                Some(t) => {
                    w.0.push(1);
                    w.headers(t);
                }
                None => w.0.push(0),
            }
            w.time(e.request_time);
            w.time(e.response_time);
            w.duration(e.initial_age);
            w.duration(e.freshness_lifetime);
            w.u32(e.vary.len());
            for (name, v) in &e.vary {
                w.bytes(name.as_str().as_bytes());
                w.opt_bytes(v.as_ref().map(String::as_bytes));
            }
            w.u32(e.tags.len());
            for t in &e.tags {
                w.bytes(t.as_bytes());
            }
            let flags = u8::from(e.public)
                | u8::from(e.shared_with_authorization) << 1
                | u8::from(e.no_cache) << 2
                | u8::from(e.must_revalidate) << 3;
            w.0.push(flags);
            w.opt_duration(e.stale_while_revalidate);
            w.opt_duration(e.stale_if_error);
        }
        StoredValue::Variants(v) => {
            w.0.push(VARIANTS);
            w.u32(v.headers.len());
            for h in &v.headers {
                w.bytes(h.as_str().as_bytes());
            }
            w.time(v.until);
        }
        StoredValue::Pass { until } => {
            w.0.push(PASS);
            w.time(*until);
        }
    }
    w.0
}

/// Deserialises a value written by [`encode`] with this crate's format version; `None` for anything else.
pub(crate) fn decode(raw: &[u8]) -> Option<StoredValue> {
    let mut r = Reader(raw);
    if r.take(3)? != MAGIC || r.u8()? != Entry::FORMAT_VERSION {
        return None;
    }
    let value = match r.u8()? {
        RESPONSE => {
            let status = StatusCode::from_u16(r.u16()?).ok()?;
            let headers = r.headers()?;
            let body = Bytes::copy_from_slice(r.bytes()?);
            let trailers = match r.u8()? {
                0 => None,
                1 => Some(r.headers()?),
                _ => return None,
            };
            let request_time = r.time()?;
            let response_time = r.time()?;
            let initial_age = r.duration()?;
            let freshness_lifetime = r.duration()?;
            let vary = (0..r.count()?)
                .map(|_| {
                    let name = HeaderName::from_bytes(r.bytes()?).ok()?;
                    let value = match r.u8()? {
                        0 => None,
                        1 => Some(std::str::from_utf8(r.bytes()?).ok()?.to_owned()),
                        _ => return None,
                    };
                    Some((name, value))
                })
                .collect::<Option<Vec<_>>>()?;
            let tags = (0..r.count()?)
                .map(|_| Some(std::str::from_utf8(r.bytes()?).ok()?.to_owned()))
                .collect::<Option<Vec<_>>>()?;
            let flags = r.u8()?;
            if flags > 0b1111 {
                return None;
            }
            StoredValue::Response(Arc::new(Entry {
                status,
                headers,
                body,
                trailers,
                request_time,
                response_time,
                initial_age,
                freshness_lifetime,
                vary,
                tags,
                public: flags & 1 != 0,
                shared_with_authorization: flags & 2 != 0,
                no_cache: flags & 4 != 0,
                must_revalidate: flags & 8 != 0,
                stale_while_revalidate: r.opt_duration()?,
                stale_if_error: r.opt_duration()?,
            }))
        }
        VARIANTS => {
            let headers = (0..r.count()?)
                .map(|_| HeaderName::from_bytes(r.bytes()?).ok())
                .collect::<Option<Vec<_>>>()?;
            StoredValue::Variants(Arc::new(Variants {
                headers,
                until: r.time()?,
            }))
        }
        PASS => StoredValue::Pass { until: r.time()? },
        _ => return None,
    };
    r.0.is_empty().then_some(value)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: usize) {
        let v = u32::try_from(v).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len());
        self.0.extend_from_slice(b);
    }

    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.0.push(1);
                self.bytes(b);
            }
            None => self.0.push(0),
        }
    }

    fn duration(&mut self, d: Duration) {
        self.0.extend_from_slice(&d.as_secs().to_be_bytes());
        self.0.extend_from_slice(&d.subsec_nanos().to_be_bytes());
    }

    fn opt_duration(&mut self, d: Option<Duration>) {
        match d {
            Some(d) => {
                self.0.push(1);
                self.duration(d);
            }
            None => self.0.push(0),
        }
    }

    fn time(&mut self, t: SystemTime) {
        self.duration(t.duration_since(UNIX_EPOCH).unwrap_or_default());
    }

    fn headers(&mut self, h: &HeaderMap) {
        self.u32(h.len());
        for (name, value) in h {
            self.bytes(name.as_str().as_bytes());
            self.bytes(value.as_bytes());
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A count of items, each at least one byte long: more than the bytes left is garbage (and no huge allocation).
    fn count(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= self.0.len()).then_some(n)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn duration(&mut self) -> Option<Duration> {
        let secs = self.u64()?;
        let nanos = self.u32()?;
        (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
    }

    fn opt_duration(&mut self) -> Option<Option<Duration>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.duration()?)),
            _ => None,
        }
    }

    fn time(&mut self) -> Option<SystemTime> {
        UNIX_EPOCH.checked_add(self.duration()?)
    }

    fn headers(&mut self) -> Option<HeaderMap> {
        let n = self.count()?;
        let mut map = HeaderMap::with_capacity(n);
        for _ in 0..n {
            let name = HeaderName::from_bytes(self.bytes()?).ok()?;
            let value = HeaderValue::from_bytes(self.bytes()?).ok()?;
            map.append(name, value);
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::sample_entry;

    fn values() -> Vec<StoredValue> {
        vec![
            StoredValue::Response(Arc::new(sample_entry(b"body", &["a", "b"]))),
            StoredValue::Response(Arc::new(sample_entry(b"", &[]))),
            StoredValue::Variants(Arc::new(Variants {
                headers: vec![HeaderName::from_static("accept-encoding")],
                until: UNIX_EPOCH + Duration::new(5, 6),
            })),
            StoredValue::Pass {
                until: UNIX_EPOCH + Duration::new(7, 8),
            },
        ]
    }

    #[test]
    fn every_value_round_trips() {
        for v in values() {
            assert_eq!(decode(&encode(&v)), Some(v));
        }
    }

    #[test]
    fn truncated_values_are_none() {
        for v in values() {
            let raw = encode(&v);
            for len in 0..raw.len() {
                assert_eq!(decode(&raw[..len]), None, "truncated at {len}");
            }
        }
    }

    #[test]
    fn other_versions_trailing_bytes_and_garbage_are_none() {
        let mut raw = encode(&values()[0]);
        raw[3] = Entry::FORMAT_VERSION - 1;
        assert_eq!(decode(&raw), None, "old version");
        let mut raw = encode(&values()[0]);
        raw.push(0);
        assert_eq!(decode(&raw), None, "trailing byte");
        assert_eq!(decode(b"not a cache entry at all"), None);
        assert_eq!(decode(b"TKC\x02\x09"), None, "unknown kind");
        // A huge count in a short value is refused before allocating.
        let mut raw = b"TKC".to_vec();
        raw.extend_from_slice(&[Entry::FORMAT_VERSION, VARIANTS, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode(&raw), None, "huge count");
    }

    #[test]
    fn every_byte_flipped_is_a_miss_or_a_value_never_a_panic() {
        let raw = encode(&values()[0]);
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0xa5;
            let _ = decode(&bad);
        }
    }
}
