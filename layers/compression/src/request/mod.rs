//! Request side: [`RequestDecompressionLayer`] decodes gzip, deflate, br and zstd request bodies.

mod body;
mod decode;
mod future;
mod layer;
mod service;

pub use body::DecodedBody;
pub use future::RequestFuture;
pub use layer::{DEFAULT_MAX_DECODED, RequestDecompressionLayer, RequestDecompressionLayerBuilder};
pub use service::RequestDecompression;
