//! The breaker's tower `Layer`.

use std::sync::Arc;

use tower_layer::Layer;

use super::config::BreakerConfig;
use super::handle::BreakerHandle;
use super::service::Breaker;
use super::state::Shared;
use crate::ConfigError;
use crate::classify::ErrorIsFailure;

/// Wraps services in one named circuit breaker.
///
/// The breaker's state is made here, when the layer is built: every service
/// made by [`Layer::layer`] (axum calls it many times) and every
/// [`BreakerHandle`] shares it.
#[derive(Clone)]
pub struct BreakerLayer<C = ErrorIsFailure> {
    shared: Arc<Shared>,
    classifier: C,
}

impl BreakerLayer {
    /// A breaker named `name` (the `name` label of its metrics) that counts
    /// every `Err` as a failure. Fails if `config` does not validate.
    ///
    /// Metric handles are registered with the `metrics` recorder current now.
    pub fn new(name: impl Into<Arc<str>>, config: BreakerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared::new(name.into(), &config)),
            classifier: ErrorIsFailure,
        })
    }
}

impl<C> BreakerLayer<C> {
    /// Judges calls with `classifier` instead (e.g.
    /// [`HttpStatus`](crate::classify::HttpStatus) to count 5xx responses).
    /// The breaker state is kept.
    pub fn with_classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// The handle for stats and operator actions.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.shared))
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::new(inner, Arc::clone(&self.shared), self.classifier.clone())
    }
}

impl<C> std::fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("name", self.shared.name())
            .field("state", &self.shared.state())
            .finish()
    }
}
