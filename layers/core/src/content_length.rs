//! [`content_length`]: the one strict reading of `Content-Length` every layer uses.

use http::{HeaderMap, header::CONTENT_LENGTH};

/// The value of `Content-Length`, if it is a plain decimal number: no sign, no spaces, no empty value.
///
/// Several `Content-Length` fields (or a list in one field) are accepted only when every value is the same number
/// (RFC 9110 §8.6); anything else is `None`, and the caller treats the length as unknown.
///
/// ```
/// use http::{HeaderMap, HeaderValue, header::CONTENT_LENGTH};
/// use tower_kit_core::content_length;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(content_length(&headers), None);
/// headers.insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
/// assert_eq!(content_length(&headers), Some(42));
/// headers.insert(CONTENT_LENGTH, HeaderValue::from_static("+42"));
/// assert_eq!(content_length(&headers), None);
/// ```
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    let mut length = None;
    for value in std::iter::once(first).chain(values) {
        for item in value.to_str().ok()?.split(',') {
            let n = parse_decimal(item.trim_matches([' ', '\t']))?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// The common case first: one field with digits only.
#[inline]
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(CONTENT_LENGTH, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn strict_values() {
        for (values, want) in [
            (&["0"][..], Some(0)),
            (&["42"], Some(42)),
            (&["18446744073709551615"], Some(u64::MAX)),
            (&["18446744073709551616"], None),
            (&[""], None),
            (&["+1"], None),
            (&["-1"], None),
            (&["1.0"], None),
            (&["0x10"], None),
            (&["42", "42"], Some(42)),
            (&["42, 42"], Some(42)),
            (&["42", "43"], None),
            (&["42,43"], None),
            (&["42,"], None),
        ] {
            assert_eq!(content_length(&with(values)), want, "{values:?}");
        }
    }

    proptest! {
        #[test]
        fn any_value_no_panic_and_digits_round_trip(s in "\\PC*", n in any::<u64>()) {
            if let Ok(v) = HeaderValue::from_str(&s) {
                let mut h = HeaderMap::new();
                h.insert(CONTENT_LENGTH, v);
                let _ = content_length(&h);
            }
            let mut h = HeaderMap::new();
            h.insert(CONTENT_LENGTH, HeaderValue::from(n));
            prop_assert_eq!(content_length(&h), Some(n));
        }
    }
}
