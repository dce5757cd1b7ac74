//! The resilience stacks of the service, built from `[services.<name>]`.
//!
//! - Every domain router (`users`, `organizations`, …) runs inside its own
//!   [`ServiceStack`] — metrics → breaker → concurrency → timeout — judged by
//!   [`DomainHealth`]: as [`HttpStatus`] (a `5xx` answer is a failure, a
//!   `4xx` is not), except that the domain's breaker does not count a `503`
//!   its handler answered because a dependency refused (the `database`
//!   breaker open, the pool timed out): that dependency's own breaker
//!   judges it. The metrics and budgets still count it. See [`DomainLayer`].
//! - Every database call goes through the `database` breaker
//!   ([`Database::run`]), which counts only "PostgreSQL is unreachable"
//!   (`503`) as a failure: a constraint violation says nothing about the
//!   database's health.
//!
//! A refused call — breaker open, queue full, waited too long, deadline
//! passed — is a `503` envelope with `Retry-After` (see
//! [`ApiError::from_layer`]). Every handle is registered in one [`Registry`],
//! which feeds `/admin/stats`, `/health/ready` and `/metrics`.
//!
//! Domain requests are not retried here: a request body streams and cannot be
//! sent twice; retries belong to the calls a handler makes to its
//! dependencies. A `retry` section under a domain is therefore refused at
//! start, naming the key.
//!
//! ```
//! use boardroom::{config::Settings, stacks};
//! use resilience::registry::Registry;
//!
//! let registry = Registry::new();
//! let settings = Settings::defaults();
//! let _users = stacks::DomainLayer::new("users", &settings, &registry).unwrap();
//! assert_eq!(registry.snapshot().breakers[0].name, "users");
//! ```

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use pin_project_lite::pin_project;
use resilience::{
    BoxError,
    breaker::{BreakerHandle, BreakerLayer},
    classify::{Classifier, HttpStatus, Outcome},
    registry::Registry,
    stack::{ServiceStack, StackError, StackService},
};
use sqlx::PgPool;
use tower::{Layer, Service};

use crate::{
    config::{ConfigError, Settings},
    error::{ApiError, ErrorReport},
};

/// The domain routers that run inside a stack of their own (`users_search`
/// is `GET /v1/users`, apart from the rest of `users`). `debug` is the
/// test-only routes' stack (built only with `debug.routes`), so tests can
/// slow a real operation past its budget.
pub const DOMAINS: &[&str] = &[
    "organizations",
    "users",
    "users_search",
    "jobs",
    "debug",
    "notifications",
    "assets",
    "files",
];

/// The outgoing notification channels' stacks (every section may be used).
pub const CHANNELS: &[&str] = crate::notifications::channels::STACKS;

/// The dependency stacks (only their `breaker` section is used).
/// `redis` is the shared second-level cache; `clamd`, `thumbnails` and
/// `extract` are the asset processing steps.
pub const DEPENDENCIES: &[&str] = &[
    "database",
    crate::shared_cache::REDIS_SERVICE,
    "clamd",
    "thumbnails",
    "extract",
];

/// Checks every `[services.<name>]` table by building it into a throwaway
/// registry: unknown names, sections a name does not use, and values the
/// layers refuse are errors naming the key.
pub fn validate(settings: &Settings) -> Result<(), ConfigError> {
    for (name, config) in &settings.services {
        let known = DOMAINS.contains(&name.as_str())
            || DEPENDENCIES.contains(&name.as_str())
            || CHANNELS.contains(&name.as_str());
        if !known {
            return Err(ConfigError::Service {
                key: format!("services.{name}"),
                message: format!(
                    "unknown service; known are {}",
                    DOMAINS
                        .iter()
                        .chain(DEPENDENCIES)
                        .chain(CHANNELS)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if config.retry.is_some() && DOMAINS.contains(&name.as_str()) {
            return Err(ConfigError::Service {
                key: format!("services.{name}.retry"),
                message: "domain requests are not retried (a request body cannot be sent \
                          twice); remove the section"
                    .into(),
            });
        }
        if DEPENDENCIES.contains(&name.as_str())
            && (config.retry.is_some() || config.concurrency.is_some() || config.cache.is_some())
        {
            return Err(ConfigError::Service {
                key: format!("services.{name}"),
                message: "only the `breaker` section is used for a dependency".into(),
            });
        }
    }
    let registry = Registry::new();
    for name in DOMAINS {
        DomainLayer::new(name, settings, &registry).map_err(ConfigError::from)?;
    }
    for name in CHANNELS {
        ServiceStack::new(*name, &settings.service(name), &registry).map_err(ConfigError::from)?;
    }
    Database::breaker(settings, &registry).map_err(ConfigError::from)?;
    crate::shared_cache::validate_service(settings)?;
    Ok(())
}

impl From<StackError> for ConfigError {
    fn from(error: StackError) -> Self {
        match error {
            StackError::Config {
                service,
                section,
                source,
            } => {
                let key = if section == "service" {
                    format!("services.{service}.{}", source.field())
                } else {
                    format!("services.{service}.{section}.{}", source.field())
                };
                ConfigError::Service {
                    key,
                    message: source.problem().to_owned(),
                }
            }
            StackError::Registry { service, source } => ConfigError::Service {
                key: format!("services.{service}"),
                message: source.to_string(),
            },
        }
    }
}

/// Never replays a domain request (see the module documentation).
type NoReplay = fn(&Request) -> Option<Request>;

fn no_replay(_: &Request) -> Option<Request> {
    None
}

/// Turns a layer's refusal into the `503` envelope (axum routes may not
/// fail); the service's own responses pass unchanged. tower's `MapResult`
/// cannot do this: it converts `poll_ready` errors with `From`, and nothing
/// converts into `Infallible`.
#[derive(Debug)]
pub struct IntoApiResponse<S> {
    inner: S,
    not_ready: Option<ApiError>,
}

impl<S: Clone> Clone for IntoApiResponse<S> {
    fn clone(&self) -> Self {
        // A pending readiness error belongs to the clone that saw it.
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S> Service<Request> for IntoApiResponse<S>
where
    S: Service<Request, Response = Response, Error = BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = IntoApiResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A layer that cannot take calls answers the next one with its error.
        if let Err(error) = ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(ApiError::from_layer(error));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.not_ready.take() {
            Some(error) => IntoApiResponseFuture {
                inner: None,
                error: Some(error),
            },
            None => IntoApiResponseFuture {
                inner: Some(self.inner.call(request)),
                error: None,
            },
        }
    }
}

pin_project! {
    /// The future of [`IntoApiResponse`].
    #[derive(Debug)]
    pub struct IntoApiResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        error: Option<ApiError>,
    }
}

impl<F> Future for IntoApiResponseFuture<F>
where
    F: Future<Output = Result<Response, BoxError>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            let error = this.error.take().unwrap_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("response future polled after completion"))
            });
            return Poll::Ready(Ok(error.into_response()));
        };
        Poll::Ready(Ok(match ready!(inner.poll(cx)) {
            Ok(response) => response,
            Err(error) => ApiError::from_layer(error).into_response(),
        }))
    }
}

/// How a domain's stack judges its calls: as [`HttpStatus`], except that
/// the breaker's copy (`breaker: true`) takes a `503` answered by the
/// handler (an [`ApiError`] envelope: a dependency refused or was
/// unreachable) as no failure of the domain.
///
/// Why: the dependency has a breaker of its own (`database`, with a short
/// `reset_timeout`) that already answers such calls at once. Were the
/// domain's breaker to open too, recovery would wait for the longer of the
/// two reset timeouts, and a domain probe landing while the dependency's
/// breaker is still open would fail and reopen the domain for another
/// `reset_timeout` (measured: 2.15 s to recover from a database outage
/// instead of ≤ 1 s; see BENCHMARKS.md, "Load and faults"). Timeouts and
/// other `5xx` still open the domain's breaker; the metrics and budgets
/// (`breaker: false`) still count every `5xx`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DomainHealth {
    /// `true` for the breaker's copy.
    pub breaker: bool,
}

impl<B, E> Classifier<http::Response<B>, E> for DomainHealth {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        if self.breaker
            && let Ok(response) = result
            && response.status() == http::StatusCode::SERVICE_UNAVAILABLE
            && response.extensions().get::<ErrorReport>().is_some()
        {
            return Outcome::Success;
        }
        HttpStatus.classify(result)
    }
}

/// The [`ServiceStack`] of one domain router, as an axum-compatible layer
/// (its error is already a response). Its state is created in
/// [`DomainLayer::new`], so axum calling `layer` once per route shares it.
#[derive(Clone, Debug)]
pub struct DomainLayer {
    stack: ServiceStack<DomainHealth, NoReplay>,
}

impl DomainLayer {
    /// Builds the stack of the domain `name` from `[services.<name>]` (or the
    /// defaults) and registers its handles in `registry`.
    pub fn new(name: &str, settings: &Settings, registry: &Registry) -> Result<Self, StackError> {
        let stack = ServiceStack::new(name, &settings.service(name), registry)?
            .with_classifiers(
                DomainHealth { breaker: false },
                DomainHealth { breaker: true },
            )
            .with_replay(no_replay as NoReplay);
        Ok(Self { stack })
    }
}

impl<S> Layer<S> for DomainLayer {
    type Service = IntoApiResponse<StackService<S, DomainHealth, NoReplay>>;

    fn layer(&self, inner: S) -> Self::Service {
        IntoApiResponse {
            inner: self.stack.layer(inner),
            not_ready: None,
        }
    }
}

/// The PostgreSQL pool behind the `database` breaker.
#[derive(Clone, Debug)]
pub struct Database {
    /// The pool (queries are passed to [`Database::run`]).
    pub pool: PgPool,
    breaker: BreakerHandle,
}

/// Judges database calls: only "unreachable / not accepting work" is a
/// failure of the database.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatabaseHealth;

impl<T> Classifier<T, ApiError> for DatabaseHealth {
    fn classify(&self, result: Result<&T, &ApiError>) -> Outcome {
        match result {
            Err(ApiError::Unavailable { .. }) => Outcome::RETRYABLE,
            _ => Outcome::Success,
        }
    }
}

impl Database {
    /// The pool, guarded by the `database` breaker built from
    /// `[services.database]` and registered in `registry`.
    pub fn new(pool: PgPool, settings: &Settings, registry: &Registry) -> Result<Self, StackError> {
        let breaker = Self::breaker(settings, registry)?;
        Ok(Self { pool, breaker })
    }

    fn breaker(settings: &Settings, registry: &Registry) -> Result<BreakerHandle, StackError> {
        let name = DEPENDENCIES[0];
        let config = settings.service(name);
        let layer =
            BreakerLayer::new(name, config.breaker).map_err(|source| StackError::Config {
                service: name.to_owned(),
                section: "breaker",
                source,
            })?;
        let handle = layer.handle();
        registry
            .register_breaker(handle.clone())
            .map_err(|source| StackError::Registry {
                service: name.to_owned(),
                source,
            })?;
        Ok(handle)
    }

    /// The breaker's handle (for readiness and operators).
    pub fn breaker_handle(&self) -> &BreakerHandle {
        &self.breaker
    }

    /// Runs `query` under the `database` breaker: refused at once with a
    /// `503` while it is open; its outcome counted otherwise.
    pub async fn run<T>(
        &self,
        query: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.breaker
            .call_with(query, DatabaseHealth)
            .await
            .map_err(ApiError::from_layer)
    }
}

impl ApiError {
    /// The error a layer's refusal (or a handler's own error passed through
    /// a layer) stands for: an open breaker, a full queue, a queue wait or a
    /// deadline passed are `503` with the layer's `Retry-After`.
    pub fn from_layer(error: BoxError) -> Self {
        let error = match error.downcast::<ApiError>() {
            Ok(api) => return *api,
            Err(other) => other,
        };
        if let Some(open) = error.downcast_ref::<resilience::breaker::BreakerOpen>() {
            return Self::Unavailable {
                message: format!(
                    "'{}' is failing and its circuit breaker is open; retry later",
                    open.name()
                ),
                retry_after: open.retry_after(),
            };
        }
        if let Some(full) = error.downcast_ref::<resilience::concurrency::QueueFull>() {
            return Self::Unavailable {
                message: format!("'{}' is at capacity; retry later", full.name()),
                retry_after: full.retry_after(),
            };
        }
        if let Some(waited) = error.downcast_ref::<resilience::concurrency::QueueTimeout>() {
            return Self::Unavailable {
                message: format!(
                    "'{}' is at capacity (waited {} for a slot); retry later",
                    waited.name(),
                    humantime::format_duration(waited.waited())
                ),
                retry_after: waited.retry_after(),
            };
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return Self::Unavailable {
                message: "the request took longer than its service's timeout".into(),
                retry_after: Duration::from_secs(1),
            };
        }
        Self::Internal(anyhow::anyhow!(error).context("a resilience layer failed"))
    }
}
