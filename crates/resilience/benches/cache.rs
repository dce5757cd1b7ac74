//! Cache hit cost: our `Cache::get_or_load` against tower-resilience 0.13's
//! cache layer configured alike (10 000 entries, 60 s ttl, one hot key), on
//! one task and contended (4 tasks on a 2-worker runtime). A bare moka
//! `get` is the floor.
//!
//! `cargo bench -p resilience-benches --bench cache`
//!
//! Contended rows report wall time per hit across the runtime: 4 tasks share
//! `iters` hits, so perfect scaling on 2 threads would show half the
//! single-task time.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use resilience::cache::{Cache, CacheConfig};
use tower::{Service, ServiceExt};

type Value = Arc<String>;

const KEY: u64 = 42;
const TTL: Duration = Duration::from_secs(60);
const TASKS: u64 = 4;

fn value() -> Value {
    Arc::new("a cached user profile".to_string())
}

fn ours() -> Cache<u64, Value> {
    Cache::new(
        "bench",
        CacheConfig {
            ttl: TTL,
            max_entries: Some(10_000),
            ..CacheConfig::default()
        },
    )
    .unwrap()
}

async fn ours_hit(cache: &Cache<u64, Value>) -> Value {
    cache
        .get_or_load(KEY, &[], || async { Ok::<_, Infallible>(value()) })
        .await
        .unwrap()
}

type TowerCache = tower_resilience::cache::Cache<
    tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<Value, Infallible>>>,
    u64,
    u64,
    Value,
>;

fn theirs() -> TowerCache {
    fn inner(_: u64) -> std::future::Ready<Result<Value, Infallible>> {
        std::future::ready(Ok(value()))
    }
    let layer = tower_resilience::cache::CacheLayer::builder()
        .max_size(10_000)
        .ttl(TTL)
        .key_extractor(|request: &u64| *request)
        .build()
        .unwrap();
    tower::Layer::layer(
        &layer,
        tower::service_fn(inner as fn(u64) -> std::future::Ready<Result<Value, Infallible>>),
    )
}

async fn theirs_hit(service: &mut TowerCache) -> Value {
    service.ready().await.unwrap().call(KEY).await.unwrap()
}

type Bare = tower::util::ServiceFn<fn(u64) -> std::future::Ready<Result<Value, Infallible>>>;

/// The bare no-op service: answers a clone of one shared value at once
/// (what a hit returns, without a cache).
fn bare() -> Bare {
    fn inner(_: u64) -> std::future::Ready<Result<Value, Infallible>> {
        thread_local! {
            static VALUE: Value = value();
        }
        std::future::ready(Ok(VALUE.with(Arc::clone)))
    }
    tower::service_fn(inner as fn(u64) -> std::future::Ready<Result<Value, Infallible>>)
}

async fn bare_call(service: &mut Bare) -> Value {
    service.ready().await.unwrap().call(KEY).await.unwrap()
}

fn moka_floor() -> moka::future::Cache<u64, Value> {
    moka::future::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(TTL)
        .build()
}

fn single_task(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache_hit/single_task");

    let mut service = bare();
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(bare_call(&mut service).await);
                }
                start.elapsed()
            })
        })
    });

    let cache = ours();
    rt.block_on(ours_hit(&cache));
    group.bench_function("resilience get_or_load", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(ours_hit(&cache).await);
                }
                start.elapsed()
            })
        })
    });

    let mut service = theirs();
    rt.block_on(theirs_hit(&mut service));
    group.bench_function("tower-resilience cache", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(theirs_hit(&mut service).await);
                }
                start.elapsed()
            })
        })
    });

    let floor = moka_floor();
    rt.block_on(floor.insert(KEY, value()));
    group.bench_function("moka get (floor)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(floor.get(&KEY).await);
                }
                start.elapsed()
            })
        })
    });

    // moka's synchronous cache, for comparison: no future to build per get.
    let sync_floor: moka::sync::Cache<u64, Value> = moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(TTL)
        .build();
    sync_floor.insert(KEY, value());
    group.bench_function("moka sync get (floor)", |b| {
        b.iter(|| black_box(sync_floor.get(&KEY)))
    });

    // What our store is: moka's sync cache hashing keys with foldhash.
    let foldhash_floor: moka::sync::Cache<u64, Value, foldhash::fast::RandomState> =
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(TTL)
            .build_with_hasher(foldhash::fast::RandomState::default());
    foldhash_floor.insert(KEY, value());
    group.bench_function("moka sync get, foldhash (floor)", |b| {
        b.iter(|| black_box(foldhash_floor.get(&KEY)))
    });

    // The OS clock read, for scale. The hit path itself reads the
    // time-stamp counter once (resilience's clock; this package is built
    // without `test-util`, as production is).
    group.bench_function("tokio Instant::now", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(tokio::time::Instant::now());
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

/// Runs `TASKS` tasks sharing `iters` operations on `rt`; returns wall time.
fn contended<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, task: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let per_task = iters.div_ceil(TASKS);
        let start = Instant::now();
        let handles: Vec<_> = (0..TASKS).map(|_| tokio::spawn(task(per_task))).collect();
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    })
}

fn contended_tasks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("cache_hit/4_tasks_2_workers");

    let service = bare();
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            contended(&rt, iters, |n| {
                let mut service = service;
                async move {
                    for _ in 0..n {
                        black_box(bare_call(&mut service).await);
                    }
                }
            })
        })
    });

    let cache = ours();
    rt.block_on(ours_hit(&cache));
    group.bench_function("resilience get_or_load", |b| {
        b.iter_custom(|iters| {
            contended(&rt, iters, |n| {
                let cache = cache.clone();
                async move {
                    for _ in 0..n {
                        black_box(ours_hit(&cache).await);
                    }
                }
            })
        })
    });

    let service = theirs();
    rt.block_on(theirs_hit(&mut service.clone()));
    group.bench_function("tower-resilience cache", |b| {
        b.iter_custom(|iters| {
            contended(&rt, iters, |n| {
                let mut service = service.clone();
                async move {
                    for _ in 0..n {
                        black_box(theirs_hit(&mut service).await);
                    }
                }
            })
        })
    });

    let floor = moka_floor();
    rt.block_on(floor.insert(KEY, value()));
    group.bench_function("moka get (floor)", |b| {
        b.iter_custom(|iters| {
            contended(&rt, iters, |n| {
                let floor = floor.clone();
                async move {
                    for _ in 0..n {
                        black_box(floor.get(&KEY).await);
                    }
                }
            })
        })
    });

    group.bench_function("tokio Instant::now", |b| {
        b.iter_custom(|iters| {
            contended(&rt, iters, |n| async move {
                for _ in 0..n {
                    black_box(tokio::time::Instant::now());
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, single_task, contended_tasks);
criterion_main!(benches);
