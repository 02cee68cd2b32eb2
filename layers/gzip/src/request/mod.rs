//! Request side: [`GzipRequestLayer`] decodes `Content-Encoding: gzip` request bodies.

mod body;
mod decode;
mod future;
mod layer;
mod service;

pub use body::DecodedBody;
pub use future::RequestFuture;
pub use layer::{DEFAULT_MAX_DECODED, GzipRequestLayer, GzipRequestLayerBuilder};
pub use service::GzipRequest;
