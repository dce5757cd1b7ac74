//! The metrics layer: Prometheus series through the `metrics` facade and the
//! in-process sliding-window statistics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use resilience::BoxError;
use resilience::classify::Outcome;
use resilience::metrics::{Metrics, MetricsConfig, MetricsLayer};
use tower_test::mock::{self, Handle, Mock, Spawn};

/// The value of the sample whose name and labels match, from rendered text.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find(|line| {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let metric = series.split('{').next().unwrap();
            metric == name
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
}

fn recorder_and_layer(name: &str) -> (PrometheusHandle, MetricsLayer) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let layer = metrics::with_local_recorder(&recorder, || {
        resilience::metrics::describe_all();
        MetricsLayer::new(name, MetricsConfig::default()).unwrap()
    });
    (prometheus, layer)
}

type Service = Spawn<Metrics<Mock<&'static str, &'static str>>>;

/// One call that the mock answers after `took`, with an error if `fail`.
async fn call(
    service: &mut Service,
    handle: &mut Handle<&'static str, &'static str>,
    took: Duration,
    fail: bool,
) -> Result<&'static str, BoxError> {
    assert!(service.poll_ready().is_ready());
    let response = service.call("request");
    let (_, send) = handle.next_request().await.unwrap();
    tokio::time::advance(took).await;
    if fail {
        send.send_error("boom");
    } else {
        send.send_response("ok");
    }
    response.await
}

#[tokio::test(start_paused = true)]
async fn red_series_count_outcomes_durations_and_in_flight() {
    let (prometheus, layer) = recorder_and_layer("users.get");
    let (mut service, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);

    let text = prometheus.render();
    assert_eq!(
        sample(
            &text,
            "resilience_operation_requests_total",
            &[("name", "users.get"), ("outcome", "success")]
        ),
        Some(0.0),
        "series exist before the first call:\n{text}"
    );
    assert!(text.contains("# HELP resilience_operation_duration_seconds"));

    call(&mut service, &mut handle, Duration::from_millis(20), false)
        .await
        .unwrap();
    let error = call(&mut service, &mut handle, Duration::from_millis(40), true)
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "boom");

    // A call in progress is in flight; dropping it (the caller went away)
    // takes it out again without counting an outcome.
    assert!(service.poll_ready().is_ready());
    let pending = service.call("request");
    let text = prometheus.render();
    assert_eq!(
        sample(
            &text,
            "resilience_operation_in_flight",
            &[("name", "users.get")]
        ),
        Some(1.0)
    );
    drop(pending);

    let text = prometheus.render();
    let labels = |outcome| [("name", "users.get"), ("outcome", outcome)];
    assert_eq!(
        sample(
            &text,
            "resilience_operation_requests_total",
            &labels("success")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "resilience_operation_requests_total",
            &labels("failure")
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "resilience_operation_in_flight",
            &[("name", "users.get")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "resilience_operation_duration_seconds_count",
            &[("name", "users.get")]
        ),
        Some(2.0)
    );
    let sum = sample(
        &text,
        "resilience_operation_duration_seconds_sum",
        &[("name", "users.get")],
    )
    .unwrap();
    assert!(
        (sum - 0.060).abs() < 1e-9,
        "durations are recorded in seconds: {sum}"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_reports_window_percentiles_and_slides() {
    let (_, layer) = recorder_and_layer("assets.search");
    let stats = layer.handle();
    let (mut service, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);

    // 100 calls of 1..=100 ms; every 10th fails.
    for ms in 1..=100u64 {
        let _ = call(
            &mut service,
            &mut handle,
            Duration::from_millis(ms),
            ms % 10 == 0,
        )
        .await;
    }
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.name, "assets.search");
    assert_eq!(snapshot.count, 100);
    assert_eq!(snapshot.failures, 10);
    assert_eq!(snapshot.error_rate, 0.1);
    assert!((snapshot.avg_ms - 50.5).abs() < 1e-6, "{snapshot:?}");
    for (got, exact) in [
        (snapshot.p50_ms, 50.0),
        (snapshot.p95_ms, 95.0),
        (snapshot.p99_ms, 99.0),
    ] {
        assert!(
            (got - exact).abs() / exact < 0.03,
            "{got} vs {exact}: {snapshot:?}"
        );
    }
    assert_eq!(snapshot.max_ms, 100.0);
    // 5.05 s of calls: the rate is over the time actually covered.
    assert!(
        (snapshot.rate_per_second - 100.0 / 5.05).abs() < 0.5,
        "{snapshot:?}"
    );

    // Everything leaves the 60 s window.
    tokio::time::advance(Duration::from_secs(70)).await;
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.count, snapshot.failures, snapshot.p99_ms),
        (0, 0, 0.0)
    );

    call(&mut service, &mut handle, Duration::from_millis(7), false)
        .await
        .unwrap();
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.count, 1);
    assert_eq!(snapshot.p50_ms, 7.0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_leave_in_flight_and_are_counted() {
    let (_, layer) = recorder_and_layer("notifications.send");
    let stats = layer.handle();
    let (mut service, mut handle) = mock::spawn_layer::<&str, &str, _>(layer);

    assert!(service.poll_ready().is_ready());
    let first = service.call("a");
    assert!(service.poll_ready().is_ready());
    let second = service.call("b");
    assert_eq!(stats.in_flight(), 2);
    drop(first);
    assert_eq!(stats.in_flight(), 1);
    let (_, send) = handle.next_request().await.unwrap();
    drop(send);
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response("ok");
    second.await.unwrap();
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.in_flight, snapshot.cancelled, snapshot.count),
        (0, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn classifier_decides_what_is_a_failure() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let layer = metrics::with_local_recorder(&recorder, || {
        MetricsLayer::new("http", MetricsConfig::default())
            .unwrap()
            .with_classifier(|result: Result<&u16, &BoxError>| match result {
                Ok(status) if *status >= 500 => Outcome::RETRYABLE,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::RETRYABLE,
            })
    });
    let stats = layer.handle();
    let (mut service, mut handle) = mock::spawn_layer::<&str, u16, _>(layer);
    for status in [200u16, 404, 500, 503] {
        assert!(service.poll_ready().is_ready());
        let response = service.call("request");
        handle.next_request().await.unwrap().1.send_response(status);
        assert_eq!(
            response.await.unwrap(),
            status,
            "responses pass through unchanged"
        );
    }
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.count, snapshot.failures), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn every_service_from_one_layer_shares_one_operation() {
    let (prometheus, layer) = recorder_and_layer("shared");
    let stats = layer.handle();
    let (mut first, mut first_handle) = mock::spawn_layer::<&str, &str, _>(layer.clone());
    let (mut second, mut second_handle) = mock::spawn_layer::<&str, &str, _>(layer);
    call(
        &mut first,
        &mut first_handle,
        Duration::from_millis(1),
        false,
    )
    .await
    .unwrap();
    call(
        &mut second,
        &mut second_handle,
        Duration::from_millis(1),
        false,
    )
    .await
    .unwrap();
    assert_eq!(stats.snapshot().count, 2);
    assert_eq!(
        sample(
            &prometheus.render(),
            "resilience_operation_requests_total",
            &[("name", "shared"), ("outcome", "success")]
        ),
        Some(2.0)
    );
}

#[test]
fn snapshot_serializes_camel_case_and_config_is_checked() {
    let layer = MetricsLayer::new("json", MetricsConfig::default()).unwrap();
    let json = serde_json::to_value(layer.handle().snapshot()).unwrap();
    for key in [
        "name",
        "window",
        "count",
        "failures",
        "ratePerSecond",
        "errorRate",
        "avgMs",
        "p50Ms",
        "p95Ms",
        "p99Ms",
        "maxMs",
        "inFlight",
        "cancelled",
    ] {
        assert!(json.get(key).is_some(), "missing {key} in {json}");
    }
    assert_eq!(json["window"], "1m");

    let error = MetricsLayer::new(
        "bad",
        MetricsConfig {
            window: Duration::from_millis(10),
        },
    )
    .unwrap_err();
    assert_eq!(error.field(), "window");
    assert!(
        serde_json::from_str::<MetricsConfig>(r#"{"windw": "1m"}"#).is_err(),
        "unknown fields are refused"
    );
}
