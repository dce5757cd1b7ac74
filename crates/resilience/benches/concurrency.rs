//! Cost of the concurrency limit around a ready no-op service, against a
//! bare service, tower's `ConcurrencyLimit` and tower-resilience's bulkhead
//! configured alike (64 permits, a 5 s maximum wait).
//!
//! `single`: one caller, each call polled to completion in place (no
//! executor in the measurement). `contended`: 4 tasks on a 2-worker
//! runtime share one limit, each calling its own clone.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{convert::Infallible, future::Ready, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use resilience::concurrency::{ConcurrencyConfig, ConcurrencyLimitLayer};
use tower::{Layer, Service, ServiceExt, service_fn, util::ServiceFn};
use tower_resilience::bulkhead::BulkheadLayer;

const PERMITS: usize = 64;
const MAX_WAIT: Duration = Duration::from_secs(5);

type Noop = ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn noop() -> Noop {
    service_fn(|n: u64| std::future::ready(Ok(n)))
}

fn ours() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::new(
        "bench",
        ConcurrencyConfig {
            max_concurrent: PERMITS,
            max_queue: 128,
            queue_timeout: MAX_WAIT,
            adaptive: None,
        },
    )
    .unwrap()
}

fn tower_limit() -> tower::limit::ConcurrencyLimitLayer {
    tower::limit::ConcurrencyLimitLayer::new(PERMITS)
}

fn bulkhead() -> BulkheadLayer {
    BulkheadLayer::builder()
        .name("bench")
        .max_concurrent_calls(PERMITS)
        .max_wait_duration(MAX_WAIT)
        .build()
        .unwrap()
}

/// One call, polled in place: every service here is ready at once and
/// answers at once.
fn call_now<S>(service: &mut S, n: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let ready = service.ready().now_or_never().expect("ready at once");
    let ready = ready.unwrap();
    ready
        .call(n)
        .now_or_never()
        .expect("answers at once")
        .unwrap()
}

fn single(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("concurrency/single");
    let mut bare = noop();
    group.bench_function("bare", |b| b.iter(|| call_now(&mut bare, 1)));
    let mut ours = ours().layer(noop());
    group.bench_function("resilience", |b| b.iter(|| call_now(&mut ours, 1)));
    let mut tower = tower_limit().layer(noop());
    group.bench_function("tower", |b| b.iter(|| call_now(&mut tower, 1)));
    // The bulkhead's future is boxed and uses tokio's timer (the runtime is
    // entered above); with free permits it too completes on its first poll.
    let mut bulkhead = bulkhead().layer(noop());
    group.bench_function("tower-resilience-bulkhead", |b| {
        b.iter(|| call_now(&mut bulkhead, 1))
    });
    group.finish();
}

/// `iters` calls split over 4 tasks on a 2-worker runtime.
fn contended_run<S>(runtime: &tokio::runtime::Runtime, service: &S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let per_task = iters.div_ceil(4);
    runtime.block_on(async {
        let started = std::time::Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for n in 0..per_task {
                        let ready = service.ready().await.unwrap();
                        ready.call(n).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        started.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("concurrency/contended");
    let bare = noop();
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &bare, iters))
    });
    let ours = ours().layer(noop());
    group.bench_function("resilience", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &ours, iters))
    });
    let tower = tower_limit().layer(noop());
    group.bench_function("tower", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &tower, iters))
    });
    let bulkhead = bulkhead().layer(noop());
    group.bench_function("tower-resilience-bulkhead", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &bulkhead, iters))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = single, contended
}
criterion_main!(benches);
