//! Cost per call of the full per-service stack (metrics → breaker →
//! concurrency → timeout → retry, with a budget) around a ready no-op
//! service, against the bare service, in one run.
//!
//! `cargo bench -p resilience-benches --bench stack`
//!
//! - `single`: one task calling in a loop on a current-thread runtime.
//! - `contended`: four tasks sharing one stack on a runtime with two worker
//!   threads; the figure is wall time per call (both workers busy).
//!
//! `noop recorder` builds the stack before any metrics recorder is installed
//! (metric updates cost nothing); `prometheus` builds it after installing the
//! Prometheus recorder, as the service runs.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::registry::Registry;
use resilience::stack::{ServiceConfig, ServiceStack};
use tower::{Layer, Service, ServiceExt};

const CONFIG: &str = r#"
timeout = "5s"

[breaker]
failure_threshold = 5

[concurrency]
max_concurrent = 1024
max_queue = 1024
queue_timeout = "1s"

[retry]
attempts = 3

[budget]
p95 = "100ms"
error_rate = 0.05
"#;

#[derive(Clone, Copy)]
struct Noop;

impl Service<()> for Noop {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Ok(()))
    }
}

/// Calls `service` `iters` times from one task.
async fn run<S>(mut service: S, iters: u64)
where
    S: Service<()>,
    S::Error: std::fmt::Debug,
{
    for _ in 0..iters {
        service.ready().await.unwrap().call(()).await.unwrap();
    }
}

fn single<S>(c: &mut Criterion, group: &str, name: &str, service: S)
where
    S: Service<()> + Clone,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.benchmark_group(group).bench_function(name, |b| {
        b.iter_custom(|iters| {
            let service = service.clone();
            runtime.block_on(async move {
                let started = Instant::now();
                run(service, iters).await;
                started.elapsed()
            })
        })
    });
}

fn contended<S>(c: &mut Criterion, group: &str, name: &str, service: S)
where
    S: Service<()> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    const TASKS: u64 = 4;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.benchmark_group(group).bench_function(name, |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            let service = service.clone();
            runtime.block_on(async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| tokio::spawn(run(service.clone(), per_task)))
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                started.elapsed()
            })
        })
    });
}

/// The stack of a `GET` route: no retry section.
fn stack_without_retry(
    name: &str,
) -> impl Layer<
    Noop,
    Service: Service<(), Error = resilience::BoxError, Future: Send> + Clone + Send + 'static,
> {
    let config = CONFIG.replace("[retry]\nattempts = 3\n", "");
    let config: ServiceConfig = toml::from_str(&config).unwrap();
    assert!(config.retry.is_none());
    ServiceStack::new(name, &config, &Registry::new()).unwrap()
}

fn stack(
    name: &str,
) -> impl Layer<
    Noop,
    Service: Service<(), Error = resilience::BoxError, Future: Send> + Clone + Send + 'static,
> {
    let config: ServiceConfig = toml::from_str(CONFIG).unwrap();
    ServiceStack::new(name, &config, &Registry::new()).unwrap()
}

/// Each layer alone around the no-op service, to see where the time goes.
fn layers(c: &mut Criterion) {
    use resilience::breaker::{BreakerConfig, BreakerLayer};
    use resilience::concurrency::{ConcurrencyConfig, ConcurrencyLimitLayer};
    use resilience::metrics::{MetricsConfig, MetricsLayer};
    use resilience::retry::{RetryConfig, RetryLayer};
    let group = "stack/single one layer";
    single(c, group, "bare", Noop);
    single(
        c,
        group,
        "metrics",
        MetricsLayer::new("m", MetricsConfig::default())
            .unwrap()
            .layer(Noop),
    );
    single(
        c,
        group,
        "breaker",
        BreakerLayer::new("b", BreakerConfig::default())
            .unwrap()
            .layer(Noop),
    );
    let limit = ConcurrencyConfig {
        max_concurrent: 1024,
        max_queue: 1024,
        ..ConcurrencyConfig::default()
    };
    single(
        c,
        group,
        "concurrency",
        ConcurrencyLimitLayer::new("c", limit).unwrap().layer(Noop),
    );
    single(
        c,
        group,
        "timeout",
        tower::timeout::TimeoutLayer::new(Duration::from_secs(5)).layer(Noop),
    );
    single(
        c,
        group,
        "retry",
        RetryLayer::new("r", RetryConfig::default())
            .unwrap()
            .layer(Noop),
    );
}

fn benches(c: &mut Criterion) {
    layers(c);
    // Built before any recorder is installed: metric handles are no-ops.
    let plain = stack("bench").layer(Noop);
    single(c, "stack/single", "bare", Noop);
    single(c, "stack/single", "stack (noop recorder)", plain.clone());
    contended(c, "stack/contended", "bare", Noop);
    contended(c, "stack/contended", "stack (noop recorder)", plain);
    let get_route = stack_without_retry("bench-get").layer(Noop);
    single(
        c,
        "stack/single",
        "stack without retry (noop recorder)",
        get_route,
    );

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    resilience::metrics::describe_all();
    let measured = stack("bench").layer(Noop);
    single(c, "stack/single", "stack (prometheus)", measured.clone());
    contended(c, "stack/contended", "stack (prometheus)", measured);
    // Keep the exporter's histograms drained as a scrape would.
    assert!(
        prometheus
            .render()
            .contains("resilience_operation_requests_total")
    );
}

criterion_group! {
    name = stack_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(stack_benches);
