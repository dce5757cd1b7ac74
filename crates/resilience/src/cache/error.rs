//! The error a cache load reports to every caller waiting on it.

use std::fmt;
use std::sync::Arc;

use crate::BoxError;

/// A load failed (or its loader panicked) and no stale value could be served.
///
/// One load serves every concurrent caller of a key, so its error is shared:
/// the loader's own error is kept behind an `Arc` and exposed as
/// [`source()`](std::error::Error::source). To react to a particular cause
/// (say, an open circuit breaker under the loader), walk the source chain or
/// use [`LoadError::find`].
#[derive(Clone)]
pub struct LoadError {
    cache: Arc<str>,
    cause: Cause,
}

#[derive(Clone)]
enum Cause {
    Loader(Arc<dyn std::error::Error + Send + Sync + 'static>),
    Panicked,
}

impl LoadError {
    pub(crate) fn loader(cache: Arc<str>, error: BoxError) -> Self {
        LoadError {
            cache,
            cause: Cause::Loader(Arc::from(error)),
        }
    }

    pub(crate) fn panicked(cache: Arc<str>) -> Self {
        LoadError {
            cache,
            cause: Cause::Panicked,
        }
    }

    /// The name of the cache whose load failed.
    pub fn cache(&self) -> &str {
        &self.cache
    }

    /// `true` when the loader panicked (or its task was cancelled) instead of
    /// returning.
    pub fn is_panic(&self) -> bool {
        matches!(self.cause, Cause::Panicked)
    }

    /// The first error of type `E` in the loader's error and its sources.
    pub fn find<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut next = std::error::Error::source(self);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<E>() {
                return Some(found);
            }
            next = error.source();
        }
        None
    }
}

impl fmt::Debug for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("LoadError");
        debug.field("cache", &self.cache);
        match &self.cause {
            Cause::Loader(error) => debug.field("source", error),
            Cause::Panicked => debug.field("source", &"panicked"),
        };
        debug.finish()
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Loader(error) => write!(f, "cache '{}' load failed: {error}", self.cache),
            Cause::Panicked => write!(f, "cache '{}' load panicked", self.cache),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Loader(error) => Some(&**error as &(dyn std::error::Error + 'static)),
            Cause::Panicked => None,
        }
    }
}
