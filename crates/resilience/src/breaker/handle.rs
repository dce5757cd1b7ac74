//! The breaker's handle: stats, operator actions, and wrapping plain futures.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

use super::error::BreakerOpen;
use super::future::ResponseFuture;
use super::state::{Admission, BreakerState, Shared, Transition};
use crate::BoxError;
use crate::classify::{Classifier, ErrorIsFailure};

/// A cloneable handle on one breaker (an `Arc` inside): read its state and
/// stats, act on it as an operator, or run any future under it.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

/// A breaker's state and window counts at one moment, for `/admin/stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// Its state.
    pub state: BreakerState,
    /// Calls counted in the window.
    pub calls: u64,
    /// Successful calls in the window.
    pub successes: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Slow calls in the window (successful or not).
    pub slow_calls: u64,
    /// `failures / calls` in the window (0 with no calls).
    pub failure_rate: f64,
    /// `slow_calls / calls` in the window (0 with no calls).
    pub slow_call_rate: f64,
    /// Milliseconds until the next probe is admitted, when open.
    pub next_probe_in_ms: Option<u64>,
    /// State changes since the breaker was built.
    pub transitions: u64,
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The current state. An open breaker whose timeout has passed reads
    /// `Open` until the next call moves it to half-open.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }

    /// State and window counts now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let (state, counts, next_probe_in) = self.shared.observe();
        let rate = |n: u64| {
            if counts.calls == 0 {
                0.0
            } else {
                n as f64 / counts.calls as f64
            }
        };
        BreakerSnapshot {
            name: self.name().to_owned(),
            state,
            calls: counts.calls,
            successes: counts.calls - counts.failures.min(counts.calls),
            failures: counts.failures,
            slow_calls: counts.slow,
            failure_rate: rate(counts.failures),
            slow_call_rate: rate(counts.slow),
            next_probe_in_ms: next_probe_in
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            transitions: self.shared.transitions(),
        }
    }

    /// Operator action: close the breaker, forget the window and the backoff.
    /// Also the way out of forced-open and disabled.
    pub fn reset(&self) {
        self.shared.set(BreakerState::Closed);
    }

    /// Operator action: refuse every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared.set(BreakerState::ForcedOpen);
    }

    /// Operator action: let every call through, counting nothing, until
    /// [`reset`](Self::reset).
    pub fn disable(&self) {
        self.shared.set(BreakerState::Disabled);
    }

    /// Receives every state change from now on. A receiver that falls more
    /// than 64 events behind gets `RecvError::Lagged` and then the newest.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.subscribe()
    }

    /// Runs `future` under the breaker, with the same rules as the layer
    /// (every `Err` a failure): refused at once with [`BreakerOpen`] when
    /// open, else its outcome counted.
    ///
    /// Admission is decided now, when `call` is called, not at the first poll.
    pub fn call<F, T, E>(&self, future: F) -> ResponseFuture<F, ErrorIsFailure>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError> + 'static,
    {
        self.call_with(future, ErrorIsFailure)
    }

    /// Like [`call`](Self::call), judging the result with `classifier`.
    pub fn call_with<F, C, T, E>(&self, future: F, classifier: C) -> ResponseFuture<F, C>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError> + 'static,
        C: Classifier<T, E>,
    {
        match self.shared.admit() {
            Admission::Admitted(permit) => {
                ResponseFuture::admitted(future, Arc::clone(&self.shared), permit, classifier)
            }
            Admission::Pass => ResponseFuture::passthrough(future),
            Admission::Rejected(retry_after) => ResponseFuture::rejected(BreakerOpen::new(
                Arc::clone(self.shared.name()),
                retry_after,
            )),
        }
    }
}

impl std::fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerHandle")
            .field("name", self.shared.name())
            .field("state", &self.shared.state())
            .finish()
    }
}
