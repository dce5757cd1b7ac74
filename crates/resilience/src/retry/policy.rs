//! [`RetryPolicy`]: the `tower::retry::Policy` that decides, per failed
//! try, whether and when to try again; and the state its copies share.

use std::{any::Any, pin::Pin, sync::Arc, time::Duration};

use parking_lot::RwLock;
use rand::Rng;
use tokio::time::Sleep;

use super::{
    budget::RetryBudget,
    config::{Backoff, RetryConfig},
    hint::{HintFn, default_hints},
    replay::Replay,
    stats::{GaveUp, Stats},
};
use crate::classify::{Classifier, Outcome};

/// Shared by every copy of one retry layer, created once by the layer.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    attempts: u32,
    backoff: Backoff,
    base_delay: Duration,
    max_delay: Duration,
    jitter: bool,
    pub(crate) budget: RetryBudget,
    /// Read only on the failure path.
    hints: RwLock<Vec<HintFn>>,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn new(name: Arc<str>, config: &RetryConfig) -> Self {
        Self {
            attempts: config.attempts,
            backoff: config.backoff,
            base_delay: config.base_delay,
            max_delay: config.max_delay,
            jitter: config.jitter,
            budget: RetryBudget::new(&config.budget),
            hints: RwLock::new(default_hints()),
            stats: Stats::new(&name),
            name,
        }
    }

    pub(crate) fn add_hint(&self, hint: HintFn) {
        let mut hints = self.hints.write();
        if !hints.iter().any(|known| std::ptr::fn_addr_eq(*known, hint)) {
            hints.push(hint);
        }
    }

    fn hint(&self, error: &dyn Any) -> Option<Duration> {
        self.hints.read().iter().find_map(|hint| hint(error))
    }

    /// The wait before retry `retry` (0 for the first retry).
    fn backoff_delay(&self, retry: u32) -> Duration {
        let delay = self.backoff.delay(retry, self.base_delay, self.max_delay);
        if self.jitter && !delay.is_zero() {
            let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
            Duration::from_nanos(rand::rng().random_range(0..=nanos))
        } else {
            delay
        }
    }
}

/// The retry layer's `tower::retry::Policy`.
///
/// tower clones the policy for every call, so `retries` counts the retries of
/// one call while `shared` (budget, statistics) is common to all. A failure
/// is retried when the classifier calls it retryable, the request can be
/// replayed, attempts remain, the budget allows it and any wait the callee
/// asked for fits under `max_delay`.
pub struct RetryPolicy<C, R> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
    retries: u32,
}

impl<C, R> RetryPolicy<C, R> {
    pub(crate) fn new(shared: Arc<Shared>, classifier: C, replay: R) -> Self {
        Self {
            shared,
            classifier,
            replay,
            retries: 0,
        }
    }
}

impl<C: Clone, R: Clone> Clone for RetryPolicy<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            retries: self.retries,
        }
    }
}

impl<C, R> std::fmt::Debug for RetryPolicy<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("name", &self.shared.name)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl<Req, Res, E, C, R> tower::retry::Policy<Req, Res, E> for RetryPolicy<C, R>
where
    C: Classifier<Res, E>,
    R: Replay<Req>,
    E: 'static,
{
    /// Boxed: tower keeps the policy's future inline in every call's
    /// response future, so an inline 112-byte `Sleep` would be copied with
    /// each call through the layers above, retried or not. The box is made
    /// only for a retry.
    type Future = Pin<Box<Sleep>>;

    fn retry(
        &mut self,
        _request: &mut Req,
        result: &mut Result<Res, E>,
    ) -> Option<Pin<Box<Sleep>>> {
        let failure = match self.classifier.classify(result.as_ref()) {
            Outcome::Success => return None,
            Outcome::Failure(failure) if failure.retryable => failure,
            Outcome::Failure(_) => return None,
        };
        let shared = &*self.shared;
        if self.retries + 1 >= shared.attempts {
            shared.stats.gave_up(GaveUp::Attempts);
            return None;
        }
        let asked = failure.retry_after.or_else(|| match result {
            Err(error) => shared.hint(error),
            Ok(_) => None,
        });
        let delay = match asked {
            Some(wait) if wait <= shared.max_delay => wait,
            Some(_) => {
                shared.stats.gave_up(GaveUp::RetryAfterTooLong);
                return None;
            }
            None => shared.backoff_delay(self.retries),
        };
        if !shared.budget.withdraw() {
            shared.stats.gave_up(GaveUp::Budget);
            return None;
        }
        self.retries += 1;
        shared.stats.retried();
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        if self.retries == 0 {
            // The first try: tower asks for a copy before sending it.
            self.shared.budget.deposit();
        }
        if self.shared.attempts <= 1 {
            return None;
        }
        self.replay.replay(request)
    }
}
