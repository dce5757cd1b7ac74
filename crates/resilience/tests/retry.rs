//! Behaviour of the retry layer on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    convert::Infallible,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::FutureExt;
use parking_lot::Mutex;
use resilience::{
    BoxError,
    classify::{HttpStatus, Outcome},
    concurrency::{ConcurrencyConfig, ConcurrencyLimitLayer, QueueFull},
    retry::{Backoff, IdempotentHttp, RetryAfterHint, RetryBudgetConfig, RetryConfig, RetryLayer},
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

fn config(attempts: u32, backoff: Backoff) -> RetryConfig {
    RetryConfig {
        attempts,
        backoff,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        jitter: false,
        budget: RetryBudgetConfig {
            ratio: 1.0,
            min_per_second: 100,
            window: Duration::from_secs(10),
        },
    }
}

/// A service that fails every call and records when each try arrived.
#[derive(Clone, Default)]
struct Failing {
    tries: Arc<Mutex<Vec<Instant>>>,
}

impl Failing {
    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + use<> {
        let tries = self.tries.clone();
        service_fn(move |_: u32| {
            tries.lock().push(Instant::now());
            async { Err::<u32, BoxError>("unavailable".into()) }
        })
    }

    fn count(&self) -> usize {
        self.tries.lock().len()
    }

    /// Time between consecutive tries.
    fn gaps(&self) -> Vec<Duration> {
        let tries = self.tries.lock();
        tries.windows(2).map(|pair| pair[1] - pair[0]).collect()
    }
}

fn millis(gaps: &[Duration]) -> Vec<u128> {
    gaps.iter().map(Duration::as_millis).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_up_to_attempts_then_returns_the_last_error() {
    let layer = RetryLayer::new("test", config(3, Backoff::Constant)).unwrap();
    let stats = layer.handle();
    let (mut service, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    assert!(service.poll_ready().is_ready());
    let call = tokio::spawn(service.call(7));
    for error in ["first", "second", "third"] {
        let (request, reply) = handle.next_request().await.unwrap();
        assert_eq!(request, 7);
        reply.send_error(error);
    }
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "third");
    assert!(handle.poll_request().is_pending(), "a fourth try was sent");
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.budget_window_calls, 1);
    assert_eq!(snapshot.retries, 2);
    assert_eq!(snapshot.exhausted_attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_is_returned() {
    let layer = RetryLayer::new("test", config(3, Backoff::Constant)).unwrap();
    let (mut service, mut handle) = mock::spawn_layer::<u32, u32, _>(layer);
    assert!(service.poll_ready().is_ready());
    let call = tokio::spawn(service.call(1));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error("flaky");
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(42);
    assert_eq!(call.await.unwrap().unwrap(), 42);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failures_are_not_retried() {
    let failing = Failing::default();
    let permanent = |result: Result<&u32, &BoxError>| match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::PERMANENT,
    };
    let layer = RetryLayer::new("test", config(5, Backoff::Constant))
        .unwrap()
        .with_classifier(permanent);
    let stats = layer.handle();
    let error = layer.layer(failing.service()).oneshot(1).await.unwrap_err();
    assert_eq!(error.to_string(), "unavailable");
    assert_eq!(failing.count(), 1);
    assert_eq!(stats.snapshot().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_follow_the_configured_shape() {
    for (backoff, expected) in [
        (Backoff::Exponential, vec![100, 200, 400, 800, 1000]),
        (Backoff::Linear, vec![100, 200, 300, 400, 500]),
        (Backoff::Constant, vec![100; 5]),
    ] {
        let failing = Failing::default();
        let layer = RetryLayer::new("test", config(6, backoff)).unwrap();
        let started = Instant::now();
        let _ = layer.layer(failing.service()).oneshot(1).await;
        assert_eq!(millis(&failing.gaps()), expected, "{backoff:?}");
        let total: u128 = expected.iter().sum();
        assert_eq!(started.elapsed().as_millis(), total);
    }
}

#[tokio::test(start_paused = true)]
async fn full_jitter_stays_within_zero_and_the_delay() {
    let mut config = config(4, Backoff::Exponential);
    config.jitter = true;
    config.max_delay = Duration::from_millis(300);
    let layer = RetryLayer::new("test", config).unwrap();
    let mut by_retry: [Vec<Duration>; 3] = Default::default();
    for _ in 0..200 {
        let failing = Failing::default();
        let _ = layer.layer(failing.service()).oneshot(1).await;
        let gaps = failing.gaps();
        assert_eq!(gaps.len(), 3);
        for (retry, gap) in gaps.into_iter().enumerate() {
            by_retry[retry].push(gap);
        }
    }
    for (retry, cap) in [(0, 100), (1, 200), (2, 300)] {
        let gaps = &by_retry[retry];
        let cap = Duration::from_millis(cap);
        assert!(
            gaps.iter().all(|gap| *gap <= cap),
            "retry {retry} over {cap:?}"
        );
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        // Uniform on [0, cap]: the mean of 200 draws is near cap / 2.
        assert!(
            mean > cap * 3 / 10 && mean < cap * 7 / 10,
            "retry {retry}: mean {mean:?}"
        );
        assert!(gaps.iter().any(|gap| *gap < cap / 4));
        assert!(gaps.iter().any(|gap| *gap > cap * 3 / 4));
    }
}

#[tokio::test(start_paused = true)]
async fn budget_caps_retries_at_the_ratio_across_copies() {
    let failing = Failing::default();
    let config = RetryConfig {
        attempts: 3,
        backoff: Backoff::Exponential,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(10),
        jitter: false,
        budget: RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 1,
            window: Duration::from_secs(10),
        },
    };
    let layer = RetryLayer::new("budgeted", config).unwrap();
    let stats = layer.handle();
    // Two layered copies (axum calls `layer` per route) and clones of each.
    let services = [
        layer.layer(failing.service()),
        layer.layer(failing.service()),
    ];
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let service = services[task % 2].clone();
            tokio::spawn(async move {
                for _ in 0..250 {
                    let _ = service.clone().oneshot(1).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.budget_window_calls, 1_000);
    // 10% of 1000 calls, plus 1 per second over the 10 s window.
    assert_eq!(snapshot.retries, 110);
    assert_eq!(failing.count(), 1_110);
    assert!(snapshot.exhausted_budget > 0);
    assert_eq!(snapshot.budget_available, 0);
}

#[tokio::test(start_paused = true)]
async fn budget_refills_as_the_window_slides() {
    let failing = Failing::default();
    let mut config = config(2, Backoff::Constant);
    config.base_delay = Duration::ZERO;
    config.budget = RetryBudgetConfig {
        ratio: 0.0,
        min_per_second: 1,
        window: Duration::from_secs(2),
    };
    let layer = RetryLayer::new("refill", config).unwrap();
    let service = layer.layer(failing.service());
    for _ in 0..5 {
        let _ = service.clone().oneshot(1).await;
    }
    assert_eq!(
        failing.count(),
        5 + 2,
        "the reserve is 2 retries per window"
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    for _ in 0..5 {
        let _ = service.clone().oneshot(1).await;
    }
    assert_eq!(failing.count(), 10 + 4);
}

fn http_response(status: u16, retry_after: Option<&str>) -> http::Response<()> {
    let mut builder = http::Response::builder().status(status);
    if let Some(value) = retry_after {
        builder = builder.header(http::header::RETRY_AFTER, value);
    }
    builder.body(()).unwrap()
}

/// An HTTP callee that answers 503 (with `retry_after`) once, then 200.
fn unavailable_once(
    retry_after: Option<&'static str>,
    tries: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<http::Request<()>, Response = http::Response<()>, Error = Infallible, Future: Send>
+ Clone {
    service_fn(move |_: http::Request<()>| {
        let mut tries = tries.lock();
        tries.push(Instant::now());
        let status = if tries.len() == 1 { 503 } else { 200 };
        std::future::ready(Ok(http_response(status, retry_after)))
    })
}

fn http_layer(max_delay: Duration) -> RetryLayer<HttpStatus, IdempotentHttp> {
    let mut config = config(3, Backoff::Constant);
    config.max_delay = max_delay;
    RetryLayer::new("http", config)
        .unwrap()
        .with_classifier(HttpStatus)
        .with_replay(IdempotentHttp)
}

fn get() -> http::Request<()> {
    http::Request::get("/v1/users").body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_when_it_fits_under_max_delay() {
    let tries = Arc::new(Mutex::new(Vec::new()));
    let layer = http_layer(Duration::from_secs(5));
    let response = layer
        .layer(unavailable_once(Some("2"), tries.clone()))
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tries = tries.lock();
    assert_eq!(tries.len(), 2);
    assert_eq!(
        tries[1] - tries[0],
        Duration::from_secs(2),
        "not the 100 ms backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_max_delay_gives_up_at_once() {
    let tries = Arc::new(Mutex::new(Vec::new()));
    let layer = http_layer(Duration::from_secs(5));
    let stats = layer.handle();
    let started = Instant::now();
    let response = layer
        .layer(unavailable_once(Some("30"), tries.clone()))
        .oneshot(get())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        503,
        "the callee's answer is returned as is"
    );
    assert_eq!(tries.lock().len(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(stats.snapshot().exhausted_retry_after, 1);
}

#[tokio::test(start_paused = true)]
async fn post_is_retried_only_with_an_idempotency_key() {
    let layer = http_layer(Duration::from_secs(5));
    let post = |key: Option<&str>| {
        let mut builder = http::Request::post("/v1/notifications");
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        builder.body(()).unwrap()
    };

    let tries = Arc::new(Mutex::new(Vec::new()));
    let response = layer
        .layer(unavailable_once(None, tries.clone()))
        .oneshot(post(None))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        tries.lock().len(),
        1,
        "a POST without a key must not be resent"
    );

    let tries = Arc::new(Mutex::new(Vec::new()));
    let response = layer
        .layer(unavailable_once(None, tries.clone()))
        .oneshot(post(Some("0c6f2a")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(tries.lock().len(), 2);

    let tries = Arc::new(Mutex::new(Vec::new()));
    let patch = http::Request::patch("/v1/users/1").body(()).unwrap();
    let response = layer
        .layer(unavailable_once(None, tries.clone()))
        .oneshot(patch)
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(tries.lock().len(), 1);
}

/// Stands for the breaker's `BreakerOpen`: an error with a wait hint.
#[derive(Debug)]
struct Open(Duration);

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "open for {:?}", self.0)
    }
}

impl std::error::Error for Open {}

impl RetryAfterHint for Open {
    fn retry_after(&self) -> Duration {
        self.0
    }
}

/// Fails once with `Open(wait)`, then succeeds.
fn open_once(
    wait: Duration,
    tries: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |n: u32| {
        let mut tries = tries.lock();
        tries.push(Instant::now());
        let result: Result<u32, BoxError> = if tries.len() == 1 {
            Err(Box::new(Open(wait)))
        } else {
            Ok(n)
        };
        std::future::ready(result)
    })
}

#[tokio::test(start_paused = true)]
async fn error_wait_hints_are_honoured_or_give_up() {
    let layer = RetryLayer::new("deps", config(3, Backoff::Constant))
        .unwrap()
        .honour::<Open>();
    let stats = layer.handle();

    let tries = Arc::new(Mutex::new(Vec::new()));
    let service = layer.layer(open_once(Duration::from_millis(700), tries.clone()));
    assert_eq!(service.oneshot(5).await.unwrap(), 5);
    let gap = {
        let tries = tries.lock();
        tries[1] - tries[0]
    };
    assert_eq!(gap, Duration::from_millis(700));

    let tries = Arc::new(Mutex::new(Vec::new()));
    let service = layer.layer(open_once(Duration::from_secs(3), tries.clone()));
    let error = service.oneshot(5).await.unwrap_err();
    assert!(error.is::<Open>());
    assert_eq!(tries.lock().len(), 1);
    assert_eq!(stats.snapshot().exhausted_retry_after, 1);

    // A layer not told about `Open` treats it as a plain failure: backoff.
    let plain = RetryLayer::new("plain", config(3, Backoff::Constant)).unwrap();
    let tries = Arc::new(Mutex::new(Vec::new()));
    let service = plain.layer(open_once(Duration::from_secs(3), tries.clone()));
    assert_eq!(service.oneshot(5).await.unwrap(), 5);
    let gap = {
        let tries = tries.lock();
        tries[1] - tries[0]
    };
    assert_eq!(gap, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_below_is_retried_after_its_hint() {
    let limit = ConcurrencyLimitLayer::new(
        "db",
        ConcurrencyConfig {
            max_concurrent: 1,
            max_queue: 0,
            queue_timeout: Duration::from_secs(1),
            adaptive: None,
        },
    )
    .unwrap();
    let limited = limit.layer(service_fn(|latency: Duration| async move {
        tokio::time::sleep(latency).await;
        Ok::<_, Infallible>(latency)
    }));
    let mut config = config(2, Backoff::Constant);
    config.max_delay = Duration::from_secs(2);
    let retried = RetryLayer::new("db", config)
        .unwrap()
        .layer(limited.clone());

    let busy = tokio::spawn(limited.clone().oneshot(Duration::from_millis(500)));
    tokio::task::yield_now().await;
    let started = Instant::now();
    let answer = retried.oneshot(Duration::from_millis(10)).await.unwrap();
    assert_eq!(answer, Duration::from_millis(10));
    // QueueFull said "retry after 1 s": one wait of 1 s, then 10 ms of work.
    assert_eq!(started.elapsed(), Duration::from_millis(1_010));
    busy.await.unwrap().unwrap();

    // Told to wait longer than max_delay: the QueueFull comes back at once.
    let config = RetryConfig {
        max_delay: Duration::from_millis(500),
        base_delay: Duration::from_millis(100),
        ..RetryConfig::default()
    };
    let impatient = RetryLayer::new("db2", config)
        .unwrap()
        .layer(limited.clone());
    let busy = tokio::spawn(limited.clone().oneshot(Duration::from_millis(500)));
    tokio::task::yield_now().await;
    let error = impatient
        .oneshot(Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(error.is::<QueueFull>());
    busy.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn metrics_count_retries_and_give_ups_by_reason() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || {
        RetryLayer::new("payments", config(3, Backoff::Constant)).unwrap()
    });
    let failing = Failing::default();
    let _ = layer.layer(failing.service()).oneshot(1).await;
    let text = prometheus.render();
    for line in [
        r#"resilience_retry_attempts_total{name="payments"} 2"#,
        r#"resilience_retry_exhausted_total{name="payments",reason="attempts"} 1"#,
        r#"resilience_retry_exhausted_total{name="payments",reason="budget"} 0"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[test]
fn the_success_path_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let layer = RetryLayer::new("alloc", RetryConfig::default()).unwrap();
    let mut service = layer.layer(service_fn(move |n: u64| {
        counter.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    let mut call = |n| {
        let ready = service.ready().now_or_never().unwrap().unwrap();
        ready.call(n).now_or_never().unwrap().unwrap()
    };
    call(0);
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(boxed.count_total, 1, "the counting allocator is installed");
    let info = allocation_counter::measure(|| {
        for n in 0..1_000 {
            assert_eq!(call(n), n);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(calls.load(Ordering::Relaxed), 1_001);
}

#[test]
fn service_and_future_fit_under_axum() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send + 'static>(_: &T) {}
    let layer = RetryLayer::new("axum", RetryConfig::default())
        .unwrap()
        .with_classifier(HttpStatus)
        .with_replay(IdempotentHttp);
    let mut service = layer.layer(service_fn(|_: http::Request<String>| {
        std::future::ready(Ok::<_, Infallible>(http_response(200, None)))
    }));
    send_sync_clone(&service);
    send(&service.call(get().map(|()| String::new())));
}
