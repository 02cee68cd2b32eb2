//! [`Coding`]: the content codings this crate speaks, one small enum. A cargo feature only decides whether a coding
//! is compiled in ([`Coding::is_compiled`]); the code around the codecs has one shape whatever the features.

use http::HeaderValue;

/// A content coding (RFC 9110 §8.4.1) the layers can produce or decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (also read as `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format (RFC 1950), as RFC 9110 §8.4.1.2 defines it. Requests may also send raw deflate.
    Deflate,
    /// `br`: Brotli (RFC 7932).
    Br,
    /// `zstd`: Zstandard (RFC 8878), window at most 8 MB (RFC 9659).
    Zstd,
}

impl Coding {
    /// Every coding, in the default server preference order (see [`DEFAULT_PREFERENCE`]).
    pub const ALL: [Coding; 4] = DEFAULT_PREFERENCE;

    /// The token in `Accept-Encoding` and `Content-Encoding`: `gzip`, `deflate`, `br`, `zstd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Br => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Whether this build has the codec (its cargo feature is on). A layer never offers or accepts a coding that is
    /// not compiled in.
    pub fn is_compiled(self) -> bool {
        match self {
            Coding::Gzip => cfg!(feature = "gzip"),
            Coding::Deflate => cfg!(feature = "deflate"),
            Coding::Br => cfg!(feature = "br"),
            Coding::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// The coding a token names (case-insensitive; `x-gzip` is `gzip`), whether compiled in or not.
    pub fn from_token(token: &str) -> Option<Coding> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Coding::Gzip)
        } else if token.eq_ignore_ascii_case("deflate") {
            Some(Coding::Deflate)
        } else if token.eq_ignore_ascii_case("br") {
            Some(Coding::Br)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Coding::Zstd)
        } else {
            None
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Coding::Gzip => 0,
            Coding::Deflate => 1,
            Coding::Br => 2,
            Coding::Zstd => 3,
        }
    }

    pub(crate) fn header_value(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl std::fmt::Display for Coding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default server preference, used when the client's q-values tie: zstd, then Brotli, gzip, deflate.
///
/// Ordered by CPU per byte saved at the default levels on the benchmark JSON (see the book's compression chapter):
/// zstd saves the most bytes per microsecond, then Brotli at quality 4, then gzip; deflate saves what gzip saves
/// and is last only because some old clients mislabel raw deflate.
pub const DEFAULT_PREFERENCE: [Coding; 4] =
    [Coding::Zstd, Coding::Br, Coding::Gzip, Coding::Deflate];

/// A set of codings, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CodingSet(u8);

impl CodingSet {
    pub(crate) fn compiled() -> Self {
        let mut set = Self::default();
        for coding in Coding::ALL {
            if coding.is_compiled() {
                set.insert(coding);
            }
        }
        set
    }

    pub(crate) fn insert(&mut self, coding: Coding) {
        self.0 |= 1 << coding.index();
    }

    pub(crate) fn remove(&mut self, coding: Coding) {
        self.0 &= !(1 << coding.index());
    }

    pub(crate) fn contains(self, coding: Coding) -> bool {
        self.0 & (1 << coding.index()) != 0
    }

    #[cfg(test)]
    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(Coding::from_token("GZip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token("x-gzip"), Some(Coding::Gzip));
        assert_eq!(Coding::from_token(" deflate "), Some(Coding::Deflate));
        assert_eq!(Coding::from_token("BR"), Some(Coding::Br));
        assert_eq!(Coding::from_token("zstd"), Some(Coding::Zstd));
        assert_eq!(Coding::from_token("compress"), None);
        assert_eq!(Coding::from_token("identity"), None);
        for coding in Coding::ALL {
            assert_eq!(Coding::from_token(coding.as_str()), Some(coding));
            assert_eq!(coding.header_value(), coding.as_str());
        }
    }

    #[test]
    fn sets() {
        let mut set = CodingSet::default();
        assert!(set.is_empty());
        set.insert(Coding::Br);
        assert!(set.contains(Coding::Br) && !set.contains(Coding::Gzip));
        set.remove(Coding::Br);
        assert!(set.is_empty());
        assert_eq!(
            Coding::ALL
                .iter()
                .filter(|c| CodingSet::compiled().contains(**c))
                .count(),
            Coding::ALL.iter().filter(|c| c.is_compiled()).count()
        );
    }
}
