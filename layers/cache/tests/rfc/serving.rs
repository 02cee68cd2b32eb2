//! RFC table cases for the serving rules: ranges (RFC 9110 §14, RFC 9111 §3.3–3.4) and a disconnected origin
//! (RFC 9111 §4.2.4). They run in the same table, against every store, as the cases in `rfc.rs`.

use super::Case;

pub(super) fn cases() -> Vec<Case> {
    Vec::new()
}
