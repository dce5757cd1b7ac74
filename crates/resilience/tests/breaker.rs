//! The circuit breaker's rules, driven through `tower_test::mock` on tokio's
//! paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use resilience::BoxError;
use resilience::breaker::{
    Breaker, BreakerConfig, BreakerHandle, BreakerLayer, BreakerOpen, BreakerState, ResponseFuture,
    Transition,
};
use tokio::time::{Instant, advance};
use tower::Layer;
use tower_test::mock::{self, Mock, SendResponse, Spawn};

type Response = &'static str;
type Future_ = ResponseFuture<mock::future::ResponseFuture<Response>>;

fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// A breaker around a mock service, with helpers to make calls finish now.
struct Harness {
    service: Spawn<Breaker<Mock<&'static str, Response>>>,
    mock: mock::Handle<&'static str, Response>,
    breaker: BreakerHandle,
}

/// A call the breaker admitted and the mock received, not answered yet.
struct InFlight {
    future: Pin<Box<Future_>>,
    respond: SendResponse<Response>,
}

impl InFlight {
    fn answer(mut self, ok: bool) -> Result<Response, BoxError> {
        if ok {
            self.respond.send_response("ok");
        } else {
            self.respond.send_error("boom");
        }
        match poll_once(self.future.as_mut()) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("answered call did not finish"),
        }
    }

    fn succeed(self) {
        assert_eq!(self.answer(true).unwrap(), "ok");
    }

    fn fail(self) {
        let error = self.answer(false).unwrap_err();
        assert!(!error.is::<BreakerOpen>());
    }
}

impl Harness {
    fn new(config: BreakerConfig) -> Self {
        let layer = BreakerLayer::new("payments", config).unwrap();
        let breaker = layer.handle();
        let (service, mock) = mock::spawn_layer(layer);
        Self {
            service,
            mock,
            breaker,
        }
    }

    /// Makes a call: the in-flight call if admitted, the rejection if refused
    /// at once (then the inner service was not called).
    fn start(&mut self) -> Result<InFlight, BreakerOpen> {
        assert!(self.service.poll_ready().is_ready());
        let mut future = Box::pin(self.service.call("request"));
        match poll_once(future.as_mut()) {
            Poll::Ready(Err(error)) => {
                assert!(
                    self.mock.poll_request().is_pending(),
                    "a refused call reached the inner service"
                );
                Err(*error.downcast::<BreakerOpen>().expect("a BreakerOpen"))
            }
            Poll::Ready(Ok(_)) => panic!("finished before the mock answered"),
            Poll::Pending => match self.mock.poll_request() {
                Poll::Ready(Some((_, respond))) => Ok(InFlight { future, respond }),
                _ => panic!("admitted call did not reach the inner service"),
            },
        }
    }

    fn succeed(&mut self) {
        self.start().expect("admitted").succeed();
    }

    fn fail(&mut self) {
        self.start().expect("admitted").fail();
    }

    fn rejected(&mut self) -> BreakerOpen {
        match self.start() {
            Ok(_) => panic!("admitted, expected a rejection"),
            Err(open) => open,
        }
    }

    fn state(&self) -> BreakerState {
        self.breaker.state()
    }
}

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        minimum_throughput: 3,
        monitoring_period: Duration::from_secs(10),
        reset_timeout: Duration::from_secs(5),
        ..BreakerConfig::default()
    }
}

/// Trips a breaker built from `config()`.
fn trip(h: &mut Harness) {
    for _ in 0..3 {
        h.fail();
    }
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_threshold() {
    let mut h = Harness::new(config());
    h.fail();
    h.fail();
    assert_eq!(h.state(), BreakerState::Closed);
    h.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    h.fail();
    assert_eq!(h.state(), BreakerState::Open);
    let open = h.rejected();
    assert_eq!(open.name(), "payments");
    assert_eq!(open.to_string(), "circuit breaker 'payments' is open");
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_do_not_count() {
    let mut h = Harness::new(config());
    h.fail();
    h.fail();
    // The window is 10 s: these two leave it.
    advance(Duration::from_secs(11)).await;
    h.fail();
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().failures, 1);
    // Failures inside the window still add up.
    advance(Duration::from_secs(5)).await;
    h.fail();
    assert_eq!(h.state(), BreakerState::Closed);
    h.fail();
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn below_minimum_throughput_it_never_opens() {
    let mut h = Harness::new(BreakerConfig {
        minimum_throughput: 10,
        ..config()
    });
    for _ in 0..9 {
        h.fail();
    }
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().failures, 9);
    h.fail();
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_completing_the_throughput_opens_it() {
    let mut h = Harness::new(BreakerConfig {
        minimum_throughput: 5,
        ..config()
    });
    for _ in 0..3 {
        h.fail();
    }
    h.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    h.succeed();
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_threshold_replaces_the_count() {
    let mut h = Harness::new(BreakerConfig {
        failure_rate_threshold: Some(0.5),
        minimum_throughput: 4,
        failure_threshold: 1,
        ..config()
    });
    for _ in 0..3 {
        h.succeed();
    }
    h.fail(); // 1 of 4
    h.fail(); // 2 of 5
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().failure_rate, 0.4);
    h.fail(); // 3 of 6
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it_when_the_slow_rate_is_set() {
    let slow = |h: &mut Harness| {
        let call = h.start().expect("admitted");
        (call, Duration::from_millis(1500))
    };
    let base = BreakerConfig {
        slow_call_duration: Some(Duration::from_secs(1)),
        minimum_throughput: 2,
        ..config()
    };

    // Without a slow-call rate, slow successes are only counted.
    let mut h = Harness::new(base.clone());
    h.succeed();
    let (call, took) = slow(&mut h);
    advance(took).await;
    call.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().slow_calls, 1);

    let mut h = Harness::new(BreakerConfig {
        slow_call_rate_threshold: Some(0.5),
        ..base
    });
    h.succeed();
    let (call, took) = slow(&mut h);
    advance(Duration::from_millis(900)).await;
    let fast = h.start().expect("admitted");
    advance(took - Duration::from_millis(900)).await;
    fast.succeed(); // 0.6 s: not slow
    assert_eq!(h.state(), BreakerState::Closed);
    call.succeed(); // 1.5 s: slow, 1 of 3
    assert_eq!(h.state(), BreakerState::Closed);
    let (call, took) = slow(&mut h);
    advance(took).await;
    call.succeed(); // 2 of 4
    assert_eq!(h.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_with_the_time_to_the_next_probe() {
    let mut h = Harness::new(config());
    trip(&mut h);
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(5));
    advance(Duration::from_millis(3200)).await;
    assert_eq!(h.rejected().retry_after(), Duration::from_millis(1800));
    let snapshot = h.breaker.snapshot();
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!(snapshot.next_probe_in_ms, Some(1800));
    // Rejections are not counted as calls.
    assert_eq!(snapshot.calls, 3);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_half_open_max_calls() {
    let mut h = Harness::new(BreakerConfig {
        half_open_max_calls: 2,
        ..config()
    });
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    let first = h.start().expect("first probe");
    assert_eq!(h.state(), BreakerState::HalfOpen);
    let second = h.start().expect("second probe");
    h.rejected();
    first.succeed();
    assert_eq!(h.state(), BreakerState::HalfOpen);
    // The first probe's slot is not given back: two per round.
    h.rejected();
    second.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().calls, 0, "closing starts a new window");
    h.fail();
    h.fail();
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_with_a_doubling_timeout_back_to_base_once_closed() {
    let mut h = Harness::new(BreakerConfig {
        reset_timeout: Duration::from_secs(1),
        reset_timeout_max: Some(Duration::from_secs(4)),
        ..config()
    });
    trip(&mut h);
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(1));
    for expected in [2, 4, 4] {
        advance(h.rejected().retry_after()).await;
        h.fail();
        assert_eq!(h.state(), BreakerState::Open);
        assert_eq!(h.rejected().retry_after(), Duration::from_secs(expected));
    }
    advance(Duration::from_secs(4)).await;
    h.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    trip(&mut h);
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn without_a_maximum_the_timeout_does_not_grow() {
    let mut h = Harness::new(config());
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    h.fail();
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_slot_back() {
    let mut h = Harness::new(config());
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    let probe = h.start().expect("probe");
    h.rejected();
    drop(probe);
    assert_eq!(h.state(), BreakerState::HalfOpen);
    h.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_never_answers_is_forgotten_after_reset_timeout() {
    let mut h = Harness::new(config());
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    let stuck = h.start().expect("probe");
    advance(Duration::from_secs(2)).await;
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(3));
    advance(Duration::from_secs(3)).await;
    let fresh = h
        .start()
        .expect("a new probe once the old one is forgotten");
    fresh.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    // The forgotten probe's late failure belongs to the past.
    stuck.fail();
    assert_eq!(h.state(), BreakerState::Closed);
    assert_eq!(h.breaker.snapshot().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn calls_admitted_before_a_trip_are_not_counted_after_it() {
    let mut h = Harness::new(config());
    let late = h.start().expect("admitted");
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    h.succeed();
    assert_eq!(h.state(), BreakerState::Closed);
    late.fail();
    assert_eq!(h.breaker.snapshot().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn every_layered_service_shares_one_breaker() {
    let layer = BreakerLayer::new("shared", config()).unwrap();
    let services: Vec<_> = (0..3)
        .map(|_| {
            let (mock, handle) = mock::pair::<&'static str, Response>();
            (Spawn::new(layer.layer(mock)), handle)
        })
        .collect();
    for (mut service, mut handle) in services {
        assert!(service.poll_ready().is_ready());
        let mut future = Box::pin(service.call("request"));
        assert!(poll_once(future.as_mut()).is_pending());
        let (_, respond) = match handle.poll_request() {
            Poll::Ready(Some(request)) => request,
            _ => panic!("no request"),
        };
        respond.send_error("boom");
        assert!(poll_once(future.as_mut()).is_ready());
    }
    assert_eq!(layer.handle().state(), BreakerState::Open);
    let (mock, _handle) = mock::pair::<&'static str, Response>();
    let mut fourth = Spawn::new(layer.layer(mock));
    assert!(fourth.poll_ready().is_ready());
    let error = fourth.call("request").await.unwrap_err();
    assert!(error.is::<BreakerOpen>());
}

#[tokio::test(start_paused = true)]
async fn operator_overrides() {
    let mut h = Harness::new(config());

    h.breaker.force_open();
    assert_eq!(h.state(), BreakerState::ForcedOpen);
    assert_eq!(h.rejected().retry_after(), Duration::from_secs(5));
    advance(Duration::from_secs(60)).await;
    h.rejected();
    assert_eq!(h.state(), BreakerState::ForcedOpen, "only reset leaves it");

    h.breaker.reset();
    assert_eq!(h.state(), BreakerState::Closed);
    h.succeed();

    h.breaker.disable();
    for _ in 0..5 {
        h.fail();
    }
    assert_eq!(h.state(), BreakerState::Disabled);
    assert_eq!(h.breaker.snapshot().failures, 0, "disabled counts nothing");

    h.breaker.reset();
    trip(&mut h);
    h.breaker.reset();
    assert_eq!(h.state(), BreakerState::Closed);
    h.succeed();
    assert_eq!(h.breaker.snapshot().calls, 1, "reset forgets the window");
}

#[tokio::test(start_paused = true)]
async fn disabled_by_config() {
    let mut h = Harness::new(BreakerConfig {
        enabled: false,
        ..config()
    });
    assert_eq!(h.state(), BreakerState::Disabled);
    for _ in 0..5 {
        h.fail();
    }
    h.succeed();
}

#[tokio::test(start_paused = true)]
async fn subscribers_see_every_transition() {
    let mut h = Harness::new(config());
    let mut events = h.breaker.subscribe();
    let start = Instant::now();
    trip(&mut h);
    advance(Duration::from_secs(5)).await;
    h.succeed();
    h.breaker.force_open();
    let seen: Vec<Transition> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    use BreakerState::*;
    assert_eq!(
        seen.iter().map(|t| (t.from, t.to)).collect::<Vec<_>>(),
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, ForcedOpen)
        ]
    );
    assert_eq!(seen[0].at, start);
    assert_eq!(seen[1].at, start + Duration::from_secs(5));
    assert_eq!(h.breaker.snapshot().transitions, 4);
}

#[tokio::test(start_paused = true)]
async fn snapshot_is_camel_case_json() {
    let mut h = Harness::new(config());
    h.succeed();
    trip(&mut h);
    let json = serde_json::to_value(h.breaker.snapshot()).unwrap();
    assert_eq!(json["name"], "payments");
    assert_eq!(json["state"], "open");
    assert_eq!(json["calls"], 4);
    assert_eq!(json["successes"], 1);
    assert_eq!(json["failures"], 3);
    assert_eq!(json["slowCalls"], 0);
    assert_eq!(json["failureRate"], 0.75);
    assert_eq!(json["nextProbeInMs"], 5000);
    assert_eq!(json["transitions"], 1);
}

#[tokio::test(start_paused = true)]
async fn handle_call_wraps_any_future_with_the_same_rules() {
    let layer = BreakerLayer::new("smtp", config()).unwrap();
    let breaker = layer.handle();
    for _ in 0..3 {
        let result = breaker
            .call(async { Err::<(), _>(std::io::Error::other("refused")) })
            .await;
        assert!(result.unwrap_err().is::<std::io::Error>());
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    // Refused without running the future.
    let mut ran = false;
    let error = breaker
        .call(async {
            ran = true;
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_err();
    assert!(!ran);
    let open = error.downcast_ref::<BreakerOpen>().unwrap();
    assert_eq!(open.retry_after(), Duration::from_secs(5));

    advance(Duration::from_secs(5)).await;
    let value = breaker.call(async { Ok::<_, std::io::Error>(7) }).await;
    assert_eq!(value.unwrap(), 7);
    assert_eq!(breaker.state(), BreakerState::Closed);

    // A custom classifier: here an Ok(false) is a failure.
    let judge = |result: Result<&bool, &std::io::Error>| match result {
        Ok(true) => resilience::classify::Outcome::Success,
        _ => resilience::classify::Outcome::RETRYABLE,
    };
    for _ in 0..3 {
        let _ = breaker
            .call_with(async { Ok::<_, std::io::Error>(false) }, judge)
            .await;
    }
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[test]
fn an_invalid_config_is_refused_naming_the_field() {
    let error = BreakerLayer::new(
        "bad",
        BreakerConfig {
            half_open_max_calls: 0,
            ..config()
        },
    )
    .unwrap_err();
    assert_eq!(error.field(), "half_open_max_calls");
    assert!(error.to_string().contains("half_open_max_calls"));
}

/// Gauges, counters and histograms recorded for one breaker, by name and labels.
fn metric_values(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> HashMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .filter(|l| l.key() != "name")
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn state_gauge_is_one_hot_and_transitions_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // Handles are made when the layer is built, with the recorder current then.
    let mut h = metrics::with_local_recorder(&recorder, || Harness::new(config()));
    h.succeed();
    trip(&mut h);
    h.rejected();
    advance(Duration::from_secs(5)).await;
    let probe = h.start().expect("probe");
    assert_eq!(h.state(), BreakerState::HalfOpen);
    probe.succeed();
    assert_eq!(h.state(), BreakerState::Closed);

    let values = metric_values(&snapshotter);
    let gauge =
        |state: &str| match values.get(&format!("resilience_breaker_state{{state={state}}}")) {
            Some(DebugValue::Gauge(v)) => v.0,
            other => panic!("no gauge for {state}: {other:?}"),
        };
    let states = ["closed", "open", "half_open", "forced_open", "disabled"];
    let hot: Vec<_> = states.iter().filter(|s| gauge(s) == 1.0).collect();
    assert_eq!(hot, [&"closed"]);
    assert!(states.iter().all(|s| gauge(s) == 0.0 || *s == "closed"));

    let counter = |key: &str| match values.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("no counter {key}: {other:?}"),
    };
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        assert_eq!(
            counter(&format!(
                "resilience_breaker_transitions_total{{from={from},to={to}}}"
            )),
            1
        );
    }
    assert_eq!(
        counter("resilience_breaker_calls_total{outcome=success}"),
        2
    );
    assert_eq!(
        counter("resilience_breaker_calls_total{outcome=failure}"),
        3
    );
    assert_eq!(
        counter("resilience_breaker_calls_total{outcome=rejected}"),
        1
    );
    match values.get("resilience_breaker_recovery_seconds{}") {
        Some(DebugValue::Histogram(v)) => {
            assert_eq!(v.iter().map(|x| x.0).collect::<Vec<_>>(), [5.0])
        }
        other => panic!("no recovery histogram: {other:?}"),
    }
}

/// A call lands in the bucket of the instant it finishes, also exactly on a
/// bucket boundary just after a call in the bucket before (the closed path
/// remembers the current bucket's bounds per thread), and leaves the window
/// exactly ten buckets later.
#[tokio::test(start_paused = true)]
async fn bucket_boundaries_are_exact() {
    let breaker = BreakerLayer::new("edges", config()).unwrap().handle();
    let call = || breaker.call(std::future::ready(Ok::<_, std::io::Error>(())));
    call().await.unwrap(); // bucket 0 (1 s each)
    advance(Duration::from_secs(1)).await;
    call().await.unwrap(); // first instant of bucket 1
    advance(Duration::from_secs(9) - Duration::from_nanos(1)).await;
    assert_eq!(breaker.snapshot().calls, 2, "last instant of bucket 9");
    advance(Duration::from_nanos(1)).await;
    assert_eq!(breaker.snapshot().calls, 1, "bucket 0 has left the window");
    advance(Duration::from_secs(1)).await;
    assert_eq!(breaker.snapshot().calls, 0, "bucket 1 has left the window");
}
