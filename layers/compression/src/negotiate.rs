//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3) for every coding.

use crate::codec::Coding;
use http::{HeaderMap, header::ACCEPT_ENCODING};

/// What a request's `Accept-Encoding` says, in thousandths per coding (`None`: not listed).
#[derive(Debug, Default, Clone, Copy)]
struct Accepted {
    codings: [Option<u16>; 4],
    star: Option<u16>,
    identity: Option<u16>,
}

fn parse(headers: &HeaderMap) -> Option<Accepted> {
    let mut accepted = Accepted::default();
    let mut any = false;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for member in text.split(',') {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            if coding.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                let Some((name, value)) = param.split_once('=') else {
                    q = None;
                    break;
                };
                if name.trim().eq_ignore_ascii_case("q") {
                    q = parse_qvalue(value.trim());
                }
            }
            let Some(q) = q else { continue };
            let slot = if let Some(known) = Coding::from_token(coding) {
                &mut accepted.codings[known.index()]
            } else if coding == "*" {
                &mut accepted.star
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut accepted.identity
            } else {
                // Unknown codings are ignored.
                continue;
            };
            any = true;
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
    }
    any.then_some(accepted)
}

/// The coding to answer a request with, given its headers and the server's codings in preference order (first
/// preferred); `None` means identity (send the body as it is).
///
/// - Members are `coding *( OWS ";" OWS param )`, separated by commas, over every `Accept-Encoding` line; codings and
///   parameter names are case-insensitive; `x-gzip` is an alias of `gzip`; unknown codings are ignored.
/// - `q` is a qvalue (`0`, `0.5`, `1.000`); a member with a malformed qvalue is ignored, as is an unreadable line.
/// - A coding listed with `q > 0` is acceptable at that weight; an explicit `q=0` refuses it even when `*` would
///   accept; a coding not listed takes the weight of `*` when `*` is listed.
/// - The acceptable coding with the highest weight wins; ties go to the server's preference order.
/// - When `identity` is listed with a higher weight than the best coding, identity is preferred.
/// - No header, or an empty one, means identity only: nothing is compressed.
pub fn choose_coding(headers: &HeaderMap, preference: &[Coding]) -> Option<Coding> {
    let compiled = preference
        .iter()
        .copied()
        .filter(|coding| coding.is_compiled());
    best_of(parse(headers)?, compiled)
}

/// The acceptable coding of `preference` with the highest weight (first on ties), unless identity weighs more.
fn best_of(accepted: Accepted, preference: impl Iterator<Item = Coding>) -> Option<Coding> {
    let mut best: Option<(Coding, u16)> = None;
    for coding in preference {
        let q = accepted.codings[coding.index()]
            .or(accepted.star)
            .unwrap_or(0);
        if q > 0 && best.is_none_or(|(_, best_q)| q > best_q) {
            best = Some((coding, q));
        }
    }
    let (coding, q) = best?;
    accepted
        .identity
        .is_none_or(|identity_q| q >= identity_q)
        .then_some(coding)
}

/// Whether the request's `Accept-Encoding` lets the server answer with gzip (whether or not the `gzip` feature is
/// on: the parser's tests read gzip's weight).
#[cfg(test)]
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    parse(headers)
        .and_then(|accepted| best_of(accepted, std::iter::once(Coding::Gzip)))
        .is_some()
}

/// A qvalue in thousandths: `( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn accepts(values: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&headers)
    }

    fn pick(values: &[&str]) -> Option<Coding> {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        choose_coding(&headers, &crate::DEFAULT_PREFERENCE)
    }

    /// The negotiation rules, on the default preference with every codec compiled in.
    #[cfg(all(
        feature = "gzip",
        feature = "deflate",
        feature = "br",
        feature = "zstd"
    ))]
    mod every_codec {
        use super::*;

        #[test]
        fn each_coding_is_chosen_when_it_is_the_only_one() {
            assert_eq!(pick(&["gzip"]), Some(Coding::Gzip));
            assert_eq!(pick(&["x-gzip"]), Some(Coding::Gzip));
            assert_eq!(pick(&["deflate"]), Some(Coding::Deflate));
            assert_eq!(pick(&["br"]), Some(Coding::Br));
            assert_eq!(pick(&["zstd"]), Some(Coding::Zstd));
        }

        #[test]
        fn rule_highest_qvalue_wins() {
            assert_eq!(
                pick(&["gzip;q=1, br;q=0.9, zstd;q=0.8"]),
                Some(Coding::Gzip)
            );
            assert_eq!(pick(&["zstd;q=0.1, deflate;q=0.2"]), Some(Coding::Deflate));
            assert_eq!(
                pick(&["br;q=0.5", "gzip;q=0.6"]),
                Some(Coding::Gzip),
                "over lines"
            );
        }

        #[test]
        fn rule_ties_go_to_the_server_preference() {
            // What browsers send.
            assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some(Coding::Zstd));
            assert_eq!(pick(&["gzip, deflate, br"]), Some(Coding::Br));
            assert_eq!(pick(&["deflate, gzip"]), Some(Coding::Gzip));
            assert_eq!(pick(&["br;q=0.5, gzip;q=0.5"]), Some(Coding::Br));
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip, br, zstd"));
            assert_eq!(
                choose_coding(&headers, &[Coding::Gzip, Coding::Br]),
                Some(Coding::Gzip),
                "a custom order, zstd not offered"
            );
        }

        #[test]
        fn rule_star_covers_codings_not_listed() {
            assert_eq!(pick(&["*"]), Some(Coding::Zstd));
            assert_eq!(
                pick(&["zstd;q=0, *"]),
                Some(Coding::Br),
                "explicit refusal beats *"
            );
            assert_eq!(pick(&["gzip;q=0.5, *;q=0.9"]), Some(Coding::Zstd));
            assert_eq!(pick(&["gzip, *;q=0"]), Some(Coding::Gzip));
            assert_eq!(pick(&["*;q=0"]), None);
        }

        #[test]
        fn rule_identity_preferred_or_refused() {
            assert_eq!(pick(&["br;q=0.5, identity"]), None, "identity weighs more");
            assert_eq!(pick(&["br, identity;q=0.5"]), Some(Coding::Br));
            assert_eq!(pick(&["zstd, identity;q=0"]), Some(Coding::Zstd));
            assert_eq!(pick(&["identity"]), None);
            assert_eq!(
                pick(&["identity;q=0"]),
                None,
                "nothing acceptable: sent as it is"
            );
        }

        #[test]
        fn rule_unknown_codings_are_ignored() {
            assert_eq!(pick(&["compress, br"]), Some(Coding::Br));
            assert_eq!(pick(&["exi;q=1, gzip;q=0.1"]), Some(Coding::Gzip));
            assert_eq!(pick(&["compress, sdch"]), None);
        }
    }

    /// A build without a codec never chooses it, whatever the client sends and the preference lists.
    #[test]
    fn codings_not_compiled_are_never_chosen() {
        for coding in Coding::ALL {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(coding.as_str()));
            let chosen = choose_coding(&headers, &[coding]);
            assert_eq!(chosen.is_some(), coding.is_compiled(), "{coding:?}");
        }
        let any_compiled = Coding::ALL.iter().any(|c| c.is_compiled());
        assert_eq!(pick(&["*"]).is_some(), any_compiled);
    }

    #[test]
    fn rule_no_header_means_identity() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[""]), None);
        assert_eq!(pick(&[" , "]), None);
    }

    #[test]
    fn plain_lists() {
        assert!(accepts(&["gzip"]));
        assert!(accepts(&["gzip, deflate, br"]));
        assert!(accepts(&["br", "gzip"]));
        assert!(accepts(&["GZIP"]));
        assert!(accepts(&["  deflate ,  Gzip  "]));
        assert!(accepts(&["x-gzip"]));
        assert!(!accepts(&["deflate, br"]));
        assert!(!accepts(&[]));
        assert!(!accepts(&[""]));
        assert!(!accepts(&["identity"]));
    }

    #[test]
    fn qvalues() {
        assert!(accepts(&["gzip;q=0.5"]));
        assert!(accepts(&["gzip ; Q=1.000"]));
        assert!(accepts(&["gzip;q=0.001"]));
        assert!(!accepts(&["gzip;q=0"]));
        assert!(!accepts(&["gzip;q=0.000"]));
        assert!(!accepts(&["gzip;q=0, *"]), "explicit refusal beats *");
        assert!(accepts(&["*"]));
        assert!(accepts(&["br, *;q=0.1"]));
        assert!(!accepts(&["*;q=0"]));
        assert!(!accepts(&["gzip;q=0.5, identity"]), "identity preferred");
        assert!(accepts(&["gzip, identity;q=0.5"]));
        assert!(accepts(&["gzip, identity;q=0"]));
        assert!(accepts(&["gzip;q=1, identity;q=1"]));
    }

    #[test]
    fn malformed_members_are_ignored() {
        assert!(!accepts(&["gzip;q=2"]));
        assert!(!accepts(&["gzip;q=1.5"]));
        assert!(!accepts(&["gzip;q=0.1234"]));
        assert!(!accepts(&["gzip;q="]));
        assert!(!accepts(&["gzip;q=abc"]));
        assert!(!accepts(&["gzip;q"]));
        assert!(!accepts(&["gzip;q=-1"]));
        assert!(
            accepts(&["gzip;q=abc, x-gzip"]),
            "the good member still counts"
        );
        assert!(accepts(&[",,, gzip ,,"]));
        assert!(accepts(&["gzip;level=9"]), "unknown parameters are fine");
    }

    #[test]
    fn unreadable_lines_are_skipped() {
        let mut headers = HeaderMap::new();
        headers.append(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gz\xffip").unwrap(),
        );
        assert!(!accepts_gzip(&headers));
        headers.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(accepts_gzip(&headers));
    }

    #[test]
    fn qvalue_grammar() {
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("0.25"), Some(250));
        assert_eq!(parse_qvalue("0.025"), Some(25));
        assert_eq!(parse_qvalue("1."), Some(1000));
        assert_eq!(parse_qvalue("1.0"), Some(1000));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue(".5"), None);
        assert_eq!(parse_qvalue("00.5"), None);
    }

    proptest! {
        #[test]
        fn any_text_never_panics(text in "\\PC{0,64}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut headers = HeaderMap::new();
                headers.insert(ACCEPT_ENCODING, value);
                let _ = accepts_gzip(&headers);
            }
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let mut headers = HeaderMap::new();
                headers.insert(ACCEPT_ENCODING, value);
                let _ = accepts_gzip(&headers);
            }
        }

        #[test]
        fn spacing_and_case_do_not_matter(
            upper in any::<bool>(), before in "[ \t]{0,3}", after in "[ \t]{0,3}", q in 0u16..=1000,
        ) {
            let coding = if upper { "GZip" } else { "gzip" };
            let text = format!("br,{before}{coding}{after};{before}q={}.{:03}", q / 1000, q % 1000);
            let text = if q == 1000 { format!("br,{before}{coding}{after};{before}q=1.000") } else { text };
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT_ENCODING, HeaderValue::from_str(&text).unwrap());
            prop_assert_eq!(accepts_gzip(&headers), q > 0);
        }
    }
}
