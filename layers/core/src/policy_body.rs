use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project! {
    /// The body of a layer that either forwards the inner service's response or answers itself (a 429, a 503, a
    /// cached copy). The layer's own answers are a single in-memory chunk.
    #[project = PolicyBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)] // the fields are private in spirit: build with `inner`, `full` or `empty`
    pub enum PolicyBody<B> {
        /// The inner service's body, unchanged.
        Inner { #[pin] body: B },
        /// A body the layer wrote.
        Full { data: Option<Bytes> },
    }
}

impl<B> PolicyBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        PolicyBody::Inner { body }
    }

    /// A body the layer wrote; empty bytes make an empty body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        PolicyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        PolicyBody::Full { data: None }
    }
}

impl<B> From<Bytes> for PolicyBody<B> {
    fn from(data: Bytes) -> Self {
        Self::full(data)
    }
}

impl<B: Body<Data = Bytes>> Body for PolicyBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            PolicyBodyProj::Inner { body } => body.poll_frame(cx),
            PolicyBodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PolicyBody::Inner { body } => body.is_end_stream(),
            PolicyBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PolicyBody::Inner { body } => body.size_hint(),
            PolicyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn both_variants() {
        let b: PolicyBody<Full<Bytes>> = PolicyBody::full("over the limit");
        assert_eq!(b.size_hint().exact(), Some(14));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "over the limit");
        let b = PolicyBody::inner(Full::new(Bytes::from_static(b"inner")));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "inner");
        let b: PolicyBody<Full<Bytes>> = PolicyBody::empty();
        assert!(b.is_end_stream());
    }
}
