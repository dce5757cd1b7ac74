//! [`MetricsLayer`]: measures every call of the service it wraps.

use std::sync::Arc;

use tower_layer::Layer;

use super::handle::{Anchor, OperationHandle};
use super::{Metrics, MetricsConfig};
use crate::ConfigError;
use crate::classify::ErrorIsFailure;

/// Wraps a service in [`Metrics`], measuring each call as one named operation.
///
/// The operation's state and metric handles are created here, once; every
/// service made by [`Layer::layer`] shares them.
#[derive(Clone)]
pub struct MetricsLayer<C = ErrorIsFailure> {
    operation: Arc<Anchor>,
    classifier: C,
}

impl std::fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("name", &self.operation.name)
            .finish_non_exhaustive()
    }
}

impl MetricsLayer {
    /// A layer measuring the operation `name`, with statistics over
    /// `config.window`. Install the metrics recorder *before* building layers:
    /// the layer takes its metric handles from the recorder installed now.
    pub fn new(name: impl Into<Arc<str>>, config: MetricsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            operation: Arc::new(Anchor::new(name.into(), config.window)),
            classifier: ErrorIsFailure,
        })
    }
}

impl<C> MetricsLayer<C> {
    /// Judge calls with `classifier` instead (for example
    /// [`crate::classify::HttpStatus`], so a `500` response counts as a failure).
    pub fn with_classifier<D>(self, classifier: D) -> MetricsLayer<D> {
        MetricsLayer {
            operation: self.operation,
            classifier,
        }
    }

    /// The handle for statistics (and for attaching a [`crate::budget`]).
    pub fn handle(&self) -> OperationHandle {
        OperationHandle {
            operation: Arc::clone(&self.operation),
        }
    }
}

impl<S, C: Clone> Layer<S> for MetricsLayer<C> {
    type Service = Metrics<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            operation: Arc::clone(&self.operation),
            classifier: self.classifier.clone(),
        }
    }
}
