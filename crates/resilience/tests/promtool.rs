//! Every layer's metrics, rendered by the Prometheus exporter, pass
//! `promtool check metrics`; the breaker's state gauge is one-hot.
//!
//! Its own test binary: it installs the global metrics recorder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use resilience::breaker::BreakerState;
use resilience::registry::Registry;
use resilience::stack::{ServiceConfig, ServiceStack};
use tower::{Layer, ServiceExt, service_fn};

const CONFIG: &str = r#"
timeout = "2s"

[breaker]
failure_threshold = 3
minimum_throughput = 3
reset_timeout = "10s"

[concurrency]
max_concurrent = 1
max_queue = 1
queue_timeout = "1s"

[retry]
attempts = 2
backoff = "constant"
base_delay = "100ms"
jitter = false

[cache]
ttl = "1m"

[budget]
p95 = "50ms"
p99 = "100ms"
error_rate = 0.1
min_samples = 3
"#;

/// The value of the one sample with this name and these labels.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| {
            let (series, _) = line.rsplit_once(' ').unwrap();
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
    found[0]
}

fn assert_one_hot(text: &str, breaker: &str, expected: BreakerState) {
    for state in BreakerState::ALL {
        let value = sample(
            text,
            "resilience_breaker_state",
            &[("name", breaker), ("state", state.as_str())],
        );
        let want = if state == expected { 1.0 } else { 0.0 };
        assert_eq!(
            value,
            want,
            "state {} while {}",
            state.as_str(),
            expected.as_str()
        );
    }
}

/// Runs `promtool check metrics` on `text`: `None` if promtool is missing,
/// else its exit code and everything it printed.
fn promtool(text: &str) -> Option<(i32, String)> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.code().unwrap_or(-1), printed))
}

#[tokio::test(start_paused = true)]
async fn every_layers_metrics_pass_promtool() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    metrics::set_global_recorder(recorder).unwrap();
    resilience::metrics::describe_all();

    let registry = Registry::new();
    let config: ServiceConfig = toml::from_str(CONFIG).unwrap();
    let stack = ServiceStack::new("orders", &config, &registry).unwrap();
    let failing = Arc::new(AtomicBool::new(false));
    let backend = failing.clone();
    let service = stack.layer(service_fn(move |took: Duration| {
        let failing = backend.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(took).await;
            if failing {
                Err(std::io::Error::other("down"))
            } else {
                Ok("ok")
            }
        }
    }));
    let breaker = registry.breaker("orders").unwrap();

    // The service's typed cache: a miss, a hit, an invalidation.
    let cache = stack
        .cache::<u32, String>()
        .unwrap()
        .expect("a [cache] section");
    for _ in 0..2 {
        let order = cache
            .get_or_load(1, &["customer:7"], || async {
                Ok::<_, std::io::Error>("order 1".to_string())
            })
            .await
            .unwrap();
        assert_eq!(order, "order 1");
    }
    assert_eq!(registry.cache_invalidate_tags(&["customer:7"]).await, 1);
    cache.run_pending_tasks().await;

    // Successes, slow enough to breach the latency budgets.
    for _ in 0..3 {
        service
            .clone()
            .oneshot(Duration::from_millis(200))
            .await
            .unwrap();
    }
    // A queued call and a refused one.
    let running = tokio::spawn(service.clone().oneshot(Duration::from_millis(500)));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(service.clone().oneshot(Duration::from_millis(1)));
    tokio::task::yield_now().await;
    assert!(
        service
            .clone()
            .oneshot(Duration::from_millis(1))
            .await
            .is_err()
    );
    running.await.unwrap().unwrap();
    queued.await.unwrap().unwrap();
    assert_one_hot(&prometheus.render(), "orders", BreakerState::Closed);

    // Failures (each retried once) open the breaker.
    failing.store(true, Ordering::SeqCst);
    while breaker.state() != BreakerState::Open {
        assert!(
            service
                .clone()
                .oneshot(Duration::from_millis(1))
                .await
                .is_err()
        );
    }
    assert!(
        service
            .clone()
            .oneshot(Duration::from_millis(1))
            .await
            .is_err(),
        "refused"
    );
    assert_one_hot(&prometheus.render(), "orders", BreakerState::Open);

    // After reset_timeout a probe is admitted (half-open) and succeeds (closed).
    tokio::time::advance(Duration::from_secs(10)).await;
    failing.store(false, Ordering::SeqCst);
    let mut transitions = breaker.subscribe();
    let probe = tokio::spawn(service.clone().oneshot(Duration::from_millis(100)));
    assert_eq!(transitions.recv().await.unwrap().to, BreakerState::HalfOpen);
    assert_one_hot(&prometheus.render(), "orders", BreakerState::HalfOpen);
    probe.await.unwrap().unwrap();
    assert_eq!(transitions.recv().await.unwrap().to, BreakerState::Closed);

    registry.alerts(); // evaluate the budgets
    let text = prometheus.render();
    assert_one_hot(&text, "orders", BreakerState::Closed);
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        assert_eq!(
            sample(
                &text,
                "resilience_breaker_transitions_total",
                &[("name", "orders"), ("from", from), ("to", to)]
            ),
            1.0
        );
    }
    assert_eq!(
        sample(
            &text,
            "resilience_budget_breached",
            &[("name", "orders"), ("budget", "p95")]
        ),
        1.0
    );
    for result in ["hit", "miss"] {
        assert_eq!(
            sample(
                &text,
                "resilience_cache_requests_total",
                &[("name", "orders"), ("result", result)]
            ),
            1.0
        );
    }
    for family in [
        "resilience_operation_duration_seconds",
        "resilience_operation_requests_total",
        "resilience_operation_in_flight",
        "resilience_breaker_state",
        "resilience_breaker_transitions_total",
        "resilience_breaker_calls_total",
        "resilience_breaker_recovery_seconds",
        "resilience_concurrency_in_flight",
        "resilience_concurrency_queued",
        "resilience_concurrency_limit",
        "resilience_concurrency_admitted_total",
        "resilience_concurrency_rejected_total",
        "resilience_concurrency_wait_seconds",
        "resilience_retry_attempts_total",
        "resilience_retry_exhausted_total",
        "resilience_budget_breached",
        "resilience_budget_breaches_total",
        "resilience_cache_requests_total",
        "resilience_cache_loads_total",
        "resilience_cache_evictions_total",
        "resilience_cache_refreshes_total",
        "resilience_cache_entries",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family} in\n{text}"
        );
    }

    match promtool(&text) {
        None => println!("NOTE: promtool is not installed; skipped `promtool check metrics`"),
        Some((code, printed)) => {
            assert_eq!(
                (code, printed.as_str()),
                (0, ""),
                "promtool check metrics on:\n{text}"
            );
        }
    }
}
