//! Wait hints carried by errors: an open breaker or a full queue says how
//! long to wait, and the retry layer honours it when it fits under
//! `max_delay`.

use std::{any::Any, error::Error, time::Duration};

use crate::BoxError;

/// An error that tells its caller how long to wait before trying again.
///
/// The layers' own rejections implement it
/// ([`QueueFull`](crate::concurrency::QueueFull),
/// [`QueueTimeout`](crate::concurrency::QueueTimeout), the breaker's
/// `BreakerOpen`). The retry layer finds such an error when it is the inner
/// service's error type itself or anywhere in the `source()` chain of a
/// [`BoxError`], for every type registered with
/// [`RetryLayer::honour`](super::RetryLayer::honour) (the concurrency
/// rejections are registered by default).
pub trait RetryAfterHint: Error + Send + Sync + 'static {
    /// How long the caller should wait before trying again.
    fn retry_after(&self) -> Duration;
}

/// Looks for one hint type in an error (given as `&dyn Any` so any error
/// type can be asked).
pub(crate) type HintFn = fn(&dyn Any) -> Option<Duration>;

pub(crate) fn hint_of<T: RetryAfterHint>(error: &dyn Any) -> Option<Duration> {
    if let Some(hint) = error.downcast_ref::<T>() {
        return Some(hint.retry_after());
    }
    let boxed = error.downcast_ref::<BoxError>()?;
    let mut link: Option<&(dyn Error + 'static)> = Some(boxed.as_ref());
    while let Some(error) = link {
        if let Some(hint) = error.downcast_ref::<T>() {
            return Some(hint.retry_after());
        }
        link = error.source();
    }
    None
}

/// The rejections of this crate's own layers: load shed or refused before the
/// callee was asked. The retry layer honours their hints; the breaker counts
/// them as nothing (they say nothing about the callee's health).
const LAYER_REJECTIONS: [HintFn; 3] = [
    hint_of::<crate::concurrency::QueueFull>,
    hint_of::<crate::concurrency::QueueTimeout>,
    hint_of::<crate::breaker::BreakerOpen>,
];

/// The hint types every retry layer honours.
pub(crate) fn default_hints() -> Vec<HintFn> {
    LAYER_REJECTIONS.to_vec()
}

/// `true` when `error` is (or wraps) a rejection by one of this crate's layers.
pub(crate) fn is_layer_rejection(error: &dyn Any) -> bool {
    LAYER_REJECTIONS.iter().any(|hint| hint(error).is_some())
}
