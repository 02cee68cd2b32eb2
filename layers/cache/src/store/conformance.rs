//! The conformance suite every [`Store`] must pass (feature `conformance`).
//!
//! Call [`run`] from a test with a function that makes a fresh, empty store of a given capacity in bytes; stores
//! that enforce the capacity themselves also call [`capacity_is_enforced`]. Each check panics with a message that
//! names it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tower_kit_cache::{MokaStore, store::conformance};
//! conformance::run(MokaStore::new).await;
//! conformance::capacity_is_enforced(MokaStore::new).await;
//! # }
//! ```

use super::{Store, StoreUsage};
use crate::entry::{Entry, StoredValue, Variants};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

const MIB: u64 = 1 << 20;
const HOUR: Duration = Duration::from_secs(3600);

/// Runs every check of the suite, each on a fresh store from `make(capacity_in_bytes)`.
pub async fn run<S: Store, F: Fn(u64) -> S>(make: F) {
    missing_key_is_none(&make(MIB)).await;
    round_trip_keeps_every_field(&make(MIB)).await;
    put_replaces_the_value(&make(MIB)).await;
    remove_removes_one_key(&make(MIB)).await;
    remove_prefix_matches_literally(&make(MIB)).await;
    remove_tag_removes_tagged_responses(&make(MIB)).await;
    clear_removes_everything(&make(MIB)).await;
    usage_counts_entries_and_bytes(&make(MIB)).await;
    odd_keys_are_opaque(&make(MIB)).await;
    concurrent_use(Arc::new(make(16 * MIB))).await;
    ttl_collects_garbage(&make(MIB)).await;
}

/// An entry with a body, repeated headers, trailers, tags and `Vary` values.
pub fn sample_entry(body: &'static [u8], tags: &[&str]) -> Entry {
    let t0 = SystemTime::UNIX_EPOCH + Duration::new(1_767_225_600, 123_456_789);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.append("x-multi", HeaderValue::from_static("one"));
    headers.append("x-multi", HeaderValue::from_static("two"));
    headers.insert(
        "x-opaque",
        HeaderValue::from_bytes(b"\xfe\xff bytes").unwrap_or(HeaderValue::from_static("x")),
    );
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    Entry {
        status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
        headers,
        body: Bytes::from_static(body),
        trailers: Some(trailers),
        request_time: t0,
        response_time: t0 + Duration::from_millis(12),
        initial_age: Duration::from_secs(3),
        freshness_lifetime: Duration::from_secs(60),
        vary: vec![
            (
                HeaderName::from_static("accept-encoding"),
                Some("br,gzip".into()),
            ),
            (HeaderName::from_static("x-tenant"), None),
        ],
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        public: true,
        shared_with_authorization: false,
        no_cache: true,
        must_revalidate: false,
        stale_while_revalidate: Some(Duration::from_secs(30)),
        stale_if_error: Some(Duration::from_secs(86_400)),
    }
}

fn response(body: &'static [u8], tags: &[&str]) -> StoredValue {
    StoredValue::Response(Arc::new(sample_entry(body, tags)))
}

async fn get<S: Store>(store: &S, key: &str) -> Option<StoredValue> {
    match store.get(key).await {
        Ok(v) => v,
        Err(e) => panic!("conformance: get({key:?}) failed: {e}"),
    }
}

async fn put<S: Store>(store: &S, key: &str, value: StoredValue) {
    if let Err(e) = store.put(key, value, HOUR).await {
        panic!("conformance: put({key:?}) failed: {e}");
    }
}

async fn usage<S: Store>(store: &S) -> StoreUsage {
    match store.usage().await {
        Ok(u) => u,
        Err(e) => panic!("conformance: usage() failed: {e}"),
    }
}

/// `get` of a key never written is `None`.
pub async fn missing_key_is_none<S: Store>(store: &S) {
    assert_eq!(
        get(store, "t:1:/missing##GET").await,
        None,
        "missing_key_is_none"
    );
}

/// Every field of every kind of value comes back as written.
pub async fn round_trip_keeps_every_field<S: Store>(store: &S) {
    let values = [
        (
            "t:1:/a##GET",
            response(b"{\"hello\":1}", &["items", "item:1"]),
        ),
        ("t:1:/empty##GET", response(b"", &[])),
        (
            "t:1:/v##GET",
            StoredValue::Variants(Arc::new(Variants {
                headers: vec![HeaderName::from_static("accept-encoding")],
                until: SystemTime::UNIX_EPOCH + Duration::new(1_767_225_660, 5),
            })),
        ),
        (
            "t:1:/p##GET",
            StoredValue::Pass {
                until: SystemTime::UNIX_EPOCH + Duration::new(1_767_225_610, 7),
            },
        ),
    ];
    for (key, value) in &values {
        put(store, key, value.clone()).await;
    }
    for (key, value) in &values {
        assert_eq!(
            get(store, key).await.as_ref(),
            Some(value),
            "round_trip_keeps_every_field: {key}"
        );
    }
}

/// A second `put` replaces the value, whatever its kind.
pub async fn put_replaces_the_value<S: Store>(store: &S) {
    let key = "t:1:/r##GET";
    put(store, key, response(b"first", &[])).await;
    put(store, key, response(b"second", &[])).await;
    assert_eq!(
        get(store, key).await,
        Some(response(b"second", &[])),
        "put_replaces_the_value"
    );
    let pass = StoredValue::Pass {
        until: SystemTime::UNIX_EPOCH + Duration::from_secs(5),
    };
    put(store, key, pass.clone()).await;
    assert_eq!(
        get(store, key).await,
        Some(pass),
        "put_replaces_the_value: pass"
    );
}

/// `remove` removes exactly one key and says whether it was there.
pub async fn remove_removes_one_key<S: Store>(store: &S) {
    put(store, "t:1:/x##GET", response(b"x", &[])).await;
    put(store, "t:1:/x##GET#v:a=1", response(b"x", &[])).await;
    assert!(
        store.remove("t:1:/x##GET").await.unwrap_or(false),
        "remove_removes_one_key: present"
    );
    assert!(
        !store.remove("t:1:/x##GET").await.unwrap_or(true),
        "remove_removes_one_key: absent"
    );
    assert_eq!(
        get(store, "t:1:/x##GET").await,
        None,
        "remove_removes_one_key: gone"
    );
    assert!(
        get(store, "t:1:/x##GET#v:a=1").await.is_some(),
        "remove_removes_one_key: other key kept"
    );
}

/// `remove_prefix` removes the keys that start with the prefix, byte for byte (glob characters are literal).
pub async fn remove_prefix_matches_literally<S: Store>(store: &S) {
    let keys = [
        "t:1:/api/items##GET",
        "t:1:/api/items?page=2#h#GET",
        "t:1:/api/items/1##GET#v:accept-encoding=gzip",
        "t:1:/api/other##GET",
        "t:1:/api/i*ms##GET",
        "t:1:/api/[it]ems##GET",
        "t:2:/api/items##GET",
        "u:1:/api/items##GET",
    ];
    for key in keys {
        put(store, key, response(b"x", &[])).await;
    }
    assert_eq!(
        store.remove_prefix("t:1:/api/i*").await.unwrap_or(99),
        1,
        "remove_prefix: `*` is literal"
    );
    assert_eq!(
        store.remove_prefix("t:1:/api/[it]").await.unwrap_or(99),
        1,
        "remove_prefix: `[` is literal"
    );
    assert_eq!(
        store.remove_prefix("t:1:/api/items").await.unwrap_or(0),
        3,
        "remove_prefix: count"
    );
    for key in [
        "t:1:/api/other##GET",
        "t:2:/api/items##GET",
        "u:1:/api/items##GET",
    ] {
        assert!(get(store, key).await.is_some(), "remove_prefix kept {key}");
    }
    for key in &keys[..3] {
        assert_eq!(get(store, key).await, None, "remove_prefix removed {key}");
    }
    assert_eq!(
        store.remove_prefix("t:9:").await.unwrap_or(99),
        0,
        "remove_prefix: no match"
    );
}

/// `remove_tag` removes the responses that carry the tag, and only those.
pub async fn remove_tag_removes_tagged_responses<S: Store>(store: &S) {
    put(store, "t:1:/a##GET", response(b"a", &["items", "item:1"])).await;
    put(store, "t:1:/b##GET", response(b"b", &["items"])).await;
    put(store, "t:1:/c##GET", response(b"c", &["item:1"])).await;
    put(store, "t:1:/d##GET", response(b"d", &[])).await;
    // A key re-written without the tag is not removed by it.
    put(store, "t:1:/e##GET", response(b"e", &["items"])).await;
    put(store, "t:1:/e##GET", response(b"e2", &["other"])).await;
    assert_eq!(
        store.remove_tag("items").await.unwrap_or(0),
        2,
        "remove_tag: count"
    );
    assert_eq!(get(store, "t:1:/a##GET").await, None, "remove_tag: a");
    assert_eq!(get(store, "t:1:/b##GET").await, None, "remove_tag: b");
    assert!(
        get(store, "t:1:/c##GET").await.is_some(),
        "remove_tag: c kept"
    );
    assert!(
        get(store, "t:1:/d##GET").await.is_some(),
        "remove_tag: d kept"
    );
    assert!(
        get(store, "t:1:/e##GET").await.is_some(),
        "remove_tag: re-tagged e kept"
    );
    assert_eq!(
        store.remove_tag("items").await.unwrap_or(99),
        0,
        "remove_tag: twice"
    );
    assert_eq!(
        store.remove_tag("nope").await.unwrap_or(99),
        0,
        "remove_tag: unknown"
    );
    assert_eq!(
        store.remove_tag("item:1").await.unwrap_or(0),
        1,
        "remove_tag: a is already gone"
    );
}

/// `clear` removes every value and every tag.
pub async fn clear_removes_everything<S: Store>(store: &S) {
    for i in 0..20 {
        let key = format!("t:1:/k{i}##GET");
        put(store, &key, response(b"x", &["all"])).await;
    }
    store
        .clear()
        .await
        .unwrap_or_else(|e| panic!("conformance: clear failed: {e}"));
    for i in 0..20 {
        assert_eq!(
            get(store, &format!("t:1:/k{i}##GET")).await,
            None,
            "clear_removes_everything"
        );
    }
    assert_eq!(
        usage(store).await.entries,
        0,
        "clear_removes_everything: usage"
    );
    assert_eq!(
        store.remove_tag("all").await.unwrap_or(99),
        0,
        "clear_removes_everything: tags"
    );
}

/// `usage` counts the values and at least their bodies' bytes.
pub async fn usage_counts_entries_and_bytes<S: Store>(store: &S) {
    assert_eq!(usage(store).await, StoreUsage::default(), "usage: empty");
    static BODY: [u8; 10_000] = [b'x'; 10_000];
    put(store, "t:1:/big##GET", response(&BODY, &[])).await;
    put(store, "t:1:/small##GET", response(b"s", &[])).await;
    let u = usage(store).await;
    assert_eq!(u.entries, 2, "usage: entries");
    assert!(u.bytes >= 10_001, "usage: bytes {}", u.bytes);
}

/// Keys are opaque: spaces, non-ASCII, `#`, `%`, and 4 KiB of length.
pub async fn odd_keys_are_opaque<S: Store>(store: &S) {
    let long = format!("t:1:/{}##GET", "l".repeat(4096));
    let keys = [
        "t:1:/a b##GET",
        "t:1:/é ü 漢##GET",
        "t:1:/%23#h%23#GET",
        long.as_str(),
        "",
    ];
    for (i, key) in keys.iter().enumerate() {
        let body: &'static [u8] = [b"0", b"1", b"2", b"3", b"4"][i];
        put(store, key, response(body, &["odd tag é"])).await;
    }
    for (i, key) in keys.iter().enumerate() {
        let body: &'static [u8] = [b"0", b"1", b"2", b"3", b"4"][i];
        assert_eq!(
            get(store, key).await,
            Some(response(body, &["odd tag é"])),
            "odd key {key:.40}"
        );
    }
    assert_eq!(
        store.remove_tag("odd tag é").await.unwrap_or(0),
        5,
        "odd tag"
    );
}

/// Many tasks writing and reading at once see only values that were written.
pub async fn concurrent_use<S: Store>(store: Arc<S>) {
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..200 {
                    let key = format!("t:1:/c{}##GET", i % 50);
                    if (i + t) % 3 == 0 {
                        let _ = store.put(&key, response(b"same", &["c"]), HOUR).await;
                    } else if let Ok(Some(v)) = store.get(&key).await {
                        assert_eq!(v, response(b"same", &["c"]), "concurrent_use: torn value");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await
            .unwrap_or_else(|e| panic!("concurrent_use: task failed: {e}"));
    }
    assert_eq!(usage(&*store).await.entries, 50, "concurrent_use: entries");
}

/// The TTL given to `put` collects the value (real time, generous bound: this is garbage collection).
pub async fn ttl_collects_garbage<S: Store>(store: &S) {
    store
        .put(
            "t:1:/short##GET",
            response(b"x", &[]),
            Duration::from_millis(50),
        )
        .await
        .unwrap_or_else(|e| panic!("conformance: put failed: {e}"));
    put(store, "t:1:/long##GET", response(b"y", &[])).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get(store, "t:1:/short##GET").await.is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "ttl_collects_garbage: still there after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        get(store, "t:1:/long##GET").await.is_some(),
        "ttl_collects_garbage: long TTL kept"
    );
}

/// A store of `capacity` bytes never holds much more than that: eviction keeps up with writes.
pub async fn capacity_is_enforced<S: Store, F: Fn(u64) -> S>(make: F) {
    static BODY: [u8; 4096] = [b'z'; 4096];
    let store = make(64 * 1024);
    for i in 0..200 {
        put(&store, &format!("t:1:/cap{i}##GET"), response(&BODY, &[])).await;
    }
    let u = usage(&store).await;
    assert!(
        u.bytes <= 64 * 1024,
        "capacity_is_enforced: {} bytes held",
        u.bytes
    );
    assert!(u.entries >= 1, "capacity_is_enforced: something is kept");
    assert!(u.entries < 200, "capacity_is_enforced: nothing evicted");
}
