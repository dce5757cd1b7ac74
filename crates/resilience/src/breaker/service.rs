//! The breaker as a tower `Service`.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::error::BreakerOpen;
use super::future::ResponseFuture;
use super::handle::BreakerHandle;
use super::state::{Admission, Shared};
use crate::BoxError;
use crate::classify::{Classifier, ErrorIsFailure};

/// A service behind a circuit breaker. Built by [`BreakerLayer`](super::BreakerLayer).
///
/// `poll_ready` only forwards to the inner service: the breaker never makes a
/// caller wait. Admission is decided in `call`, and a refused call gets a
/// future that resolves at once to a [`BreakerOpen`] error (axum treats
/// services as always ready, so readiness back-pressure would be lost
/// there). A refused call does not call the inner service.
#[derive(Clone)]
pub struct Breaker<S, C = ErrorIsFailure> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
}

impl<S, C> Breaker<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
        }
    }

    /// The handle of the breaker this service shares.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.shared))
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError> + 'static,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.shared.admit() {
            Admission::Admitted(permit) => ResponseFuture::admitted(
                self.inner.call(request),
                Arc::clone(&self.shared),
                permit,
                self.classifier.clone(),
            ),
            Admission::Pass => ResponseFuture::passthrough(self.inner.call(request)),
            Admission::Rejected(retry_after) => ResponseFuture::rejected(BreakerOpen::new(
                Arc::clone(self.shared.name()),
                retry_after,
            )),
        }
    }
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for Breaker<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("name", self.shared.name())
            .field("state", &self.shared.state())
            .field("inner", &self.inner)
            .finish()
    }
}
