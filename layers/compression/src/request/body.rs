//! [`DecodedBody`]: the request body the inner service sees.

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

pin_project! {
    /// The request body behind [`RequestDecompression`](crate::RequestDecompression): the original body when it was not encoded, or
    /// the decoded bytes.
    #[project = DecodedBodyProj]
    #[derive(Debug)]
    #[allow(missing_docs)] // the variants say what the fields are
    pub enum DecodedBody<B> {
        /// Not encoded: the original body, unchanged.
        Passthrough { #[pin] body: B },
        /// The decoded bytes (`None` once sent).
        Decoded { data: Option<Bytes> },
    }
}

impl<B> DecodedBody<B> {
    pub(crate) fn decoded(data: Bytes) -> Self {
        DecodedBody::Decoded {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<B> Body for DecodedBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            DecodedBodyProj::Passthrough { body } => Poll::Ready(
                ready!(body.poll_frame(cx))
                    .map(|r| r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
            ),
            DecodedBodyProj::Decoded { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DecodedBody::Passthrough { body } => body.is_end_stream(),
            DecodedBody::Decoded { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DecodedBody::Passthrough { body } => body.size_hint(),
            DecodedBody::Decoded { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
