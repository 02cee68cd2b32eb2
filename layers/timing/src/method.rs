use http::Method;

/// Label values for methods, by [`index`]; the last is for every non-standard method.
pub(crate) const LABELS: [&str; COUNT] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    crate::names::OTHER_METHOD,
];

pub(crate) const COUNT: usize = 10;
pub(crate) const HEAD: usize = 1;

/// The method's slot; extension methods (which a client may invent freely) all share the last one.
pub(crate) fn index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_name_and_others_are_folded() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(LABELS[index(&method)], m);
        }
        for m in ["PURGE", "get", "X-EVIL-1", "PROPFIND"] {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(LABELS[index(&method)], "_OTHER", "{m}");
        }
    }
}
