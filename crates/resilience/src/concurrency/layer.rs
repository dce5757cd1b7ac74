//! [`ConcurrencyLimitLayer`]: builds the shared state once, wraps services.

use std::sync::Arc;

use tower_layer::Layer;

use super::{ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLimit, limiter::Limiter};
use crate::ConfigError;

/// Applies a [`ConcurrencyLimit`] to services.
///
/// The permits, the queue and the statistics are created here, once: every
/// service this layer wraps (axum calls [`Layer::layer`] many times) shares
/// them.
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    limiter: Arc<Limiter>,
}

impl ConcurrencyLimitLayer {
    /// A layer named `name` (the `name` label of its metrics) with `config`,
    /// which is validated first.
    pub fn new(name: impl Into<Arc<str>>, config: ConcurrencyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            limiter: Arc::new(Limiter::new(name.into(), &config)),
        })
    }

    /// The handle for statistics of the state this layer's services share.
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle::new(Arc::clone(&self.limiter))
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(inner, Arc::clone(&self.limiter))
    }
}

impl std::fmt::Debug for ConcurrencyLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("name", &self.limiter.name)
            .finish_non_exhaustive()
    }
}
