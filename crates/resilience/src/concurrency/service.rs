//! [`ConcurrencyLimit`]: the service that admits, queues or rejects calls.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_service::Service;

use super::{ResponseFuture, limiter::Limiter};
use crate::BoxError;

/// Runs at most `max_concurrent` calls of the inner service at once; others
/// wait in a bounded queue for at most `queue_timeout`.
///
/// The waiting happens inside the [`ResponseFuture`], not in `poll_ready`:
/// axum treats route services as always ready, so back-pressure through
/// `poll_ready` would never be felt there. `poll_ready` only forwards to the
/// inner service.
pub struct ConcurrencyLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> ConcurrencyLimit<S> {
    pub(crate) fn from_parts(inner: S, limiter: Arc<Limiter>) -> Self {
        Self { inner, limiter }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ConcurrencyLimit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("name", &self.limiter.name)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(permit) = self.limiter.try_admit() {
            return ResponseFuture::running(self.inner.call(request), permit);
        }
        match self.limiter.enqueue() {
            Some(slot) => {
                // The call happens later, from the future: take the service
                // that was made ready and keep a fresh clone for the next call.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::queued(ready, request, slot)
            }
            None => ResponseFuture::rejected(self.limiter.queue_full().into()),
        }
    }
}
