//! The JSON payloads and the request harness of the compression benchmarks, shared by the bench packages
//! (included with `#[path]`), so every engine compresses the same bytes through the same calls.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full};
use std::{convert::Infallible, fmt::Debug};
use tower::{Service, ServiceExt, service_fn};

/// `GET /items` from a client that accepts only `coding`, so every layer answers with that coding.
pub(crate) fn request(coding: &str) -> Request<()> {
    Request::get("/items")
        .header(header::ACCEPT_ENCODING, coding)
        .body(())
        .unwrap()
}

/// The inner service: answers `json` as `application/json` with a `Full` body (known length).
pub(crate) fn json_service(
    json: Bytes,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |_req: Request<()>| {
        let json = json.clone();
        async move {
            let mut response = Response::new(Full::new(json));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(response)
        }
    })
}

/// Sends [`request`] for `coding` through `service`, reads the whole body; returns the response headers and the
/// body length.
pub(crate) async fn fetch<S, B>(service: S, coding: &str) -> (http::HeaderMap, usize)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: Debug,
    B: http_body::Body,
    B::Error: Debug,
{
    let (parts, body) = service.oneshot(request(coding)).await.unwrap().into_parts();
    (
        parts.headers,
        body.collect().await.unwrap().to_bytes().len(),
    )
}

/// Payload sizes: 2 KiB, 16 KiB, 100 KiB, 1 MiB.
pub(crate) const SIZES: &[(&str, usize)] = &[
    ("2KiB", 2 * 1024),
    ("16KiB", 16 * 1024),
    ("100KiB", 100 * 1024),
    ("1MiB", 1024 * 1024),
];

const WORDS: &[&str] = &[
    "amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "indigo",
    "juniper", "kelp", "lumen", "meadow", "nickel", "onyx", "prairie", "quartz", "river", "sierra",
    "tundra", "umber", "violet", "willow", "xenon", "yarrow", "zephyr",
];

/// A JSON array of catalogue items, deterministic (xorshift seeded with 42), exactly `size` bytes long (padded with
/// spaces before the closing bracket, which JSON allows).
pub(crate) fn json(size: usize) -> Vec<u8> {
    let mut state: u64 = 42;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(size + 256);
    out.push('[');
    let mut id = 0u64;
    loop {
        id += 1;
        let r = next();
        let w = |k: u64| WORDS[((r >> (k * 5)) % WORDS.len() as u64) as usize];
        let item = format!(
            r#"{{"id":{id},"sku":"{:08x}","name":"{} {} {id}","description":"A {} {} made from {} and {}.","price_cents":{},"in_stock":{},"tags":["{}","{}"]}}"#,
            next() as u32,
            w(1),
            w(2),
            w(3),
            w(4),
            w(5),
            w(6),
            100 + r % 9_900,
            r % 3 != 0,
            w(7),
            w(8),
        );
        if out.len() + item.len() + 2 > size {
            break;
        }
        if id > 1 {
            out.push(',');
        }
        out.push_str(&item);
    }
    while out.len() + 1 < size {
        out.push(' ');
    }
    out.push(']');
    out.into_bytes()
}
