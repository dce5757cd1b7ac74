//! Cost of the retry layer's success path around a ready no-op service,
//! against a bare service, tower's `Retry` with a trivial policy (clone the
//! request, never retry) and tower's `Retry` with a policy that deposits
//! into a shared `TpsBudget` (what a budgeted policy on tower costs).
//!
//! `single`: one caller, each call polled to completion in place.
//! `contended`: 4 tasks on a 2-worker runtime share one retry budget.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::{convert::Infallible, future::Ready, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use resilience::retry::{RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceExt, service_fn, util::ServiceFn};

type Noop = ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn noop() -> Noop {
    service_fn(|n: u64| std::future::ready(Ok(n)))
}

/// The least a `tower::retry::Policy` can do.
#[derive(Clone, Copy)]
struct NeverRetry;

impl<Res, E> tower::retry::Policy<u64, Res, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, _: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

/// Tower's own budget: deposit per success, withdraw per retry.
#[derive(Clone)]
struct TpsBudgeted(Arc<tower::retry::budget::TpsBudget>);

impl<Res, E> tower::retry::Policy<u64, Res, E> for TpsBudgeted {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, result: &mut Result<Res, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| std::future::ready(())),
        }
    }

    fn clone_request(&mut self, request: &u64) -> Option<u64> {
        Some(*request)
    }
}

fn tps_budgeted() -> TpsBudgeted {
    TpsBudgeted(Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    )))
}

fn ours() -> RetryLayer {
    RetryLayer::new("bench", RetryConfig::default()).unwrap()
}

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
    let mut group = c.benchmark_group("retry/single");
    let mut bare = noop();
    group.bench_function("bare", |b| b.iter(|| call_now(&mut bare, 1)));
    let mut ours = ours().layer(noop());
    group.bench_function("resilience", |b| b.iter(|| call_now(&mut ours, 1)));
    let mut tower = tower::retry::RetryLayer::new(NeverRetry).layer(noop());
    group.bench_function("tower", |b| b.iter(|| call_now(&mut tower, 1)));
    let mut budgeted = tower::retry::RetryLayer::new(tps_budgeted()).layer(noop());
    group.bench_function("tower-tps-budget", |b| {
        b.iter(|| call_now(&mut budgeted, 1))
    });
    group.finish();
}

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
    let mut group = c.benchmark_group("retry/contended");
    let bare = noop();
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &bare, iters))
    });
    let ours = ours().layer(noop());
    group.bench_function("resilience", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &ours, iters))
    });
    let tower = tower::retry::RetryLayer::new(NeverRetry).layer(noop());
    group.bench_function("tower", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &tower, iters))
    });
    let budgeted = tower::retry::RetryLayer::new(tps_budgeted()).layer(noop());
    group.bench_function("tower-tps-budget", |b| {
        b.iter_custom(|iters| contended_run(&runtime, &budgeted, iters))
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
