//! [`ResponseFuture`]: the future of one measured call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::handle::CallGuard;
use crate::BoxError;
use crate::classify::Classifier;

pin_project! {
    /// The response future of [`super::Metrics`]. Records the call when it
    /// completes; if it is dropped first, the call leaves the in-flight count
    /// and is counted as cancelled.
    pub struct ResponseFuture<F, C> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) classifier: C,
        pub(crate) call: Option<CallGuard>,
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(call) = this.call.take() {
            call.finish(this.classifier.classify(result.as_ref()).is_failure());
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
