//! [`ResponseFuture`]: waits for a permit (when it had to queue), then runs
//! the inner call while holding it.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use super::limiter::{Limiter, Permit, QueueSlot};
use crate::BoxError;

/// Resolves once a permit was acquired in time. Boxed because tokio's
/// acquire future cannot be named; only calls that had to queue pay for it.
type Wait = Pin<Box<dyn Future<Output = bool> + Send>>;

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit).
    ///
    /// It owns its permit (and, while queued, its place in the queue):
    /// dropping it at any point frees both.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Running {
            #[pin]
            future: F,
            permit: Permit,
        },
        Queued {
            wait: Wait,
            service: Option<S>,
            request: Option<Req>,
            slot: QueueSlot,
            since: Instant,
        },
        Rejected {
            error: Option<BoxError>,
        },
        Done,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn running(future: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Running { future, permit },
        }
    }

    pub(crate) fn queued(service: S, request: Req, slot: QueueSlot) -> Self {
        let since = Instant::now();
        let limiter: Arc<Limiter> = Arc::clone(slot.limiter());
        let deadline = since + limiter.queue_timeout;
        let wait: Wait = Box::pin(async move {
            match tokio::time::timeout_at(deadline, limiter.semaphore.acquire()).await {
                Ok(Ok(permit)) => {
                    // Given back by `Permit`'s drop, which may keep it to
                    // shrink an adaptive limit.
                    permit.forget();
                    true
                }
                // The semaphore is never closed; an error can only be the timeout.
                Ok(Err(_)) | Err(_) => false,
            }
        });
        Self {
            state: State::Queued {
                wait,
                service: Some(service),
                request: Some(request),
                slot,
                since,
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { future, permit } => {
                    let result = ready!(future.poll(cx));
                    permit.finished(result.is_err());
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(Into::into));
                }
                StateProj::Queued {
                    wait,
                    service,
                    request,
                    slot,
                    since,
                } => {
                    let acquired = ready!(wait.as_mut().poll(cx));
                    let limiter = Arc::clone(slot.limiter());
                    if !acquired {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(limiter.queue_timeout().into()));
                    }
                    limiter.record_wait(since.elapsed());
                    let permit = limiter.admitted();
                    match (service.take(), request.take()) {
                        (Some(mut service), Some(request)) => {
                            let future = service.call(request);
                            // Frees the queue place (the slot) as it goes.
                            this.state.set(State::Running { future, permit });
                        }
                        _ => unreachable!("a queued call holds its service and request"),
                    }
                }
                StateProj::Rejected { error } => {
                    let error = error
                        .take()
                        .expect("a rejected future holds its error until it completes");
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("concurrency::ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, Req> std::fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Queued { .. } => "queued",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
