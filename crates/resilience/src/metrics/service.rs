//! [`Metrics`]: the service that measures each call.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use super::handle::{Anchor, OperationHandle};
use crate::BoxError;
use crate::classify::{Classifier, ErrorIsFailure};

/// Measures every call of `inner`: duration, outcome (by the classifier
/// `C`) and calls in flight. Built by [`super::MetricsLayer`].
#[derive(Clone)]
pub struct Metrics<S, C = ErrorIsFailure> {
    pub(crate) inner: S,
    pub(crate) operation: Arc<Anchor>,
    pub(crate) classifier: C,
}

impl<S: std::fmt::Debug, C> std::fmt::Debug for Metrics<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("name", &self.operation.name)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C> Metrics<S, C> {
    /// The handle of the measured operation.
    pub fn handle(&self) -> OperationHandle {
        OperationHandle {
            operation: Arc::clone(&self.operation),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Request> Service<Request> for Metrics<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Begin before calling: an inner service that does its work inside
        // `call` is still measured, and counted in flight.
        let call = self.operation.begin();
        ResponseFuture {
            inner: self.inner.call(request),
            classifier: self.classifier.clone(),
            call: Some(call),
        }
    }
}
