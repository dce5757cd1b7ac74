//! [`RetryLayer`]: builds the shared state once, wraps services.

use std::sync::Arc;

use tower_layer::Layer;

use super::{
    CloneRequest, Retry, RetryAfterHint, RetryConfig, RetryHandle,
    hint::hint_of,
    policy::{RetryPolicy, Shared},
};
use crate::ConfigError;
use crate::classify::ErrorIsFailure;

/// Applies [`Retry`] to services.
///
/// The budget and statistics are created here, once: every service this
/// layer wraps (axum calls [`Layer::layer`] many times) shares them.
///
/// `C` classifies results ([`ErrorIsFailure`] by default, `HttpStatus` for
/// HTTP clients); `R` decides which requests may be sent again
/// ([`CloneRequest`] by default, [`IdempotentHttp`](super::IdempotentHttp)
/// for HTTP requests).
pub struct RetryLayer<C = ErrorIsFailure, R = CloneRequest> {
    shared: Arc<Shared>,
    classifier: C,
    replay: R,
}

impl RetryLayer {
    /// A layer named `name` (the `name` label of its metrics) with `config`,
    /// which is validated first.
    pub fn new(name: impl Into<Arc<str>>, config: RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(name.into(), &config)),
            classifier: ErrorIsFailure,
            replay: CloneRequest,
        })
    }
}

impl<C, R> RetryLayer<C, R> {
    /// Judges results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2, R> {
        RetryLayer {
            shared: self.shared,
            classifier,
            replay: self.replay,
        }
    }

    /// Decides which requests may be retried (and copies them) with `replay`.
    pub fn with_replay<R2>(self, replay: R2) -> RetryLayer<C, R2> {
        RetryLayer {
            shared: self.shared,
            classifier: self.classifier,
            replay,
        }
    }

    /// Also honours the wait carried by errors of type `T` (found as the
    /// inner error itself or in a boxed error's `source()` chain). The
    /// concurrency limit's rejections are honoured by default.
    pub fn honour<T: RetryAfterHint>(self) -> Self {
        self.shared.add_hint(hint_of::<T>);
        self
    }

    /// The handle for statistics of the state this layer's services share.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(Arc::clone(&self.shared))
    }
}

impl<C: Clone, R: Clone> Clone for RetryLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, R> std::fmt::Debug for RetryLayer<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, R: Clone> Layer<S> for RetryLayer<C, R> {
    type Service = Retry<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        let policy = RetryPolicy::new(
            Arc::clone(&self.shared),
            self.classifier.clone(),
            self.replay.clone(),
        );
        Retry::from_tower(tower::retry::Retry::new(policy, inner))
    }
}
