//! Performance budgets: alerts raised on breach and cleared when back under.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use resilience::BoxError;
use resilience::budget::{AlertEvent, AlertEventKind, BudgetConfig, BudgetHandle, BudgetKind};
use resilience::metrics::{MetricsConfig, MetricsLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A request: how long the call takes, and whether it fails.
#[derive(Clone, Copy)]
struct Call(Duration, bool);

type Measured = resilience::metrics::Metrics<
    tower::util::ServiceFn<
        fn(Call) -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>,
    >,
>;

fn work(call: Call) -> std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
    Box::pin(async move {
        tokio::time::sleep(call.0).await;
        if call.1 { Err("failed".into()) } else { Ok(()) }
    })
}

struct Fixture {
    prometheus: PrometheusHandle,
    service: Measured,
    budget: BudgetHandle,
    events: Arc<Mutex<Vec<AlertEvent>>>,
}

fn fixture(config: BudgetConfig) -> Fixture {
    let recorder = PrometheusBuilder::new().build_recorder();
    let prometheus = recorder.handle();
    let (layer, budget) = metrics::with_local_recorder(&recorder, || {
        let layer = MetricsLayer::new("orders.list", MetricsConfig::default()).unwrap();
        let budget = BudgetHandle::attach(&layer.handle(), config).unwrap();
        (layer, budget)
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    budget.on_event(Arc::new(move |event: &AlertEvent| {
        sink.lock().unwrap().push(event.clone())
    }));
    let service = layer.layer(service_fn(work as fn(Call) -> _));
    Fixture {
        prometheus,
        service,
        budget,
        events,
    }
}

impl Fixture {
    async fn calls(&mut self, n: usize, took: Duration, fail: bool) {
        for _ in 0..n {
            let _ = self
                .service
                .ready()
                .await
                .unwrap()
                .call(Call(took, fail))
                .await;
        }
    }

    fn events(&self) -> Vec<AlertEventKind> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.event)
            .collect()
    }

    fn gauge(&self, budget: &str) -> String {
        let text = self.prometheus.render();
        text.lines()
            .find(|l| {
                l.starts_with("resilience_budget_breached{")
                    && l.contains(&format!("budget=\"{budget}\""))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.to_owned())
            .unwrap_or_else(|| panic!("no breached gauge for {budget} in\n{text}"))
    }

    fn breaches(&self, budget: &str) -> String {
        let text = self.prometheus.render();
        text.lines()
            .find(|l| {
                l.starts_with("resilience_budget_breaches_total{")
                    && l.contains(&format!("budget=\"{budget}\""))
            })
            .map(|l| l.rsplit_once(' ').unwrap().1.to_owned())
            .unwrap_or_else(|| panic!("no breaches counter for {budget} in\n{text}"))
    }
}

fn p95_budget() -> BudgetConfig {
    BudgetConfig {
        p95: Some(Duration::from_millis(100)),
        min_samples: 10,
        ..BudgetConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn p95_breach_raises_an_alert_and_recovery_clears_it() {
    let mut f = fixture(p95_budget());
    assert_eq!(f.gauge("p95"), "0");

    f.calls(20, Duration::from_millis(250), false).await;
    f.budget.evaluate();
    let alerts = f.budget.alerts();
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(
        (alert.operation.as_str(), alert.budget),
        ("orders.list", BudgetKind::P95)
    );
    assert!(
        (alert.observed - 0.25).abs() < 0.01,
        "observed in seconds: {alert:?}"
    );
    assert_eq!(alert.limit, 0.1);
    assert_eq!(f.gauge("p95"), "1");
    assert_eq!(f.breaches("p95"), "1");
    assert_eq!(f.events(), [AlertEventKind::Raised]);

    // Still over: no second alert, no second event.
    f.calls(5, Duration::from_millis(250), false).await;
    f.budget.evaluate();
    assert_eq!(f.breaches("p95"), "1");
    assert_eq!(f.events(), [AlertEventKind::Raised]);

    // The slow calls age out of the window (60 s, plus up to one 5 s slot)
    // and fast ones replace them.
    tokio::time::advance(Duration::from_secs(66)).await;
    f.calls(50, Duration::from_millis(10), false).await;
    f.budget.evaluate();
    assert!(f.budget.alerts().is_empty());
    assert_eq!(f.gauge("p95"), "0");
    assert_eq!(
        f.events(),
        [AlertEventKind::Raised, AlertEventKind::Resolved]
    );
    let resolved = &f.events.lock().unwrap()[1];
    assert_eq!(resolved.alert.budget, BudgetKind::P95);
    assert_eq!(
        f.breaches("p95"),
        "1",
        "the counter counts breaches, not evaluations"
    );
}

#[tokio::test(start_paused = true)]
async fn completed_calls_evaluate_without_being_asked() {
    let mut f = fixture(p95_budget());
    // Each call takes 250 ms, so evaluations (at most one per second) happen
    // along the way; once 10 samples are in, the next one raises the alert.
    f.calls(20, Duration::from_millis(250), false).await;
    assert_eq!(f.budget.alerts().len(), 1, "raised by the calls themselves");
    assert_eq!(f.events(), [AlertEventKind::Raised]);
}

#[tokio::test(start_paused = true)]
async fn too_few_samples_neither_raise_nor_clear() {
    let mut f = fixture(p95_budget());
    f.calls(9, Duration::from_secs(1), false).await;
    f.budget.evaluate();
    assert!(
        f.budget.alerts().is_empty(),
        "9 slow calls are below min_samples = 10"
    );

    f.calls(1, Duration::from_secs(1), false).await;
    f.budget.evaluate();
    assert_eq!(f.budget.alerts().len(), 1);

    // The window slides past the slow calls; a few fast calls are not enough
    // to call it recovered.
    tokio::time::advance(Duration::from_secs(66)).await;
    f.calls(3, Duration::from_millis(1), false).await;
    f.budget.evaluate();
    assert_eq!(
        f.budget.alerts().len(),
        1,
        "3 samples do not clear the alert"
    );
    assert_eq!(f.gauge("p95"), "1");
}

#[tokio::test(start_paused = true)]
async fn an_empty_window_clears_alerts() {
    let mut f = fixture(p95_budget());
    f.calls(10, Duration::from_secs(1), false).await;
    f.budget.evaluate();
    assert_eq!(f.budget.alerts().len(), 1);
    tokio::time::advance(Duration::from_secs(70)).await;
    f.budget.evaluate();
    assert!(
        f.budget.alerts().is_empty(),
        "no traffic, nothing served slowly"
    );
    assert_eq!(
        f.events(),
        [AlertEventKind::Raised, AlertEventKind::Resolved]
    );
}

#[tokio::test(start_paused = true)]
async fn error_rate_budget() {
    let mut f = fixture(BudgetConfig {
        error_rate: Some(0.2),
        min_samples: 10,
        ..BudgetConfig::default()
    });
    f.calls(17, Duration::from_millis(5), false).await;
    f.calls(3, Duration::from_millis(5), true).await;
    f.budget.evaluate();
    assert!(f.budget.alerts().is_empty(), "15 % is under 20 %");

    f.calls(5, Duration::from_millis(5), true).await;
    f.budget.evaluate();
    let alerts = f.budget.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].budget, BudgetKind::ErrorRate);
    assert!((alerts[0].observed - 8.0 / 25.0).abs() < 1e-9);
    assert_eq!(f.gauge("error_rate"), "1");

    let snapshot = f.budget.snapshot();
    assert_eq!(snapshot.samples, 25);
    assert!(snapshot.limits[0].breached);
    let json = serde_json::to_value(&snapshot).unwrap();
    assert_eq!(json["limits"][0]["budget"], "error_rate");
    assert_eq!(json["minSamples"], 10);
    let json = serde_json::to_value(&alerts[0]).unwrap();
    assert!(
        json["since"].as_str().unwrap().ends_with('Z'),
        "RFC 3339: {json}"
    );
}

#[test]
fn invalid_budgets_are_refused_with_the_field_named() {
    let layer = MetricsLayer::new("x", MetricsConfig::default()).unwrap();
    let bad = |config: BudgetConfig| {
        BudgetHandle::attach(&layer.handle(), config)
            .unwrap_err()
            .field()
    };
    assert_eq!(
        bad(BudgetConfig {
            p95: Some(Duration::from_secs(2)),
            p99: Some(Duration::from_secs(1)),
            ..Default::default()
        }),
        "budget.p95"
    );
    assert_eq!(
        bad(BudgetConfig {
            error_rate: Some(0.0),
            ..Default::default()
        }),
        "budget.error_rate"
    );
    assert_eq!(
        bad(BudgetConfig {
            error_rate: Some(1.5),
            ..Default::default()
        }),
        "budget.error_rate"
    );
    assert_eq!(
        bad(BudgetConfig {
            min_samples: 0,
            ..Default::default()
        }),
        "budget.min_samples"
    );
    assert_eq!(
        bad(BudgetConfig {
            window: Duration::from_secs(120),
            ..Default::default()
        }),
        "budget.window",
        "longer than the operation's 60 s window"
    );
    BudgetHandle::attach(&layer.handle(), BudgetConfig::default()).unwrap();
    assert_eq!(
        bad(BudgetConfig::default()),
        "budget",
        "one budget per operation"
    );
}
