//! Targeted cache control (RFC 9213): response fields such as `CDN-Cache-Control` that carry cache directives for
//! one class of caches. Each is a Structured Field dictionary (RFC 8941 §3.2), parsed here strictly: any syntax
//! error makes the whole field invalid, and an invalid or empty field is ignored as if it were absent.

use crate::control::ResponseDirectives;
use http::{HeaderMap, HeaderName};
use std::{borrow::Cow, time::Duration};

/// The directives of the first field in `names` (precedence order) that is present, valid and not empty (RFC 9213
/// §2.1). `None` when there is none: `Cache-Control` and `Expires` decide then.
pub(crate) fn directives(headers: &HeaderMap, names: &[HeaderName]) -> Option<ResponseDirectives> {
    names.iter().find_map(|name| field(headers, name))
}

/// One targeted field's directives, if it is present, valid and not empty.
fn field(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    let mut lines = headers.get_all(name).iter();
    let first = lines.next()?.to_str().ok()?;
    // Several field lines are one dictionary, joined with commas (RFC 8941 §4.2).
    let mut text = Cow::Borrowed(first);
    for line in lines {
        let text = text.to_mut();
        text.push_str(", ");
        text.push_str(line.to_str().ok()?);
    }
    let members = parse_dictionary(&text).ok()?;
    if members.is_empty() {
        return None;
    }
    let mut out = ResponseDirectives::default();
    for (key, item) in members {
        apply(&mut out, key, item);
    }
    Some(out)
}

/// A dictionary member's value, as far as cache directives care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    Integer(i64),
    Boolean(bool),
    Decimal,
    String,
    Token,
    ByteSequence,
    InnerList,
}

/// One member of a targeted field as a cache directive (RFC 9213 §2.1: the directives of `Cache-Control`, with
/// Structured Field values). `?0` turns a directive off; a delta-seconds directive whose value is not a
/// non-negative integer makes the response stale, as an unreadable `max-age` in `Cache-Control` does.
fn apply(out: &mut ResponseDirectives, key: &str, item: Item) {
    let seconds = match item {
        Item::Integer(n) if n >= 0 => Some(Duration::from_secs(n.unsigned_abs().min(1 << 31))),
        _ => None,
    };
    out.set(key, item != Item::Boolean(false), seconds);
}

/// A Structured Field dictionary was not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

/// Parses an RFC 8941 dictionary: its members in order, a repeated key keeping its place and taking the last
/// value. Parameters are checked and skipped.
pub(crate) fn parse_dictionary(text: &str) -> Result<Vec<(&str, Item)>, Invalid> {
    let mut p = Parser {
        text,
        s: text.as_bytes(),
        i: 0,
    };
    if !text.is_ascii() {
        return Err(Invalid);
    }
    let mut out: Vec<(&str, Item)> = Vec::new();
    p.skip(|b| b == b' ');
    if p.done() {
        return Ok(out);
    }
    loop {
        let key = p.key()?;
        let item = if p.eat(b'=') {
            p.member_value()?
        } else {
            p.parameters()?;
            Item::Boolean(true)
        };
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(member) => member.1 = item,
            None => out.push((key, item)),
        }
        p.skip(|b| b == b' ' || b == b'\t');
        if p.done() {
            return Ok(out);
        }
        if !p.eat(b',') {
            return Err(Invalid);
        }
        p.skip(|b| b == b' ' || b == b'\t');
        if p.done() {
            // A trailing comma.
            return Err(Invalid);
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip(&mut self, class: impl Fn(u8) -> bool) -> usize {
        let start = self.i;
        while self.peek().is_some_and(&class) {
            self.i += 1;
        }
        self.i - start
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`
    fn key(&mut self) -> Result<&'a str, Invalid> {
        let start = self.i;
        match self.peek() {
            Some(b) if b.is_ascii_lowercase() || b == b'*' => self.i += 1,
            _ => return Err(Invalid),
        }
        self.skip(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        Ok(&self.text[start..self.i])
    }

    /// An item with its parameters, or an inner list with its parameters.
    fn member_value(&mut self) -> Result<Item, Invalid> {
        if self.eat(b'(') {
            loop {
                self.skip(|b| b == b' ');
                if self.eat(b')') {
                    self.parameters()?;
                    return Ok(Item::InnerList);
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return Err(Invalid);
                }
            }
        }
        let item = self.bare_item()?;
        self.parameters()?;
        Ok(item)
    }

    /// `*( ";" *SP key [ "=" bare-item ] )`, checked and dropped.
    fn parameters(&mut self) -> Result<(), Invalid> {
        while self.eat(b';') {
            self.skip(|b| b == b' ');
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Ok(())
    }

    fn bare_item(&mut self) -> Result<Item, Invalid> {
        match self.peek().ok_or(Invalid)? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b':' => self.byte_sequence(),
            b'?' => {
                self.i += 1;
                let value = match self.peek() {
                    Some(b'1') => true,
                    Some(b'0') => false,
                    _ => return Err(Invalid),
                };
                self.i += 1;
                Ok(Item::Boolean(value))
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.i += 1;
                self.skip(|b| is_tchar(b) || b == b':' || b == b'/');
                Ok(Item::Token)
            }
            _ => Err(Invalid),
        }
    }

    /// An integer (at most 15 digits) or a decimal (at most 12 integer and 3 fraction digits).
    fn number(&mut self) -> Result<Item, Invalid> {
        let negative = self.eat(b'-');
        let start = self.i;
        let whole = self.skip(|b| b.is_ascii_digit());
        if whole == 0 {
            return Err(Invalid);
        }
        if self.eat(b'.') {
            let fraction = self.skip(|b| b.is_ascii_digit());
            if whole > 12 || fraction == 0 || fraction > 3 {
                return Err(Invalid);
            }
            return Ok(Item::Decimal);
        }
        if whole > 15 {
            return Err(Invalid);
        }
        let n: i64 = self.text[start..self.i].parse().map_err(|_| Invalid)?;
        Ok(Item::Integer(if negative { -n } else { n }))
    }

    /// `DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE`, printable ASCII only.
    fn string(&mut self) -> Result<Item, Invalid> {
        self.i += 1;
        loop {
            match self.peek().ok_or(Invalid)? {
                b'"' => {
                    self.i += 1;
                    return Ok(Item::String);
                }
                b'\\' => {
                    self.i += 1;
                    if !matches!(self.peek(), Some(b'"' | b'\\')) {
                        return Err(Invalid);
                    }
                    self.i += 1;
                }
                0x20..=0x7e => self.i += 1,
                _ => return Err(Invalid),
            }
        }
    }

    /// `":" *base64 ":"`.
    fn byte_sequence(&mut self) -> Result<Item, Invalid> {
        self.i += 1;
        self.skip(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        if self.eat(b':') {
            Ok(Item::ByteSequence)
        } else {
            Err(Invalid)
        }
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vary::tests::headers;

    #[test]
    fn valid_dictionaries() {
        use Item::*;
        fn ok(s: &str) -> Vec<(&str, Item)> {
            parse_dictionary(s).unwrap()
        }
        assert_eq!(ok(""), vec![]);
        assert_eq!(ok("max-age=60"), vec![("max-age", Integer(60))]);
        assert_eq!(
            ok("  no-store, max-age=0,\tprivate;x=1 , s-maxage=-5"),
            vec![
                ("no-store", Boolean(true)),
                ("max-age", Integer(0)),
                ("private", Boolean(true)),
                ("s-maxage", Integer(-5)),
            ]
        );
        assert_eq!(
            ok(r#"a="x \"y\" \\", b=tok/en:1, c=?0, d=1.25, e=:aGk=:, f=(1 "two" t;p);q, *g"#),
            vec![
                ("a", String),
                ("b", Token),
                ("c", Boolean(false)),
                ("d", Decimal),
                ("e", ByteSequence),
                ("f", InnerList),
                ("*g", Boolean(true)),
            ]
        );
        // A repeated key keeps its place and takes the last value (RFC 8941 §4.2.2).
        assert_eq!(
            ok("max-age=5, no-store, max-age=10"),
            vec![("max-age", Integer(10)), ("no-store", Boolean(true))]
        );
        assert_eq!(
            ok("max-age=999999999999999"),
            vec![("max-age", Integer(999_999_999_999_999))]
        );
        assert_eq!(ok("a=()"), vec![("a", InnerList)]);
    }

    #[test]
    fn invalid_dictionaries() {
        for bad in [
            "Max-Age=60",
            "max-age=60,",
            "max-age=60,,no-store",
            ",max-age=60",
            "max-age=",
            "max-age=1234567890123456",
            "max-age=1.2345",
            "max-age=1.",
            "max-age=--1",
            "a=\"unterminated",
            "a=\"bad \\n escape\"",
            "a=?2",
            "a=:abc",
            "a=(1 2",
            "a=(1,2)",
            "a b",
            "a=1 b=2",
            "a;=1",
            "a=#x",
            "caf\u{e9}",
            "1a",
        ] {
            assert_eq!(parse_dictionary(bad), Err(Invalid), "{bad:?}");
        }
    }

    fn names(list: &[&'static str]) -> Vec<HeaderName> {
        list.iter().map(|n| HeaderName::from_static(n)).collect()
    }

    #[test]
    fn directives_from_a_targeted_field() {
        let cdn = names(&["cdn-cache-control"]);
        let d = directives(
            &headers(&[(
                "cdn-cache-control",
                "max-age=60, s-maxage=90, stale-while-revalidate=5, stale-if-error=30, must-revalidate",
            )]),
            &cdn,
        )
        .unwrap();
        assert_eq!(d.max_age, Some(Duration::from_secs(60)));
        assert_eq!(d.s_maxage, Some(Duration::from_secs(90)));
        assert_eq!(d.stale_while_revalidate, Some(Duration::from_secs(5)));
        assert_eq!(d.stale_if_error, Some(Duration::from_secs(30)));
        assert!(d.must_revalidate && !d.no_store && !d.invalid_freshness);
        let d = directives(
            &headers(&[(
                "cdn-cache-control",
                "no-store, private=?0, no-cache=\"set-cookie\"",
            )]),
            &cdn,
        )
        .unwrap();
        assert!(d.no_store && !d.private && d.no_cache);
        // Two field lines are one dictionary.
        let d = directives(
            &headers(&[
                ("cdn-cache-control", "max-age=60"),
                ("cdn-cache-control", "private"),
            ]),
            &cdn,
        )
        .unwrap();
        assert!(d.private && d.max_age == Some(Duration::from_secs(60)));
        // A value of the wrong type makes the response stale; it is not a parse error.
        for v in [
            "max-age=1.5",
            "max-age=-1",
            "max-age=\"60\"",
            "s-maxage=soon",
        ] {
            let d = directives(&headers(&[("cdn-cache-control", v)]), &cdn).unwrap();
            assert!(d.invalid_freshness, "{v}");
        }
        let d = directives(
            &headers(&[("cdn-cache-control", "max-age=60; no-store")]),
            &cdn,
        )
        .unwrap();
        assert!(!d.no_store, "a parameter is not a directive");
        let d = directives(
            &headers(&[("cdn-cache-control", "max-age=99999999999")]),
            &cdn,
        )
        .unwrap();
        assert_eq!(d.max_age, Some(Duration::from_secs(1 << 31)));
    }

    #[test]
    fn invalid_or_empty_fields_are_ignored_whole() {
        let cdn = names(&["cdn-cache-control"]);
        for v in [
            "max-age=60, Private",
            "max-age=60,",
            "max-age=60 no-store",
            "",
        ] {
            assert_eq!(
                directives(&headers(&[("cdn-cache-control", v)]), &cdn),
                None,
                "{v:?}"
            );
        }
        // An invalid second line spoils the whole field.
        let h = headers(&[
            ("cdn-cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store;"),
        ]);
        assert_eq!(directives(&h, &cdn), None);
        assert_eq!(
            directives(&headers(&[("cache-control", "max-age=5")]), &cdn),
            None
        );
        assert_eq!(
            directives(&headers(&[("cdn-cache-control", "max-age=5")]), &[]),
            None
        );
    }

    proptest::proptest! {
        /// Any field value: no panic, and a dictionary that parses still parses with its members serialised again
        /// (keys and integer or boolean values; others as tokens).
        #[test]
        fn any_input_parses_or_is_invalid(text in "[ -~\t]{0,40}") {
            if let Ok(members) = parse_dictionary(&text) {
                let again: Vec<String> = members
                    .iter()
                    .map(|(k, v)| match v {
                        Item::Integer(n) => format!("{k}={n}"),
                        Item::Boolean(true) => (*k).to_owned(),
                        Item::Boolean(false) => format!("{k}=?0"),
                        _ => format!("{k}=t"),
                    })
                    .collect();
                let reparsed = parse_dictionary(&again.join(", ")).map(|m| m.len());
                proptest::prop_assert_eq!(reparsed, Ok(members.len()));
            }
            let _ = directives(&headers(&[("cdn-cache-control", text.trim())]), &names(&["cdn-cache-control"]));
        }

        /// Dictionaries of directives written out are always valid and read back as written.
        #[test]
        fn written_dictionaries_read_back(age in 0i64..999_999_999_999_999, off in proptest::bool::ANY) {
            let text = format!("max-age={age};p=1, no-store={}", if off { "?0" } else { "?1" });
            let d = directives(&headers(&[("cdn-cache-control", &text)]), &names(&["cdn-cache-control"]));
            let d = d.expect("valid");
            proptest::prop_assert_eq!(d.max_age, Some(Duration::from_secs(age.unsigned_abs().min(1 << 31))));
            proptest::prop_assert_eq!(d.no_store, !off);
        }
    }

    #[test]
    fn the_first_valid_configured_field_wins() {
        let list = names(&["acme-cache-control", "cdn-cache-control"]);
        let age = |h: &HeaderMap| {
            directives(h, &list)
                .and_then(|d| d.max_age)
                .map(|d| d.as_secs())
        };
        let both = headers(&[
            ("cdn-cache-control", "max-age=10"),
            ("acme-cache-control", "max-age=20"),
        ]);
        assert_eq!(age(&both), Some(20), "precedence is the configured order");
        let acme_invalid = headers(&[
            ("cdn-cache-control", "max-age=10"),
            ("acme-cache-control", "max-age=20,"),
        ]);
        assert_eq!(
            age(&acme_invalid),
            Some(10),
            "an invalid field falls through"
        );
        let acme_empty = headers(&[
            ("cdn-cache-control", "max-age=10"),
            ("acme-cache-control", " "),
        ]);
        assert_eq!(age(&acme_empty), Some(10), "an empty field falls through");
        let cdn_only = headers(&[("cdn-cache-control", "max-age=10")]);
        assert_eq!(age(&cdn_only), Some(10));
        let other = names(&["cdn-cache-control"]);
        assert_eq!(
            directives(&headers(&[("acme-cache-control", "max-age=20")]), &other),
            None,
            "a field not configured is not this cache's"
        );
    }
}
