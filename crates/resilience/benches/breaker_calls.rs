//! Runs N closed calls through a ready no-op service — bare, behind our
//! `Breaker`, or behind tower-resilience's count-window breaker — on a
//! current-thread runtime, for counting instructions per call with callgrind
//! (robust to machine load, unlike wall-clock benches):
//!
//! ```text
//! cargo build --release -p resilience-benches --bin breaker_calls
//! for n in 100000 200000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/breaker_calls ours $n 2>&1 | grep refs
//! done
//! ```
//!
//! Instructions per call = (refs at 200000 − refs at 100000) / 100000, which
//! cancels the start-up cost. Modes: `bare`, `ours`, `peer` (the breaker);
//! `stack`, `stack-prometheus` (the stack bench's `ServiceStack`, without and
//! with the Prometheus recorder), `metrics-prometheus` (the metrics layer
//! alone); `cache`, `moka-sync`, `moka-future` (one hot key).
//!
//! CPU time per call, which other processes on the machine inflate far less
//! than wall-clock time: `perf stat -e task-clock breaker_calls ours 10000000`
//! and divide by the count. A third argument `contended` splits the calls
//! over 4 tasks on a 2-worker runtime sharing the service.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use resilience::breaker::{BreakerConfig, BreakerLayer};
use resilience::metrics::{MetricsConfig, MetricsLayer};
use resilience::registry::Registry;
use resilience::stack::{ServiceConfig, ServiceStack};
use tower::{Layer, Service, ServiceExt};
use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};

#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

fn run<S>(service: S, calls: u64)
where
    S: Service<u64, Response = u64, Future: Send> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    if CONTENDED.load(std::sync::atomic::Ordering::Relaxed) {
        return run_contended(service, calls);
    }
    let mut service = service;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..calls {
            let response = service.ready().await.unwrap().call(i).await.unwrap();
            black_box(response);
        }
    });
}

/// Set by a third argument `contended`: the calls are split over 4 tasks
/// on a 2-worker runtime sharing one service (for `perf stat` / `time`).
static CONTENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn run_contended<S>(service: S, calls: u64)
where
    S: Service<u64, Response = u64, Future: Send> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for i in 0..calls / 4 {
                        let response = service.ready().await.unwrap().call(i).await.unwrap();
                        black_box(response);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// The stack bench's config (`benches/stack.rs`): metrics → breaker →
/// concurrency → timeout → retry, with a budget.
fn stack() -> ServiceStack {
    let config: ServiceConfig = toml::from_str(
        r#"
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
"#,
    )
    .unwrap();
    ServiceStack::new("calls", &config, &Registry::new()).unwrap()
}

/// Installs the Prometheus recorder globally, as the service runs.
fn install_prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    resilience::metrics::describe_all();
    handle
}

const TTL: Duration = Duration::from_secs(60);

/// Hits of one hot key through `Cache::get_or_load` (as `benches/cache.rs`).
fn cache_hits(calls: u64) {
    use resilience::cache::{Cache, CacheConfig};
    let config = CacheConfig {
        ttl: TTL,
        max_entries: Some(10_000),
        ..CacheConfig::default()
    };
    let cache: Cache<u64, std::sync::Arc<String>> = Cache::new("calls", config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for _ in 0..calls {
            let value = cache
                .get_or_load(42, &[], || async {
                    Ok::<_, Infallible>(std::sync::Arc::new("value".to_string()))
                })
                .await
                .unwrap();
            black_box(value);
        }
    });
}

/// moka's sync `get` of one hot key: a floor for the cache hit.
fn moka_sync_hits(calls: u64) {
    let cache = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(TTL)
        .build();
    cache.insert(42u64, std::sync::Arc::new("value".to_string()));
    for _ in 0..calls {
        black_box(cache.get(&42));
    }
}

/// moka's async `get` of one hot key: the other floor.
fn moka_future_hits(calls: u64) {
    let cache = moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(TTL)
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        cache
            .insert(42u64, std::sync::Arc::new("value".to_string()))
            .await;
        for _ in 0..calls {
            black_box(cache.get(&42).await);
        }
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "ours".into());
    let calls: u64 = args.next().map_or(100_000, |n| n.parse().expect("a count"));
    if args.next().as_deref() == Some("contended") {
        CONTENDED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    match mode.as_str() {
        "bare" => run(Noop, calls),
        "ours" => {
            let config = BreakerConfig {
                failure_rate_threshold: Some(0.5),
                minimum_throughput: 10,
                monitoring_period: Duration::from_secs(60),
                reset_timeout: Duration::from_secs(30),
                half_open_max_calls: 1,
                ..BreakerConfig::default()
            };
            run(
                BreakerLayer::new("calls", config).unwrap().layer(Noop),
                calls,
            );
        }
        "peer" => {
            let layer = CircuitBreakerLayer::builder()
                .sliding_window_type(SlidingWindowType::CountBased)
                .sliding_window_size(100)
                .failure_rate_threshold(0.5)
                .minimum_number_of_calls(10)
                .wait_duration_in_open(Duration::from_secs(30))
                .permitted_calls_in_half_open(1)
                .build()
                .unwrap();
            run(layer.layer(Noop), calls);
        }
        "stack" => run(stack().layer(Noop), calls),
        "sizes" => {
            fn size_of_future<S: Service<u64>>(_: &S) -> usize {
                std::mem::size_of::<S::Future>()
            }
            let service = stack().layer(Noop);
            println!("stack future: {} bytes", size_of_future(&service));
            println!("sleep: {} bytes", std::mem::size_of::<tokio::time::Sleep>());
        }
        "stack-prometheus" => {
            let _prometheus = install_prometheus();
            run(stack().layer(Noop), calls);
        }
        "metrics-prometheus" => {
            let _prometheus = install_prometheus();
            let layer = MetricsLayer::new("calls", MetricsConfig::default()).unwrap();
            run(layer.layer(Noop), calls);
        }
        "cache" => cache_hits(calls),
        "moka-sync" => moka_sync_hits(calls),
        "moka-future" => moka_future_hits(calls),
        other => panic!(
            "unknown mode {other}: bare, ours, peer, stack, stack-prometheus, \
             metrics-prometheus, cache, moka-sync or moka-future"
        ),
    }
}
