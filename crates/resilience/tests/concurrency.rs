//! Behaviour of the concurrency limit, driven through `tower_test::mock` on
//! tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{convert::Infallible, future::Future, time::Duration};

use futures_util::FutureExt;
use resilience::{
    BoxError,
    concurrency::{
        AdaptiveConfig, ConcurrencyConfig, ConcurrencyHandle, ConcurrencyLimitLayer, QueueFull,
        QueueTimeout,
    },
};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

type Mock = mock::Mock<&'static str, &'static str>;
type Handle = mock::Handle<&'static str, &'static str>;

fn config(max_concurrent: usize, max_queue: usize) -> ConcurrencyConfig {
    ConcurrencyConfig {
        max_concurrent,
        max_queue,
        queue_timeout: Duration::from_secs(1),
        adaptive: None,
    }
}

fn limited(
    config: ConcurrencyConfig,
) -> (
    mock::Spawn<resilience::concurrency::ConcurrencyLimit<Mock>>,
    Handle,
    ConcurrencyHandle,
) {
    let layer = ConcurrencyLimitLayer::new("test", config).unwrap();
    let stats = layer.handle();
    let (service, handle) = mock::spawn_layer(layer);
    (service, handle, stats)
}

/// Lets spawned tasks run until they block.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

type Call = tokio::task::JoinHandle<Result<&'static str, BoxError>>;

fn spawn_call(
    service: &mut mock::Spawn<resilience::concurrency::ConcurrencyLimit<Mock>>,
    request: &'static str,
) -> Call {
    assert!(service.poll_ready().is_ready());
    tokio::spawn(service.call(request))
}

/// Polls a future once; `None` while it is pending.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    future.now_or_never()
}

#[tokio::test(start_paused = true)]
async fn runs_at_most_max_concurrent() {
    let (mut service, mut handle, stats) = limited(config(2, 10));
    let a = spawn_call(&mut service, "a");
    let b = spawn_call(&mut service, "b");
    let c = spawn_call(&mut service, "c");
    settle().await;

    let (first, reply_a) = handle.next_request().await.unwrap();
    let (second, reply_b) = handle.next_request().await.unwrap();
    assert_eq!((first, second), ("a", "b"));
    assert!(
        handle.poll_request().is_pending(),
        "a third call got through"
    );
    assert_eq!((stats.in_flight(), stats.queued()), (2, 1));

    reply_a.send_response("A");
    assert_eq!(a.await.unwrap().unwrap(), "A");
    let (third, reply_c) = handle.next_request().await.unwrap();
    assert_eq!(third, "c");
    assert_eq!((stats.in_flight(), stats.queued()), (2, 0));

    reply_b.send_response("B");
    reply_c.send_response("C");
    assert_eq!(b.await.unwrap().unwrap(), "B");
    assert_eq!(c.await.unwrap().unwrap(), "C");
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.admitted), (0, 3));
    assert_eq!(snapshot.wait.count, 1, "only c waited");
}

#[tokio::test(start_paused = true)]
async fn full_queue_rejects_at_once() {
    let (mut service, mut handle, stats) = limited(config(1, 1));
    let _running = spawn_call(&mut service, "a");
    let _queued = spawn_call(&mut service, "b");
    settle().await;
    let _request = handle.next_request().await.unwrap();

    assert!(service.poll_ready().is_ready());
    let mut rejected = service.call("c");
    let error = poll_once(&mut rejected)
        .expect("a full queue answers without waiting")
        .unwrap_err();
    let full = error.downcast_ref::<QueueFull>().expect("QueueFull");
    assert_eq!(full.retry_after(), Duration::from_secs(1));
    assert_eq!(full.name(), "test");
    assert!(error.to_string().contains("queue is full"));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.rejected_queue_full, 1);
    assert_eq!(snapshot.rejected_queue_timeout, 0);
    assert_eq!(snapshot.queued, 1);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_rejects_after_exactly_queue_timeout() {
    let mut config = config(1, 4);
    config.queue_timeout = Duration::from_millis(250);
    let (mut service, mut handle, stats) = limited(config);
    let _running = spawn_call(&mut service, "a");
    let _request = handle.next_request().await.unwrap();

    assert!(service.poll_ready().is_ready());
    let mut waiting = service.call("b");
    let started = Instant::now();
    assert!(poll_once(&mut waiting).is_none());
    tokio::time::advance(Duration::from_millis(249)).await;
    assert!(poll_once(&mut waiting).is_none(), "gave up early");
    tokio::time::advance(Duration::from_millis(1)).await;
    let error = poll_once(&mut waiting)
        .expect("rejected at the timeout")
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    let timeout = error.downcast_ref::<QueueTimeout>().expect("QueueTimeout");
    assert_eq!(timeout.waited(), Duration::from_millis(250));
    assert!(error.downcast_ref::<QueueFull>().is_none());
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.rejected_queue_timeout, 1);
    assert_eq!(snapshot.queued, 0, "the timed-out call left the queue");
    assert!(
        handle.poll_request().is_pending(),
        "b never reached the service"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_queued_call_frees_its_place() {
    let (mut service, mut handle, stats) = limited(config(1, 1));
    let a = spawn_call(&mut service, "a");
    let (_, reply_a) = handle.next_request().await.unwrap();

    assert!(service.poll_ready().is_ready());
    let mut b = service.call("b");
    assert!(poll_once(&mut b).is_none());
    assert_eq!(stats.queued(), 1);
    drop(b);
    assert_eq!(stats.queued(), 0);

    // The place b held is free again: c waits instead of being rejected.
    let c = spawn_call(&mut service, "c");
    settle().await;
    assert_eq!(stats.queued(), 1);
    assert_eq!(stats.snapshot().rejected_queue_full, 0);

    reply_a.send_response("A");
    a.await.unwrap().unwrap();
    let (next, reply_c) = handle.next_request().await.unwrap();
    assert_eq!(next, "c", "the cancelled b must not be sent");
    reply_c.send_response("C");
    assert_eq!(c.await.unwrap().unwrap(), "C");
}

#[tokio::test(start_paused = true)]
async fn inner_error_frees_the_permit() {
    let (mut service, mut handle, stats) = limited(config(1, 0));
    let a = spawn_call(&mut service, "a");
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error("database down");
    let error = a.await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "database down");
    assert_eq!(stats.in_flight(), 0);

    // No queue: this call would be rejected if the permit had leaked.
    let b = spawn_call(&mut service, "b");
    let (request, reply) = handle.next_request().await.unwrap();
    assert_eq!(request, "b");
    reply.send_response("B");
    assert_eq!(b.await.unwrap().unwrap(), "B");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_call_frees_the_permit() {
    let (mut service, mut handle, stats) = limited(config(1, 0));
    assert!(service.poll_ready().is_ready());
    let mut a = service.call("a");
    assert!(poll_once(&mut a).is_none());
    let _request = handle.next_request().await.unwrap();
    assert_eq!(stats.in_flight(), 1);
    drop(a);
    assert_eq!(stats.in_flight(), 0);

    let b = spawn_call(&mut service, "b");
    let (request, reply) = handle.next_request().await.unwrap();
    assert_eq!(request, "b");
    reply.send_response("B");
    assert_eq!(b.await.unwrap().unwrap(), "B");
}

#[tokio::test(start_paused = true)]
async fn high_water_marks_remember_the_peak() {
    let (mut service, mut handle, stats) = limited(config(2, 10));
    let calls: Vec<Call> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|request| spawn_call(&mut service, request))
        .collect();
    settle().await;
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued), (2, 3));
    for _ in 0..5 {
        let (request, reply) = handle.next_request().await.unwrap();
        reply.send_response(request);
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.in_flight, snapshot.queued), (0, 0));
    assert_eq!(snapshot.in_flight_high_water, 2);
    assert_eq!(snapshot.queued_high_water, 3);
    assert_eq!(snapshot.admitted, 5);
}

#[tokio::test(start_paused = true)]
async fn layering_many_times_shares_one_limit() {
    let layer = ConcurrencyLimitLayer::new("shared", config(1, 0)).unwrap();
    let (inner_a, mut handle_a) = mock::pair::<&'static str, &'static str>();
    let (inner_b, _handle_b) = mock::pair::<&'static str, &'static str>();
    let mut a = layer.layer(inner_a);
    let mut b = layer.layer(inner_b);

    let first = tokio::spawn(a.ready().await.unwrap().call("a"));
    let (_, reply) = handle_a.next_request().await.unwrap();
    let error = b.ready().await.unwrap().call("b").await.unwrap_err();
    assert!(
        error.is::<QueueFull>(),
        "the second copy had its own permits"
    );

    reply.send_response("A");
    first.await.unwrap().unwrap();
    let snapshot = layer.handle().snapshot();
    assert_eq!((snapshot.admitted, snapshot.rejected_queue_full), (1, 1));
}

/// A service that takes the given time, or fails when asked to.
fn timed_service()
-> impl Service<(Duration, bool), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|(latency, fail): (Duration, bool)| async move {
        tokio::time::sleep(latency).await;
        if fail {
            Err::<(), BoxError>("failed".into())
        } else {
            Ok(())
        }
    })
}

async fn run_batch<S>(service: &S, count: usize, latency: Duration, fail: bool)
where
    S: Service<(Duration, bool), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let calls: Vec<_> = (0..count)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { service.oneshot((latency, fail)).await })
        })
        .collect();
    for call in calls {
        let _ = call.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_limit_moves_between_bounds() {
    let config = ConcurrencyConfig {
        max_concurrent: 4,
        max_queue: 100,
        queue_timeout: Duration::from_secs(60),
        adaptive: Some(AdaptiveConfig {
            min_concurrent: 2,
            max_concurrent: 6,
            latency_target: Duration::from_millis(100),
            backoff_ratio: 0.5,
        }),
    };
    let layer = ConcurrencyLimitLayer::new("adaptive", config).unwrap();
    let stats = layer.handle();
    let service = layer.layer(timed_service());
    assert_eq!(stats.limit(), 4);

    // Fast successes of a well-used limit: grows by one each, up to the cap.
    for _ in 0..5 {
        run_batch(&service, 8, Duration::from_millis(10), false).await;
    }
    assert_eq!(stats.limit(), 6);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.in_flight_high_water, 6);

    // Slow calls: multiplied down, never below the floor.
    run_batch(&service, 12, Duration::from_millis(200), false).await;
    assert_eq!(stats.limit(), 2);

    // The semaphore follows: only two run at once now.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(service.oneshot((Duration::from_millis(50), false)))
        })
        .collect();
    settle().await;
    assert_eq!((stats.in_flight(), stats.queued()), (2, 3));
    for call in calls {
        call.await.unwrap().unwrap();
    }

    // Failures count as overload too; successes bring it back up.
    run_batch(&service, 4, Duration::from_millis(10), false).await;
    assert!(stats.limit() > 2);
    run_batch(&service, 6, Duration::from_millis(10), true).await;
    assert_eq!(stats.limit(), 2);
    assert_eq!(stats.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn shrinking_while_permits_are_held_takes_effect_as_they_return() {
    let config = ConcurrencyConfig {
        max_concurrent: 6,
        max_queue: 100,
        queue_timeout: Duration::from_secs(60),
        adaptive: Some(AdaptiveConfig {
            min_concurrent: 1,
            max_concurrent: 6,
            latency_target: Duration::from_millis(100),
            backoff_ratio: 0.5,
        }),
    };
    let layer = ConcurrencyLimitLayer::new("shrink", config).unwrap();
    let stats = layer.handle();
    let service = layer.layer(timed_service());
    // Six slow calls hold every permit; the first to finish halves the
    // limit although none of the others has returned its permit yet.
    let slow: Vec<_> = (0..6)
        .map(|i| {
            let service = service.clone();
            let latency = Duration::from_millis(200 + 10 * i);
            tokio::spawn(service.oneshot((latency, false)))
        })
        .collect();
    let more: Vec<_> = (0..6)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(service.oneshot((Duration::from_secs(5), false)))
        })
        .collect();
    settle().await;
    assert_eq!((stats.in_flight(), stats.queued()), (6, 6));
    for call in slow {
        call.await.unwrap().unwrap();
    }
    settle().await;
    let limit = stats.limit();
    assert_eq!(limit, 1);
    assert_eq!(
        stats.in_flight(),
        limit,
        "queued calls must respect the new limit"
    );
    for call in more {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_are_labelled_by_name_and_reason() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || {
        ConcurrencyLimitLayer::new("users", config(1, 0)).unwrap()
    });
    let mut service = layer.layer(service_fn(|()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, Infallible>(())
    }));
    let first = service.ready().await.unwrap().call(());
    let rejected = service.ready().await.unwrap().call(()).await;
    assert!(rejected.unwrap_err().is::<QueueFull>());
    first.await.unwrap();

    let text = prometheus.render();
    for line in [
        r#"resilience_concurrency_admitted_total{name="users"} 1"#,
        r#"resilience_concurrency_rejected_total{name="users",reason="queue_full"} 1"#,
        r#"resilience_concurrency_in_flight{name="users"} 0"#,
        r#"resilience_concurrency_limit{name="users"} 1"#,
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

#[test]
fn admitting_without_waiting_allocates_nothing() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let layer = ConcurrencyLimitLayer::new("alloc", config(4, 4)).unwrap();
    let mut service = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    let mut call = |n| {
        let ready = service.ready().now_or_never().unwrap().unwrap();
        ready.call(n).now_or_never().unwrap().unwrap()
    };
    call(0);
    // The counting allocator is installed: a box is seen.
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(boxed.count_total, 1);
    let info = allocation_counter::measure(|| {
        for n in 0..1_000 {
            assert_eq!(call(n), n);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn service_and_future_fit_under_axum() {
    fn send_sync_clone<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn send<T: Send + 'static>(_: &T) {}
    let layer = ConcurrencyLimitLayer::new("axum", config(1, 1)).unwrap();
    let mut service = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    send_sync_clone(&service);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    send(&service.call(1));
}
