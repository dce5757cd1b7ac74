//! The whole resilience stack of one named service, built from one config value.
//!
//! [`ServiceStack::new`] reads a [`ServiceConfig`] (a `[services.<name>]`
//! table), builds every layer it asks for, registers each layer's handle in
//! a [`Registry`] under the service's name, and is itself a [`Layer`] that
//! wraps a service in, from the outside in:
//!
//! ```text
//! metrics → breaker → concurrency → timeout → retry → service
//! ```
//!
//! - **metrics** outermost: it measures what the caller lives through —
//!   rejections, queue waits, retries and all — so `/admin/stats` and the
//!   budgets judge the service as its users see it.
//! - **breaker** next: an open breaker refuses at once, before the call takes
//!   a permit or a place in the queue. It sits *outside* retry so it sees one
//!   outcome per call, the final one: a call that succeeded on its second try
//!   is a success, and a call that failed three tries is one failure, not
//!   three (which would open the breaker three times too early and let one
//!   bad request count like several).
//! - **concurrency** (when configured): one permit per call, held across its
//!   retries, so retries never multiply the work in progress. Time spent in
//!   the queue is bounded by `queue_timeout` and does not eat into `timeout`.
//! - **timeout** (default 30 s): one deadline for the whole call, backoff
//!   sleeps and retries included, so a caller never waits longer than
//!   `timeout` once admitted. An attempt that hangs is therefore not retried
//!   — the deadline is spent; per-attempt limits belong in the client below
//!   (a database statement timeout, an HTTP client timeout). A timeout is an
//!   error ([`tower::timeout::error::Elapsed`], as from tower's `Timeout`)
//!   that the breaker counts. Unlike tower's `Timeout`, [`Deadline`] starts
//!   its timer only when the call first has to wait, so a call that answers
//!   at once (a cache hit) pays no clock read and no timer.
//! - **retry** (only when configured) innermost, closest to the service it
//!   repeats.
//!
//! Every layer's error is a [`BoxError`]; the service's own error is boxed
//! first. One classifier ([`ErrorIsFailure`] unless
//! [`ServiceStack::with_classifier`] says otherwise) judges calls for the
//! metrics, the breaker and the retry alike.
//!
//! `cache` is validated here but not composed into the generic stack: a
//! cache is typed or HTTP-specific. [`ServiceStack::cache`] builds the
//! service's typed `Cache<K, V>` and [`ServiceStack::http_cache`] its HTTP
//! [`CacheLayer`] (which goes innermost, around the handler: `… → timeout →
//! cache → handler`, so a hit still passes the breaker and is measured);
//! both register the cache under the service's name.
//!
//! ```
//! use resilience::registry::Registry;
//! use resilience::stack::{ServiceConfig, ServiceStack};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), resilience::BoxError> {
//! let config: ServiceConfig = toml::from_str(r#"
//!     timeout = "2s"
//!
//!     [breaker]
//!     failure_threshold = 5
//!
//!     [concurrency]
//!     max_concurrent = 32
//!     max_queue = 64
//!     queue_timeout = "500ms"
//!
//!     [budget]
//!     p95 = "250ms"
//!     error_rate = 0.05
//! "#)?;
//! let registry = Registry::new();
//! let stack = ServiceStack::new("users", &config, &registry)?;
//! let service = stack.layer(service_fn(|id: u64| async move {
//!     Ok::<_, std::io::Error>(format!("user {id}"))
//! }));
//!
//! assert_eq!(service.oneshot(7).await?, "user 7");
//! let stats = registry.snapshot();
//! assert_eq!(stats.operations[0].count, 1);
//! assert_eq!(stats.breakers[0].name, "users");
//! assert_eq!(stats.concurrency[0].limit, 32);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use serde::{Deserialize, Serialize};
use tokio::time::Sleep;
use tower::timeout::error::Elapsed;
use tower::util::Either;
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Breaker, BreakerConfig, BreakerHandle, BreakerLayer};
use crate::budget::{BudgetConfig, BudgetHandle};
use crate::cache::{Cache, CacheConfig, CacheHandle, CacheLayer};
use crate::classify::ErrorIsFailure;
use crate::concurrency::{
    ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLimit, ConcurrencyLimitLayer,
};
use crate::metrics::{Metrics, MetricsConfig, MetricsLayer, OperationHandle};
use crate::registry::{Registry, RegistryError};
use crate::retry::{CloneRequest, Retry, RetryConfig, RetryHandle, RetryLayer};
use crate::{BoxError, ConfigError};

/// The resilience settings of one service (`[services.<name>]` in TOML).
/// Every section may be left out.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Deadline for a whole call once admitted, retries included. Default
    /// 30 s; `None` (only from code) means no deadline.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The circuit breaker; always present (`enabled = false` turns it off).
    pub breaker: BreakerConfig,
    /// The concurrency limit; none when the section is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyConfig>,
    /// Retries; none when the section is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// The service's cache settings, for the service to build its cache with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheConfig>,
    /// Performance budget; its `window` is also the window of the service's
    /// `/admin/stats` figures. No limits by default.
    pub budget: BudgetConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            breaker: BreakerConfig::default(),
            concurrency: None,
            retry: None,
            cache: None,
            budget: BudgetConfig::default(),
        }
    }
}

/// A service's config could not be turned into a stack.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A section of the service's config holds a value its layer cannot use.
    #[error("service '{service}': invalid {section} config: {source}")]
    Config {
        /// The service's name.
        service: String,
        /// The section the field is in: `breaker`, `concurrency`, `retry`,
        /// `cache` or `budget`, or `service` for the service's own keys
        /// (`timeout`).
        section: &'static str,
        /// The field and what it allows.
        source: ConfigError,
    },
    /// A layer of this name is already registered.
    #[error("service '{service}': {source}")]
    Registry {
        /// The service's name.
        service: String,
        /// The name that is taken.
        source: RegistryError,
    },
}

impl StackError {
    /// The name of the service whose stack could not be built.
    pub fn service(&self) -> &str {
        match self {
            Self::Config { service, .. } | Self::Registry { service, .. } => service,
        }
    }

    fn config(service: &str, section: &'static str) -> impl FnOnce(ConfigError) -> Self {
        move |source| Self::Config {
            service: service.to_owned(),
            section,
            source,
        }
    }

    fn registry(service: &str) -> impl FnOnce(RegistryError) -> Self {
        move |source| Self::Registry {
            service: service.to_owned(),
            source,
        }
    }
}

/// The handles of every layer of one stack (also in the [`Registry`]).
#[derive(Clone, Debug)]
pub struct StackHandles {
    /// The service's RED statistics.
    pub operation: OperationHandle,
    /// Its budget, when one has limits.
    pub budget: Option<BudgetHandle>,
    /// Its circuit breaker.
    pub breaker: BreakerHandle,
    /// Its concurrency limit, when configured.
    pub concurrency: Option<ConcurrencyHandle>,
    /// Its retry layer, when configured.
    pub retry: Option<RetryHandle>,
}

/// Builds the stack of one named service; a [`Layer`]. See the module
/// documentation for the order of the layers and why.
///
/// `C` is the classifier shared by metrics, breaker and retry; `R` decides
/// which requests the retry layer may send again.
pub struct ServiceStack<C = ErrorIsFailure, R = CloneRequest> {
    name: Arc<str>,
    metrics: MetricsLayer<C>,
    breaker: BreakerLayer<C>,
    concurrency: Option<ConcurrencyLimitLayer>,
    timeout: Option<Duration>,
    retry: Option<RetryLayer<C, R>>,
    cache: Option<CacheConfig>,
    handles: StackHandles,
    registry: Registry,
}

impl<C, R> std::fmt::Debug for ServiceStack<C, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceStack")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency.is_some())
            .field("retry", &self.retry.is_some())
            .finish_non_exhaustive()
    }
}

impl<C: Clone, R: Clone> Clone for ServiceStack<C, R> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            breaker: self.breaker.clone(),
            concurrency: self.concurrency.clone(),
            timeout: self.timeout,
            retry: self.retry.clone(),
            cache: self.cache.clone(),
            handles: self.handles.clone(),
            registry: self.registry.clone(),
        }
    }
}

impl ServiceStack {
    /// Validates `config`, builds every layer it asks for (their shared
    /// state is created here, once) and registers their handles in
    /// `registry` under `name`. Nothing is registered if anything fails.
    pub fn new(
        name: impl Into<Arc<str>>,
        config: &ServiceConfig,
        registry: &Registry,
    ) -> Result<Self, StackError> {
        let name: Arc<str> = name.into();
        let section = |section| StackError::config(&name, section);
        if config.timeout == Some(Duration::ZERO) {
            let error = ConfigError::new("timeout", "must be above zero");
            return Err(section("service")(error));
        }
        config.budget.validate().map_err(section("budget"))?;
        if let Some(cache) = &config.cache {
            cache.validate().map_err(section("cache"))?;
        }
        let breaker =
            BreakerLayer::new(name.clone(), config.breaker.clone()).map_err(section("breaker"))?;
        let concurrency = config
            .concurrency
            .clone()
            .map(|c| ConcurrencyLimitLayer::new(name.clone(), c))
            .transpose()
            .map_err(section("concurrency"))?;
        let retry = config
            .retry
            .clone()
            .map(|c| RetryLayer::new(name.clone(), c))
            .transpose()
            .map_err(section("retry"))?;
        // The statistics window is the budget's `window`.
        let metrics = MetricsLayer::new(
            name.clone(),
            MetricsConfig {
                window: config.budget.window,
            },
        )
        .map_err(section("budget"))?;
        let operation = metrics.handle();
        let budget = if config.budget.is_empty() {
            None
        } else {
            let budget = BudgetHandle::attach(&operation, config.budget.clone());
            Some(budget.map_err(section("budget"))?)
        };
        let handles = StackHandles {
            operation,
            budget,
            breaker: breaker.handle(),
            concurrency: concurrency.as_ref().map(ConcurrencyLimitLayer::handle),
            retry: retry.as_ref().map(RetryLayer::handle),
        };
        registry
            .register_stack(&handles)
            .map_err(StackError::registry(&name))?;
        Ok(Self {
            name,
            metrics,
            breaker,
            concurrency,
            timeout: config.timeout,
            retry,
            cache: config.cache.clone(),
            handles,
            registry: registry.clone(),
        })
    }
}

impl<C, R> ServiceStack<C, R> {
    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handles of the stack's layers.
    pub fn handles(&self) -> &StackHandles {
        &self.handles
    }

    /// The service's `cache` section, validated, if it has one.
    pub fn cache_config(&self) -> Option<&CacheConfig> {
        self.cache.as_ref()
    }

    /// Builds the service's typed cache from its `cache` section (`None`
    /// without one) and registers it under the service's name. One cache per
    /// stack: a second call finds the name taken.
    pub fn cache<K, V>(&self) -> Result<Option<Cache<K, V>>, StackError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        self.build_cache(|name, config| {
            let cache = Cache::new(name, config)?;
            Ok((cache.handle(), cache))
        })
    }

    /// Builds the service's HTTP [`CacheLayer`] (for `GET` responses, keyed
    /// by `key`, which must include the caller's tenant) from its `cache`
    /// section (`None` without one) and registers it under the service's
    /// name. It goes innermost, just around the handler (see the module doc).
    pub fn http_cache<K, F>(&self, key: F) -> Result<Option<CacheLayer<K, F>>, StackError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.build_cache(|name, config| {
            let layer = CacheLayer::new(name, config, key)?;
            Ok((layer.handle(), layer))
        })
    }

    fn build_cache<T>(
        &self,
        build: impl FnOnce(Arc<str>, CacheConfig) -> Result<(CacheHandle, T), ConfigError>,
    ) -> Result<Option<T>, StackError> {
        let Some(config) = self.cache.clone() else {
            return Ok(None);
        };
        let (handle, cache) =
            build(self.name.clone(), config).map_err(StackError::config(&self.name, "cache"))?;
        self.registry
            .register_cache(handle)
            .map_err(StackError::registry(&self.name))?;
        Ok(Some(cache))
    }

    /// Judge calls with `classifier` in the metrics, breaker and retry
    /// layers (for example [`crate::classify::HttpStatus`] for HTTP, so a
    /// `503` response counts as a failure). The layers keep their state.
    pub fn with_classifier<D: Clone>(self, classifier: D) -> ServiceStack<D, R> {
        self.with_classifiers(classifier.clone(), classifier)
    }

    /// Like [`ServiceStack::with_classifier`], but the breaker judges calls
    /// with `breaker` while the metrics and retry layers use `classifier`:
    /// for an outcome that the statistics must show as a failure but that
    /// says nothing about this service's own health (a dependency behind its
    /// own breaker refused), so this breaker should not open for it.
    pub fn with_classifiers<D: Clone>(self, classifier: D, breaker: D) -> ServiceStack<D, R> {
        ServiceStack {
            name: self.name,
            metrics: self.metrics.with_classifier(classifier.clone()),
            breaker: self.breaker.with_classifier(breaker),
            concurrency: self.concurrency,
            timeout: self.timeout,
            retry: self.retry.map(|retry| retry.with_classifier(classifier)),
            cache: self.cache,
            handles: self.handles,
            registry: self.registry,
        }
    }

    /// Decide with `replay` which requests may be retried (for example
    /// [`crate::retry::IdempotentHttp`] for HTTP requests).
    pub fn with_replay<R2>(self, replay: R2) -> ServiceStack<C, R2> {
        ServiceStack {
            name: self.name,
            metrics: self.metrics,
            breaker: self.breaker,
            concurrency: self.concurrency,
            timeout: self.timeout,
            retry: self.retry.map(|retry| retry.with_replay(replay)),
            cache: self.cache,
            handles: self.handles,
            registry: self.registry,
        }
    }
}

/// The service with its error boxed, wrapped in retry when configured.
pub type Retried<S, C, R> = Either<Retry<BoxErrors<S>, C, R>, BoxErrors<S>>;
/// [`Retried`] under the deadline, when one is configured.
pub type Timed<S, C, R> = Either<Deadline<Retried<S, C, R>>, Retried<S, C, R>>;
/// The service a [`ServiceStack`] builds around `S`.
pub type StackService<S, C = ErrorIsFailure, R = CloneRequest> =
    Metrics<Breaker<Either<ConcurrencyLimit<Timed<S, C, R>>, Timed<S, C, R>>, C>, C>;

impl<S, C: Clone, R: Clone> Layer<S> for ServiceStack<C, R> {
    type Service = StackService<S, C, R>;

    /// Built from the inside out; read bottom-up for the order a call takes.
    fn layer(&self, service: S) -> Self::Service {
        // One error type for every layer below and both arms of each `Either`.
        let service = BoxErrors { inner: service };
        // Retry: innermost, repeats only the service itself.
        let service = match &self.retry {
            Some(retry) => Either::Left(retry.layer(service)),
            None => Either::Right(service),
        };
        // Timeout: one deadline over every try and backoff sleep.
        let service = match self.timeout {
            Some(timeout) => Either::Left(Deadline {
                inner: service,
                timeout,
            }),
            None => Either::Right(service),
        };
        // Concurrency: one permit per call, held across its retries.
        let service = match &self.concurrency {
            Some(limit) => Either::Left(limit.layer(service)),
            None => Either::Right(service),
        };
        // Breaker: refuses before a permit is taken; sees one final outcome per call.
        let service = self.breaker.layer(service);
        // Metrics: outermost, measures what the caller lives through.
        self.metrics.layer(service)
    }
}

/// Boxes the wrapped service's error, so every layer of the stack (and
/// both arms of each optional one) shares the error type [`BoxError`].
#[derive(Clone, Debug)]
pub struct BoxErrors<S> {
    inner: S,
}

impl<S, Request> Service<Request> for BoxErrors<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        BoxErrorsFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The future of [`BoxErrors`].
    #[derive(Debug)]
    pub struct BoxErrorsFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for BoxErrorsFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().inner.poll(cx)).map_err(Into::into))
    }
}

/// Fails a call that has not answered `timeout` after it first had to wait,
/// with [`Elapsed`] (tower's timeout error, so callers need to know one).
///
/// The timer starts at the first poll that returns `Pending`, not in
/// `call`: work done synchronously before the call first waits cannot be
/// interrupted anyway, and a call that answers at once never touches the
/// clock or the timer wheel. The timer is boxed when it starts: a tokio
/// `Sleep` is 112 bytes, and kept inline it would be copied with the
/// future through every layer above on every call, waiting or not.
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    timeout: Duration,
}

impl<S, Request> Service<Request> for Deadline<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        DeadlineFuture {
            inner: self.inner.call(request),
            sleep: None,
            timeout: self.timeout,
        }
    }
}

pin_project! {
    /// The future of [`Deadline`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        sleep: Option<Pin<Box<Sleep>>>,
        timeout: Duration,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        let timeout = *this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(Elapsed::new().into()))
    }
}
