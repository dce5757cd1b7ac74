//! Cost of a call through a closed circuit breaker around a ready no-op
//! service: the bare service, our `Breaker`, and tower-resilience 0.13's
//! circuit breaker configured alike (failure rate 50 % over a 60 s time
//! window, at least 10 calls, 30 s open, 1 half-open probe) — once with its
//! time-based window (alike) and once with its count-based one (cheaper).
//!
//! `single`: one task on a current-thread runtime, `ready().await` then
//! `call().await` per iteration. `contended`: 4 tasks on a 2-worker runtime
//! share one breaker; the time shown is wall-clock per call (total time ÷
//! total calls).
//!
//! Run: `cargo bench -p resilience-benches --bench breaker`. The zero-allocation
//! check of the success path is the test `tests/breaker_alloc.rs` (a counting
//! global allocator would slow the allocating peer here).
//!
//! Wall-clock figures inflate when the machine is shared; for figures that
//! do not depend on load, run `breaker_calls.rs` (a bin of this package) under callgrind
//! (instructions per call) or `perf stat -e task-clock` (CPU time per call).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::breaker::{BreakerConfig, BreakerLayer};
use tower::{Layer, Service, ServiceExt};
use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};

/// A service that is always ready and answers at once.
#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

fn ours() -> impl Service<u64, Response = u64, Future: Send, Error: std::fmt::Debug> + Clone + Send
{
    let config = BreakerConfig {
        failure_rate_threshold: Some(0.5),
        minimum_throughput: 10,
        monitoring_period: Duration::from_secs(60),
        reset_timeout: Duration::from_secs(30),
        half_open_max_calls: 1,
        ..BreakerConfig::default()
    };
    BreakerLayer::new("bench", config).unwrap().layer(Noop)
}

/// Its time-based window keeps one record per call and walks all of them on
/// every call, so its cost grows with the calls made in the last 60 s.
fn peer_time_window()
-> impl Service<u64, Response = u64, Future: Send, Error: std::fmt::Debug> + Clone + Send {
    peer(
        CircuitBreakerLayer::builder()
            .sliding_window_type(SlidingWindowType::TimeBased)
            .sliding_window_duration(Duration::from_secs(60)),
    )
}

/// Its count-based window (last 100 calls): the fair comparison of costs.
fn peer_count_window()
-> impl Service<u64, Response = u64, Future: Send, Error: std::fmt::Debug> + Clone + Send {
    peer(
        CircuitBreakerLayer::builder()
            .sliding_window_type(SlidingWindowType::CountBased)
            .sliding_window_size(100),
    )
}

fn peer(
    builder: tower_resilience::circuitbreaker::CircuitBreakerConfigBuilder<
        tower_resilience::circuitbreaker::DefaultClassifier,
    >,
) -> impl Service<u64, Response = u64, Future: Send, Error: std::fmt::Debug> + Clone + Send {
    let layer = builder
        .failure_rate_threshold(0.5)
        .minimum_number_of_calls(10)
        .wait_duration_in_open(Duration::from_secs(30))
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    layer.layer(Noop)
}

async fn one_call<S>(service: &mut S, request: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    black_box(response);
}

fn single<S>(c: &mut Criterion, name: &str, mut service: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function(&format!("breaker/single/{name}"), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    one_call(&mut service, i).await;
                }
                start.elapsed()
            })
        })
    });
}

const TASKS: u64 = 4;

fn contended<S>(c: &mut Criterion, name: &str, service: S)
where
    S: Service<u64, Response = u64, Future: Send> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function(&format!("breaker/contended/{name}"), |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            let service = service.clone();
            runtime.block_on(async move {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let mut service = service.clone();
                        tokio::spawn(async move {
                            for i in 0..per_task {
                                one_call(&mut service, i).await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                // Time per call, counting every call made.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * TASKS) as f64)
            })
        })
    });
}

/// What one clock read costs here. The breaker reads the time-stamp counter
/// through quanta once per closed call (resilience's clock); the OS clock
/// rows are what it read before.
fn clock(c: &mut Criterion) {
    let counter = quanta::Clock::new();
    let origin = counter.raw();
    c.bench_function("breaker/clock/quanta_counter_nanos", |b| {
        b.iter(|| counter.delta_as_nanos(origin, counter.raw()))
    });
    c.bench_function("breaker/clock/std_instant_now", |b| b.iter(Instant::now));
    c.bench_function("breaker/clock/tokio_instant_now", |b| {
        b.iter(tokio::time::Instant::now)
    });
}

fn benches(c: &mut Criterion) {
    clock(c);
    single(c, "bare", Noop);
    single(c, "ours", ours());
    single(c, "tower_resilience_count_window", peer_count_window());
    single(c, "tower_resilience_time_window", peer_time_window());
    contended(c, "bare", Noop);
    contended(c, "ours", ours());
    contended(c, "tower_resilience_count_window", peer_count_window());
    contended(c, "tower_resilience_time_window", peer_time_window());
}

criterion_group!(breaker, benches);
criterion_main!(breaker);
