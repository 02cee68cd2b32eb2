//! Exemptions: the request predicate every refusing layer takes, so `/health` and `/metrics` pass untouched.

use std::{fmt, sync::Arc};

use http::request;

/// Which requests a layer lets through untouched: none by default, or those a predicate on the request head picks.
///
/// The concurrency limit, the rate limit and request decompression each take one through their builder's
/// `exempt(..)`; cloning it shares the predicate.
///
/// ```
/// use tower_kit_core::Exempt;
///
/// let health = Exempt::new(|req: &http::request::Parts| req.uri.path() == "/health");
/// let (parts, ()) = http::Request::get("/health").body(()).unwrap().into_parts();
/// assert!(health.matches(&parts));
/// assert!(!Exempt::none().matches(&parts));
/// ```
#[derive(Clone, Default)]
pub struct Exempt(Option<Arc<Predicate>>);

type Predicate = dyn Fn(&request::Parts) -> bool + Send + Sync;

impl Exempt {
    /// No request is exempt.
    pub const fn none() -> Self {
        Self(None)
    }

    /// Requests for which `predicate` returns `true` are exempt.
    pub fn new<F>(predicate: F) -> Self
    where
        F: Fn(&request::Parts) -> bool + Send + Sync + 'static,
    {
        Self(Some(Arc::new(predicate)))
    }

    /// Whether a predicate is set (a layer can then skip looking at the request head).
    #[inline]
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Whether the request with this head is exempt.
    #[inline]
    pub fn matches(&self, parts: &request::Parts) -> bool {
        self.0.as_ref().is_some_and(|predicate| predicate(parts))
    }
}

impl fmt::Debug for Exempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "Exempt(predicate)"
        } else {
            "Exempt(none)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(path: &str) -> request::Parts {
        http::Request::get(path).body(()).unwrap().into_parts().0
    }

    #[test]
    fn none_exempts_nothing_and_a_predicate_what_it_picks() {
        assert!(!Exempt::none().is_set());
        assert!(!Exempt::default().matches(&head("/health")));
        let health = Exempt::new(|req| req.uri.path() == "/health");
        assert!(health.is_set());
        assert!(health.matches(&head("/health")));
        assert!(!health.matches(&head("/api")));
        assert!(health.clone().matches(&head("/health")));
        assert_eq!(format!("{health:?}"), "Exempt(predicate)");
    }
}
