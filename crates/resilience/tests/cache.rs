//! Behaviour of the typed cache and of the HTTP cache layer, on tokio's
//! paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use resilience::cache::{Cache, CacheConfig};
use tokio::sync::{Notify, oneshot};

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("backend down")
    }
}

impl std::error::Error for Boom {}

fn config(ttl_secs: u64) -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(ttl_secs),
        ..CacheConfig::default()
    }
}

/// A loader returning `value` that counts its runs.
fn counted(
    loads: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl FnOnce() -> std::future::Ready<Result<String, Boom>> + Send + 'static {
    let loads = Arc::clone(loads);
    move || {
        loads.fetch_add(1, SeqCst);
        std::future::ready(Ok(value.to_string()))
    }
}

/// Lets spawned tasks run until `done` holds (bounded, so a bug fails the
/// test instead of hanging it).
async fn settle(mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition never held");
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_ttl() {
    let cache: Cache<u32, String> = Cache::new("ttl", config(10)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));

    assert_eq!(
        cache
            .get_or_load(1, &[], counted(&loads, "a"))
            .await
            .unwrap(),
        "a"
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        cache
            .get_or_load(1, &[], counted(&loads, "b"))
            .await
            .unwrap(),
        "a"
    );
    assert_eq!(loads.load(SeqCst), 1);

    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cache.get(&1).await, None, "expired at exactly ttl");
    assert_eq!(
        cache
            .get_or_load(1, &[], counted(&loads, "b"))
            .await
            .unwrap(),
        "b"
    );
    assert_eq!(loads.load(SeqCst), 2);
    let snapshot = cache.snapshot();
    assert_eq!((snapshot.hits, snapshot.loads_success), (1, 2));
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_share_one_load_even_when_the_first_caller_leaves() {
    let cache: Cache<u32, String> = Cache::new("flight", config(60)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());

    let loader = || {
        let loads = Arc::clone(&loads);
        let release = Arc::clone(&release);
        move || async move {
            loads.fetch_add(1, SeqCst);
            release.notified().await;
            Ok::<_, Boom>("loaded".to_string())
        }
    };

    let first = tokio::spawn({
        let cache = cache.clone();
        let loader = loader();
        async move { cache.get_or_load(7, &[], loader).await }
    });
    settle(|| loads.load(SeqCst) == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    let waiters: Vec<_> = (0..50)
        .map(|_| {
            let cache = cache.clone();
            let loader = loader();
            tokio::spawn(async move { cache.get_or_load(7, &[], loader).await })
        })
        .collect();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        waiters.iter().all(|waiter| !waiter.is_finished()),
        "waiters sleep"
    );
    assert_eq!(cache.snapshot().in_flight, 1);

    release.notify_one();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), "loaded");
    }
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(cache.get(&7).await.as_deref(), Some("loaded"));
}

#[tokio::test(start_paused = true)]
async fn a_load_racing_an_invalidation_is_returned_but_not_stored() {
    let cache: Cache<u32, String> = Cache::new("race", config(60)).unwrap();
    let (release, parked) = oneshot::channel::<()>();
    let started = Arc::new(AtomicUsize::new(0));

    let caller = tokio::spawn({
        let cache = cache.clone();
        let started = Arc::clone(&started);
        async move {
            cache
                .get_or_load(1, &["org:1"], move || async move {
                    started.fetch_add(1, SeqCst);
                    parked.await.unwrap();
                    Ok::<_, Boom>("read before the change".to_string())
                })
                .await
        }
    });
    settle(|| started.load(SeqCst) == 1).await;
    assert_eq!(cache.invalidate_tag("org:1").await, 0);
    release.send(()).unwrap();

    assert_eq!(caller.await.unwrap().unwrap(), "read before the change");
    assert_eq!(
        cache.get(&1).await,
        None,
        "a raced load must not land as fresh"
    );
    assert_eq!(cache.snapshot().loads_dropped, 1);

    // Without a racing invalidation the same load is stored.
    let value = cache
        .get_or_load(1, &["org:1"], || async {
            Ok::<_, Boom>("fresh".to_string())
        })
        .await
        .unwrap();
    assert_eq!(value, "fresh");
    assert_eq!(cache.get(&1).await.as_deref(), Some("fresh"));
}

#[tokio::test(start_paused = true)]
async fn invalidate_tag_removes_exactly_the_tagged_entries() {
    let cache: Cache<u32, u32> = Cache::new("tags", config(60)).unwrap();
    for key in 1..=10 {
        let parity = if key % 2 == 0 { "even" } else { "odd" };
        cache.insert(key, key * 10, &[parity, "all"]).await;
    }
    cache.insert(11, 110, &["other"]).await;

    assert_eq!(cache.invalidate_tag("even").await, 5);
    for key in 1..=10 {
        let expected = (key % 2 == 1).then_some(key * 10);
        assert_eq!(cache.get(&key).await, expected, "key {key}");
    }
    assert_eq!(cache.get(&11).await, Some(110));
    assert_eq!(cache.invalidate_tag("even").await, 0);

    cache.run_pending_tasks().await;
    // odd: 5 keys × (odd, all); other: 1 key. Evens left "all" via the listener.
    assert_eq!(cache.tag_index_len(), 11);
    assert_eq!(cache.invalidate_tag("all").await, 5);
    assert_eq!(cache.get(&1).await, None);
    assert_eq!(cache.get(&11).await, Some(110));
}

#[tokio::test(start_paused = true)]
async fn the_tag_index_stays_bounded_by_the_cache() {
    let config = CacheConfig {
        max_entries: Some(10_000),
        ..config(3_600)
    };
    let cache: Cache<u64, u64> = Cache::new("bounded", config).unwrap();
    for key in 0..1_000_000u64 {
        let tag = format!("org:{}", key % 1_000);
        cache.insert(key, key, &[&tag]).await;
    }
    cache.run_pending_tasks().await;
    let entries = cache.entry_count();
    let indexed = cache.tag_index_len();
    assert!(entries <= 10_000, "entries {entries}");
    assert!(indexed <= 10_000, "tag index holds {indexed} keys");
    assert_eq!(indexed as u64, entries, "one tag per entry");
    let evicted = cache.snapshot().evictions.size;
    assert!(evicted >= 990_000, "size evictions {evicted}");
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_runs_once_and_serves_the_old_value_meanwhile() {
    let config = CacheConfig {
        refresh_threshold: Some(0.5),
        ..config(10)
    };
    let cache: Cache<u32, String> = Cache::new("refresh", config).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    cache
        .get_or_load(1, &[], counted(&loads, "old"))
        .await
        .unwrap();

    tokio::time::advance(Duration::from_secs(6)).await;
    for _ in 0..100 {
        let loads = Arc::clone(&loads);
        let release = Arc::clone(&release);
        let value = cache
            .get_or_load(1, &[], move || async move {
                loads.fetch_add(1, SeqCst);
                release.notified().await;
                Ok::<_, Boom>("new".to_string())
            })
            .await
            .unwrap();
        assert_eq!(value, "old");
    }
    settle(|| loads.load(SeqCst) == 2).await;
    assert_eq!(cache.snapshot().refreshes, 1);
    assert_eq!(cache.snapshot().hits, 100);

    release.notify_one();
    settle(|| cache.snapshot().in_flight == 0).await;
    assert_eq!(cache.get(&1).await.as_deref(), Some("new"));
    assert_eq!(loads.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_within_the_window_and_fails_after() {
    let config = CacheConfig {
        stale_if_error: Some(Duration::from_secs(30)),
        ..config(10)
    };
    let cache: Cache<u32, String> = Cache::new("stale", config).unwrap();
    let failing = || || async { Err::<String, _>(Boom) };
    cache
        .get_or_load(1, &[], || async { Ok::<_, Boom>("last good".to_string()) })
        .await
        .unwrap();

    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(cache.get(&1).await, None, "expired values are not fresh");
    assert_eq!(
        cache.get_or_load(1, &[], failing()).await.unwrap(),
        "last good"
    );
    assert_eq!(cache.snapshot().stale, 1);

    tokio::time::advance(Duration::from_secs(25)).await; // 40 s: past ttl + window
    let error = cache.get_or_load(1, &[], failing()).await.unwrap_err();
    assert!(error.find::<Boom>().is_some(), "{error}");
    assert_eq!(cache.snapshot().loads_failure, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_reaches_every_waiter_and_is_not_cached() {
    let cache: Cache<u32, String> = Cache::new("fail", config(60)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            let release = Arc::clone(&release);
            tokio::spawn(async move {
                cache
                    .get_or_load(1, &[], move || async move {
                        loads.fetch_add(1, SeqCst);
                        release.notified().await;
                        Err::<String, _>(Boom)
                    })
                    .await
            })
        })
        .collect();
    settle(|| loads.load(SeqCst) == 1).await;
    release.notify_one();
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "cache 'fail' load failed: backend down");
    }
    assert_eq!(loads.load(SeqCst), 1);
    assert_eq!(cache.get(&1).await, None);
    assert_eq!(
        cache
            .get_or_load(1, &[], counted(&loads, "ok"))
            .await
            .unwrap(),
        "ok"
    );
    assert_eq!(loads.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_fails_its_waiters_and_frees_the_key() {
    let cache: Cache<u32, String> = Cache::new("panic", config(60)).unwrap();
    let error = cache
        .get_or_load(1, &["t"], || async {
            if true {
                panic!("loader bug");
            }
            Ok::<String, Boom>("never".to_string())
        })
        .await
        .unwrap_err();
    assert!(error.is_panic());
    assert_eq!(cache.snapshot().in_flight, 0);
    let loads = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        cache
            .get_or_load(1, &["t"], counted(&loads, "ok"))
            .await
            .unwrap(),
        "ok"
    );
}

#[tokio::test(start_paused = true)]
async fn invalidate_all_and_key_invalidation_drop_racing_loads() {
    let cache: Cache<u32, String> = Cache::new("all", config(60)).unwrap();
    cache.insert(1, "one".into(), &["t"]).await;
    for invalidate_all in [false, true] {
        let (release, parked) = oneshot::channel::<()>();
        let caller = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .refresh(2, &[], move || async move {
                        parked.await.unwrap();
                        Ok::<_, Boom>("raced".to_string())
                    })
                    .await
            }
        });
        settle(|| cache.snapshot().in_flight == 1).await;
        if invalidate_all {
            cache.invalidate_all().await;
        } else {
            cache.invalidate(&2).await;
        }
        release.send(()).unwrap();
        assert_eq!(caller.await.unwrap().unwrap(), "raced");
        assert_eq!(cache.get(&2).await, None);
    }
    assert_eq!(cache.get(&1).await, None, "invalidate_all removed the rest");
    cache.run_pending_tasks().await;
    assert_eq!(cache.tag_index_len(), 0);
}

#[tokio::test(start_paused = true)]
async fn warm_up_loads_run_on_demand_and_report_failures() {
    let cache: Cache<u32, String> = Cache::new("warm", config(60)).unwrap();
    cache.add_warmup("popular", |cache: Cache<u32, String>| async move {
        cache
            .refresh(1, &["home"], || async {
                Ok::<_, Boom>("home page".to_string())
            })
            .await
            .map(drop)
    });
    cache.add_warmup("broken", |_cache| async { Err::<(), _>(Boom) });

    let report = cache.handle().warm().await;
    assert_eq!(report.len(), 2);
    assert_eq!(report[0].name, "popular");
    assert_eq!(report[0].error, None);
    assert_eq!(report[1].error.as_deref(), Some("backend down"));
    assert_eq!(cache.get(&1).await.as_deref(), Some("home page"));

    let handle = cache.handle();
    assert_eq!(handle.name(), "warm");
    assert_eq!(handle.invalidate_tag("home").await, 1);
    let json = serde_json::to_value(handle.snapshot()).unwrap();
    assert_eq!(json["name"], "warm");
    assert!(json["hitRate"].is_number());
    assert_eq!(json["evictions"]["explicit"], 1, "{json}");
}

#[tokio::test(start_paused = true)]
async fn per_load_options_shorten_the_ttl_and_set_refresh_ahead() {
    use resilience::cache::LoadOptions;

    let cache: Cache<u32, String> = Cache::new("options", config(60)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let short = LoadOptions {
        tags: &["t"],
        ttl: Some(Duration::from_secs(5)),
        refresh_threshold: None,
    };
    let long = LoadOptions {
        ttl: Some(Duration::from_secs(600)),
        refresh_threshold: Some(0.5),
        ..LoadOptions::default()
    };
    cache
        .get_or_load_with(1, short, counted(&loads, "a"))
        .await
        .unwrap();
    cache
        .get_or_load_with(2, long, counted(&loads, "a"))
        .await
        .unwrap();

    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(cache.get(&1).await, None, "5 s ttl");
    assert_eq!(cache.get(&2).await.as_deref(), Some("a"));

    // 30 s is half of the (capped) 60 s ttl: the next hit refreshes.
    tokio::time::advance(Duration::from_secs(25)).await;
    let value = cache
        .get_or_load_with(2, long, counted(&loads, "b"))
        .await
        .unwrap();
    assert_eq!(value, "a");
    settle(|| cache.snapshot().in_flight == 0).await;
    assert_eq!(cache.snapshot().refreshes, 1);
    assert_eq!(cache.get(&2).await.as_deref(), Some("b"));

    // The refreshed value lives at most the config's 60 s.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(cache.get(&2).await, None, "ttl capped at the config's");
    assert_eq!(loads.load(SeqCst), 3);
}

/// Races commits against invalidations on two threads. Whatever the
/// interleaving, a load that started before `invalidate_tag` was called must
/// not be found in the cache once both are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_invalidation_slips_between_indexing_and_insert() {
    let cache: Cache<u32, u32> = Cache::new("slip", config(3_600)).unwrap();
    for round in 0..2_000u32 {
        let (release, parked) = oneshot::channel::<()>();
        let started = Arc::new(Notify::new());
        let load = tokio::spawn({
            let cache = cache.clone();
            let started = Arc::clone(&started);
            async move {
                cache
                    .get_or_load(round, &["hot"], move || async move {
                        started.notify_one();
                        parked.await.unwrap();
                        Ok::<_, Boom>(round)
                    })
                    .await
            }
        });
        started.notified().await;
        let invalidate = tokio::spawn({
            let cache = cache.clone();
            async move { cache.invalidate_tag("hot").await }
        });
        release.send(()).unwrap();
        assert_eq!(load.await.unwrap().unwrap(), round);
        invalidate.await.unwrap();
        assert_eq!(cache.get(&round).await, None, "round {round}");
    }
}

/// Readers on other threads hammer one hot key (served from the front table)
/// while a writer replaces, key-invalidates and tag-invalidates it. Once a
/// write has returned, no read may see what it replaced or removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_key_reads_never_see_a_value_older_than_the_last_write() {
    use futures_util::FutureExt;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    let cache: Cache<u32, u64> = Cache::new("hot", config(3_600)).unwrap();
    // The newest value written, and the newest one removed again.
    let written = Arc::new(AtomicU64::new(0));
    let removed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, written, removed, done) = (
                cache.clone(),
                Arc::clone(&written),
                Arc::clone(&removed),
                Arc::clone(&done),
            );
            std::thread::spawn(move || {
                let mut served = 0u64;
                while !done.load(SeqCst) {
                    let at_least = written.load(SeqCst);
                    let gone = removed.load(SeqCst);
                    let read = cache.get(&7).now_or_never().expect("get never waits");
                    if let Some(value) = read {
                        assert!(
                            value >= at_least,
                            "read {value} after {at_least} was written"
                        );
                        assert!(value > gone, "read {value} after {gone} was removed");
                        served += 1;
                    }
                }
                served
            })
        })
        .collect();
    for n in 1..=10_000u64 {
        cache.insert(7, n, &["t"]).await;
        written.store(n, SeqCst);
        for _ in 0..50 {
            assert!(cache.get(&7).await.is_some_and(|value| value >= n));
        }
        match n % 3 {
            0 => {
                cache.invalidate(&7).await;
                removed.store(n, SeqCst);
            }
            1 => {
                assert_eq!(cache.invalidate_tag("t").await, 1);
                removed.store(n, SeqCst);
            }
            _ => {}
        }
    }
    done.store(true, SeqCst);
    let served: u64 = readers
        .into_iter()
        .map(|reader| reader.join().unwrap())
        .sum();
    assert!(served > 0, "the readers saw the key at least once");
    let snapshot = cache.snapshot();
    assert!(snapshot.hits >= 10_000 * 50, "{snapshot:?}");
}

#[tokio::test(start_paused = true)]
async fn counters_reach_prometheus_under_the_contract_names() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let cache: Cache<u32, String> =
        metrics::with_local_recorder(&recorder, || Cache::new("prom", config(60)).unwrap());
    let loads = Arc::new(AtomicUsize::new(0));
    cache
        .get_or_load(1, &["t"], counted(&loads, "a"))
        .await
        .unwrap();
    cache
        .get_or_load(1, &["t"], counted(&loads, "a"))
        .await
        .unwrap();
    cache.invalidate_tag("t").await;

    let text = handle.render();
    for line in [
        r#"resilience_cache_requests_total{name="prom",result="hit"} 1"#,
        r#"resilience_cache_requests_total{name="prom",result="miss"} 1"#,
        r#"resilience_cache_loads_total{name="prom",outcome="success"} 1"#,
        r#"resilience_cache_evictions_total{name="prom",cause="explicit"} 1"#,
        r#"resilience_cache_refreshes_total{name="prom"} 0"#,
        r#"resilience_cache_entries{name="prom"} 0"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
}
