//! The future of one call through the breaker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::BreakerOpen;
use super::state::{Permit, Shared};
use crate::BoxError;
use crate::classify::{Classifier, ErrorIsFailure};

pin_project! {
    /// Response future of [`Breaker`](super::Breaker) and of
    /// [`BreakerHandle::call`](super::BreakerHandle::call).
    ///
    /// Admission was decided when the call was made: a refused call resolves
    /// at its first poll to a [`BreakerOpen`] error. An admitted call reports
    /// its outcome when the inner future finishes; dropped before that, it
    /// reports nothing (a half-open probe gives its slot back).
    pub struct ResponseFuture<F, C = ErrorIsFailure> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Rejected { error: Option<BreakerOpen> },
        Passthrough { #[pin] future: F },
        Admitted { #[pin] future: F, guard: Guard, classifier: C },
    }
}

/// Reports a dropped, unfinished call to the breaker.
struct Guard {
    shared: Arc<Shared>,
    permit: Permit,
    done: bool,
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.shared.cancel(self.permit);
        }
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn rejected(error: BreakerOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn admitted(future: F, shared: Arc<Shared>, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Admitted {
                future,
                guard: Guard {
                    shared,
                    permit,
                    done: false,
                },
                classifier,
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError> + 'static,
    C: Classifier<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(Box::new(
                error
                    .take()
                    .expect("ResponseFuture polled after completion"),
            ))),
            KindProj::Passthrough { future } => future.poll(cx).map_err(Into::into),
            KindProj::Admitted {
                future,
                guard,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                guard.done = true;
                match &result {
                    // A layer below shed the call (full queue, nested open
                    // breaker): the callee was never asked, so the outcome
                    // says nothing about its health. Count nothing, as for a
                    // cancelled call.
                    Err(error) if crate::retry::is_layer_rejection(error) => {
                        guard.shared.cancel(guard.permit);
                    }
                    _ => {
                        let failure = classifier.classify(result.as_ref()).is_failure();
                        guard.shared.complete(guard.permit, failure);
                    }
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Rejected { .. } => "rejected",
            Kind::Passthrough { .. } => "passthrough",
            Kind::Admitted { .. } => "admitted",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}
