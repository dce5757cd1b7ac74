//! [`ResponseFuture`]: the future of one call through the cache service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::Response;
use http_body::Body;
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use super::body::CacheBody;
use crate::BoxError;

pin_project! {
    /// Response future of [`CacheService`](super::CacheService).
    ///
    /// Requests the cache leaves alone (no key, `no-store`, other methods
    /// without tags to invalidate) poll the inner future directly. Requests
    /// the cache handles await the moka store and the tag index, whose
    /// futures cannot be named: those are boxed (one allocation, on a path
    /// that already allocates a response).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<F> {
        Passthrough { #[pin] future: F },
        Cache { future: BoxFuture<'static, Result<Response<CacheBody>, BoxError>> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn cache(future: BoxFuture<'static, Result<Response<CacheBody>, BoxError>>) -> Self {
        ResponseFuture {
            kind: Kind::Cache { future },
        }
    }
}

/// Boxes a response's body into a [`CacheBody`].
pub(crate) fn box_response<B>(response: Response<B>) -> Response<CacheBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|body| body.map_err(Into::into).boxed_unsync())
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Output = Result<Response<CacheBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProjection::Passthrough { future } => future
                .poll(cx)
                .map(|result| result.map(box_response).map_err(Into::into)),
            KindProjection::Cache { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
