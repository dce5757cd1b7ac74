//! The per-service stack built from TOML: layer order, registration, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::BoxError;
use resilience::breaker::{BreakerConfig, BreakerLayer, BreakerOpen, BreakerState};
use resilience::budget::{AlertEvent, BudgetKind};
use resilience::concurrency::{QueueFull, QueueTimeout};
use resilience::registry::{Component, Registry, Status};
use resilience::stack::{ServiceConfig, ServiceStack, StackError, StackService};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

const CONFIG: &str = r#"
timeout = "2s"

[breaker]
failure_threshold = 3
minimum_throughput = 3
reset_timeout = "10s"

[concurrency]
max_concurrent = 2
max_queue = 1
queue_timeout = "1s"

[retry]
attempts = 3
backoff = "constant"
base_delay = "100ms"
jitter = false

[budget]
p95 = "500ms"
error_rate = 0.5
min_samples = 5
"#;

/// What the backend does with one attempt.
#[derive(Clone, Copy, Debug)]
enum Job {
    /// Answer after this long (or fail, while `fail_next` > 0).
    Work(Duration),
    /// Never answer.
    Hang,
}

/// A backend that counts attempts and fails the next `fail_next` of them.
#[derive(Default)]
struct Backend {
    attempts: AtomicU32,
    fail_next: AtomicU32,
}

type Service = StackService<tower::util::BoxCloneSyncService<Job, &'static str, std::io::Error>>;

fn stack(config: &str, registry: &Registry) -> (Service, Arc<Backend>) {
    let config: ServiceConfig = toml::from_str(config).unwrap();
    let stack = ServiceStack::new("orders", &config, registry).unwrap();
    let backend = Arc::new(Backend::default());
    let shared = backend.clone();
    let inner = service_fn(move |job: Job| {
        let backend = shared.clone();
        async move {
            backend.attempts.fetch_add(1, Ordering::SeqCst);
            match job {
                Job::Hang => std::future::pending().await,
                Job::Work(took) => tokio::time::sleep(took).await,
            }
            let failing = backend
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                Err(std::io::Error::other("backend failed"))
            } else {
                Ok("done")
            }
        }
    });
    (
        stack.layer(tower::util::BoxCloneSyncService::new(inner)),
        backend,
    )
}

const QUICK: Job = Job::Work(Duration::from_millis(10));

#[tokio::test(start_paused = true)]
async fn toml_config_builds_a_registered_stack() {
    let registry = Registry::new();
    let (service, _) = stack(CONFIG, &registry);
    assert_eq!(service.oneshot(QUICK).await.unwrap(), "done");

    for (kind, present) in [
        ("operation", registry.operation("orders").is_some()),
        ("breaker", registry.breaker("orders").is_some()),
        ("concurrency", registry.concurrency("orders").is_some()),
        ("retry", registry.retry("orders").is_some()),
        ("budget", registry.budget("orders").is_some()),
    ] {
        assert!(present, "no {kind} registered");
    }
    let json = serde_json::to_value(registry.snapshot()).unwrap();
    assert_eq!(json["operations"][0]["name"], "orders");
    assert_eq!(json["operations"][0]["count"], 1);
    assert_eq!(json["breakers"][0]["state"], "closed");
    assert_eq!(json["concurrency"][0]["limit"], 2);
    assert_eq!(json["retries"][0]["budgetWindowCalls"], 1);
    assert_eq!(json["budgets"][0]["limits"][0]["budget"], "p95");
    assert_eq!(registry.readiness().status, Status::Ready);
}

#[tokio::test(start_paused = true)]
async fn an_empty_config_is_a_breaker_and_a_timeout() {
    let registry = Registry::new();
    let (service, _) = stack("", &registry);
    assert_eq!(service.clone().oneshot(QUICK).await.unwrap(), "done");
    assert!(registry.breaker("orders").is_some());
    assert!(registry.concurrency("orders").is_none());
    assert!(registry.retry("orders").is_none());
    assert!(registry.budget("orders").is_none(), "no limits, no budget");

    let started = Instant::now();
    let error = service.oneshot(Job::Hang).await.unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(30),
        "the default deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_happen_inside_the_breaker() {
    let registry = Registry::new();
    let (service, backend) = stack(CONFIG, &registry);
    backend.fail_next.store(1, Ordering::SeqCst);

    assert_eq!(service.oneshot(QUICK).await.unwrap(), "done");
    assert_eq!(backend.attempts.load(Ordering::SeqCst), 2, "one retry");
    assert_eq!(registry.retry("orders").unwrap().snapshot().retries, 1);
    let breaker = registry.breaker("orders").unwrap().snapshot();
    assert_eq!(
        (breaker.calls, breaker.failures),
        (1, 0),
        "the breaker sees the final outcome only"
    );
    let operation = registry.operation("orders").unwrap().snapshot();
    assert_eq!((operation.count, operation.failures), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn breaker_counts_one_failure_per_call_then_refuses_without_calling() {
    let registry = Registry::new();
    let (service, backend) = stack(CONFIG, &registry);
    backend.fail_next.store(u32::MAX, Ordering::SeqCst);

    for call in 1..=3 {
        let error = service.clone().oneshot(QUICK).await.unwrap_err();
        assert_eq!(error.to_string(), "backend failed");
        assert_eq!(
            backend.attempts.load(Ordering::SeqCst),
            3 * call,
            "three tries per call"
        );
    }
    let breaker = registry.breaker("orders").unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "3 calls, 3 failures");

    let error = service.clone().oneshot(QUICK).await.unwrap_err();
    let open = error
        .downcast_ref::<BreakerOpen>()
        .expect("refused by the breaker");
    assert_eq!(open.name(), "orders");
    assert_eq!(
        backend.attempts.load(Ordering::SeqCst),
        9,
        "the backend was not called"
    );

    let operation = registry.operation("orders").unwrap().snapshot();
    assert_eq!(
        (operation.count, operation.failures),
        (4, 4),
        "metrics see the refusal too"
    );
    let readiness = registry.readiness();
    assert_eq!(readiness.status, Status::Degraded);
    assert_eq!(readiness.issues[0].component, Component::Breaker);

    // After reset_timeout a successful probe closes it.
    tokio::time::advance(Duration::from_secs(10)).await;
    backend.fail_next.store(0, Ordering::SeqCst);
    assert_eq!(service.oneshot(QUICK).await.unwrap(), "done");
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(registry.readiness().status, Status::Ready);
}

#[tokio::test(start_paused = true)]
async fn the_timeout_is_one_deadline_for_the_whole_call() {
    let registry = Registry::new();
    let (service, backend) = stack(CONFIG, &registry);
    let started = Instant::now();
    let error = service.oneshot(Job::Hang).await.unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>(), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(
        backend.attempts.load(Ordering::SeqCst),
        1,
        "a spent deadline is not retried"
    );
    assert_eq!(registry.breaker("orders").unwrap().snapshot().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn the_concurrency_limit_queues_then_refuses() {
    let registry = Registry::new();
    let (service, _) = stack(CONFIG, &registry);
    // Two calls hold both permits (they hang until the deadline)...
    let running: Vec<_> = (0..2)
        .map(|_| tokio::spawn(service.clone().oneshot(Job::Hang)))
        .collect();
    tokio::task::yield_now().await;
    // ...a third waits in the queue...
    let queued = tokio::spawn(service.clone().oneshot(QUICK));
    tokio::task::yield_now().await;
    let limit = registry.concurrency("orders").unwrap();
    assert_eq!((limit.in_flight(), limit.queued()), (2, 1));
    assert_eq!(registry.readiness().status, Status::Degraded, "queue full");

    // ...and a fourth finds the queue full.
    let error = service.clone().oneshot(QUICK).await.unwrap_err();
    assert!(error.is::<QueueFull>(), "{error}");

    // The queued call gives up after queue_timeout (1 s), before the
    // running ones hit their 2 s deadline.
    let error = queued.await.unwrap().unwrap_err();
    assert!(error.is::<QueueTimeout>(), "{error}");
    for call in running {
        let error = call.await.unwrap().unwrap_err();
        assert!(error.is::<tower::timeout::error::Elapsed>());
    }
    let limit = limit.snapshot();
    assert_eq!(
        (limit.rejected_queue_full, limit.rejected_queue_timeout),
        (1, 1)
    );
    // The two calls that hung to their deadline are failures of the
    // backend; the two the limit shed never reached it and count for
    // nothing, so the breaker (threshold 3) stays closed.
    let breaker = registry.breaker("orders").unwrap().snapshot();
    assert_eq!(breaker.state, BreakerState::Closed);
    assert_eq!((breaker.calls, breaker.failures), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn services_from_one_stack_share_its_state() {
    let registry = Registry::new();
    let config: ServiceConfig = toml::from_str(CONFIG).unwrap();
    let stack = ServiceStack::new("orders", &config, &registry).unwrap();
    let make = || stack.layer(service_fn(|()| async { Ok::<_, BoxError>("done") }));
    make().oneshot(()).await.unwrap();
    make().oneshot(()).await.unwrap();
    assert_eq!(registry.operation("orders").unwrap().snapshot().count, 2);
    assert_eq!(registry.breaker("orders").unwrap().snapshot().calls, 2);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_raise_a_budget_alert_in_the_registry() {
    let registry = Registry::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    registry.on_alert(Arc::new(move |event: &AlertEvent| {
        sink.lock().unwrap().push((event.event, event.alert.budget));
    }));
    let (service, _) = stack(CONFIG, &registry);
    for _ in 0..5 {
        service
            .clone()
            .oneshot(Job::Work(Duration::from_secs(1)))
            .await
            .unwrap();
    }
    let alerts = registry.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].operation.as_str(), alerts[0].budget),
        ("orders", BudgetKind::P95)
    );
    assert_eq!(events.lock().unwrap().len(), 1);
    let readiness = registry.readiness();
    assert_eq!(
        readiness.status,
        Status::Ready,
        "a budget alert does not take the service out"
    );
    assert_eq!(readiness.issues[0].component, Component::Budget);
}

#[test]
fn bad_configs_name_the_service_and_field() {
    let registry = Registry::new();
    let build = |toml_text: &str| {
        let config: ServiceConfig = toml::from_str(toml_text).unwrap();
        ServiceStack::new("orders", &config, &registry).unwrap_err()
    };
    let error = build(r#"timeout = "0s""#);
    assert_eq!(error.service(), "orders");
    assert_eq!(
        error.to_string(),
        "service 'orders': invalid service config: `timeout` must be above zero"
    );
    for (toml_text, section, field) in [
        (r#"timeout = "0s""#, "service", "timeout"),
        ("[budget]\nerror_rate = 2.0", "budget", "budget.error_rate"),
        (
            "[breaker]\nfailure_threshold = 0",
            "breaker",
            "failure_threshold",
        ),
        (
            "[concurrency]\nmax_concurrent = 0",
            "concurrency",
            "max_concurrent",
        ),
        ("[retry]\nattempts = 0", "retry", "attempts"),
    ] {
        let error = build(toml_text);
        assert!(
            matches!(&error, StackError::Config { section: s, source, .. }
                if *s == section && source.field() == field),
            "{error}"
        );
    }
    assert!(
        toml::from_str::<ServiceConfig>("[breaker]\nfailure_treshold = 3").is_err(),
        "unknown fields are refused"
    );
    assert!(
        registry.snapshot().breakers.is_empty(),
        "nothing registered"
    );
}

#[test]
fn a_taken_name_registers_nothing() {
    let registry = Registry::new();
    let breaker = BreakerLayer::new("orders", BreakerConfig::default()).unwrap();
    registry.register_breaker(breaker.handle()).unwrap();
    let config: ServiceConfig = toml::from_str(CONFIG).unwrap();
    let error = ServiceStack::new("orders", &config, &registry).unwrap_err();
    assert!(matches!(error, StackError::Registry { .. }), "{error}");
    assert!(registry.operation("orders").is_none());
    assert!(registry.concurrency("orders").is_none());
    // Under another name it works.
    ServiceStack::new("orders-v2", &config, &registry).unwrap();
    assert!(registry.operation("orders-v2").is_some());
}

#[tokio::test]
async fn the_cache_section_builds_a_registered_cache() {
    let registry = Registry::new();
    let config: ServiceConfig =
        toml::from_str("[cache]\nttl = \"30s\"\nmax_entries = 100").unwrap();
    let stack = ServiceStack::new("users", &config, &registry).unwrap();
    let users = stack.cache::<u64, String>().unwrap().expect("configured");
    users.insert(7, "ada".into(), &["org:1"]).await;
    assert_eq!(registry.cache("users").unwrap().snapshot().name, "users");
    assert_eq!(registry.cache_invalidate_tags(&["org:1"]).await, 1);
    let error = stack.cache::<u64, String>().unwrap_err();
    assert!(
        matches!(error, StackError::Registry { .. }),
        "one cache per stack: {error}"
    );

    let plain = ServiceStack::new("assets", &ServiceConfig::default(), &registry).unwrap();
    assert!(
        plain.cache::<u64, String>().unwrap().is_none(),
        "no [cache], no cache"
    );
    let error = {
        let config: ServiceConfig = toml::from_str("[cache]\nttl = \"0s\"").unwrap();
        ServiceStack::new("bad", &config, &registry).unwrap_err()
    };
    assert!(
        matches!(&error, StackError::Config { service, section: "cache", source }
            if service == "bad" && source.field() == "ttl"),
        "{error}"
    );
}
