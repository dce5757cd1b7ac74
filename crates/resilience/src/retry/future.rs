//! [`ResponseFuture`]: tower's retry future, with the error boxed.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tower::retry::Policy;
use tower_service::Service;

use crate::BoxError;

pin_project! {
    /// The response future of [`Retry`](super::Retry): drives
    /// `tower::retry::future::ResponseFuture` (tries, waits, retries) and
    /// turns its error into a [`BoxError`].
    pub struct ResponseFuture<P, S, Req>
    where
        P: Policy<Req, S::Response, S::Error>,
        S: Service<Req>,
    {
        #[pin]
        inner: tower::retry::future::ResponseFuture<P, S, Req>,
    }
}

impl<P, S, Req> ResponseFuture<P, S, Req>
where
    P: Policy<Req, S::Response, S::Error>,
    S: Service<Req>,
{
    pub(crate) fn new(inner: tower::retry::future::ResponseFuture<P, S, Req>) -> Self {
        Self { inner }
    }
}

impl<P, S, Req> Future for ResponseFuture<P, S, Req>
where
    P: Policy<Req, S::Response, S::Error>,
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}

impl<P, S, Req> std::fmt::Debug for ResponseFuture<P, S, Req>
where
    P: Policy<Req, S::Response, S::Error>,
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
