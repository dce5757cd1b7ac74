//! [`Retry`]: `tower::retry::Retry` with this crate's policy and error type.

use std::task::{Context, Poll};

use tower_service::Service;

use super::{CloneRequest, Replay, ResponseFuture, policy::RetryPolicy};
use crate::{
    BoxError,
    classify::{Classifier, ErrorIsFailure},
};

/// Retries failed calls of the inner service by the rules of its layer's
/// config. A thin wrapper over `tower::retry::Retry` driven by
/// [`RetryPolicy`]; it only turns the inner error into a [`BoxError`].
pub struct Retry<S, C = ErrorIsFailure, R = CloneRequest> {
    inner: tower::retry::Retry<RetryPolicy<C, R>, S>,
}

impl<S, C, R> Retry<S, C, R> {
    pub(crate) fn from_tower(inner: tower::retry::Retry<RetryPolicy<C, R>, S>) -> Self {
        Self { inner }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S: Clone, C: Clone, R: Clone> Clone for Retry<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C, R> std::fmt::Debug for Retry<S, C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry").field("inner", &self.inner).finish()
    }
}

impl<S, C, R, Req> Service<Req> for Retry<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classifier<S::Response, S::Error> + Clone,
    R: Replay<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<RetryPolicy<C, R>, S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::new(self.inner.call(request))
    }
}
