//! What a forwarded response invalidates: the target of a successful unsafe method and its same-origin
//! `Location` / `Content-Location` (RFC 9111 §4.4), and a stored `GET` whose `HEAD` shows new validators
//! (RFC 9111 §4.3.5).

use super::{forward::Exchange, revalidate::refresh};
use crate::{conditional, entry::Entry, fill::put_entry, store::Store};
use http::{Method, StatusCode, response};
use std::{sync::Arc, time::Duration};
use tower_kit_core::content_length;

/// The unsafe methods whose success invalidates what the cache holds for the target (RFC 9111 §4.4).
pub(super) fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl<St: Store> Exchange<St> {
    /// Applies what the response head says about stored entries, on the request's Redis deadline.
    pub(super) async fn invalidate(&self, head: &response::Parts) {
        let shared = &self.origin.shared;
        let deadline = &self.origin.deadline;
        // A `200` to HEAD (RFC 9111 §4.3.5): with the stored GET's validators (and its length, when it says one)
        // it updates the stored headers and freshness as a `304` would (§3.2); with others the stored GET is
        // marked stale, kept for validation.
        if self.head_only
            && head.status == StatusCode::OK
            && let Some((key, entry)) = &self.stale
        {
            let same_length =
                content_length(&head.headers).is_none_or(|n| n == entry.body.len() as u64);
            let now = shared.clock.now();
            let updated =
                if same_length && conditional::same_validators(&entry.headers, &head.headers) {
                    refresh(shared, entry, &head.headers, &self.facts, now).ok()
                } else {
                    let mut marked = Entry::clone(entry);
                    marked.no_cache = true;
                    marked.freshness_lifetime = Duration::ZERO;
                    Some(Arc::new(marked))
                };
            let put = async {
                match &updated {
                    Some(entry) => put_entry(shared, &self.origin.primary, key, entry).await,
                    // The new headers forbid storing: nothing is kept.
                    None => false,
                }
            };
            if !deadline.clone().scope(put).await
                && let Err(e) = deadline.clone().scope(shared.store.remove(key)).await
            {
                shared.counters.store_error(&e);
            }
        }
        // A successful unsafe method: what the cache holds for its target, `Location` and `Content-Location` goes.
        if let Some(client) = &self.client
            && is_unsafe(&client.method)
            && (head.status.is_success() || head.status.is_redirection())
        {
            let after = crate::invalidate::after_unsafe(shared, client, &head.headers);
            deadline.clone().scope(after).await;
        }
    }
}
