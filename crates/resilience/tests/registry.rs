//! The registry: named handles, admin actions, cache operations, alerts and
//! readiness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use resilience::BoxError;
use resilience::breaker::{BreakerConfig, BreakerLayer, BreakerState};
use resilience::budget::{AlertEvent, AlertEventKind, BudgetConfig, BudgetHandle};
use resilience::cache::{Cache, CacheConfig};
use resilience::metrics::{MetricsConfig, MetricsLayer};
use resilience::registry::{Component, Registry, RegistryError, Status};
use tower::{Layer, ServiceExt, service_fn};

fn breaker(name: &str) -> BreakerLayer {
    BreakerLayer::new(name, BreakerConfig::default()).unwrap()
}

fn cache(name: &str) -> Cache<u32, String> {
    Cache::new(name, CacheConfig::default()).unwrap()
}

#[test]
fn names_are_unique_per_kind() {
    let registry = Registry::new();
    registry.register_breaker(breaker("db").handle()).unwrap();
    assert_eq!(
        registry
            .register_breaker(breaker("db").handle())
            .unwrap_err(),
        RegistryError::Duplicate {
            kind: "breaker",
            name: "db".into()
        }
    );
    // The same name for another kind of layer is fine.
    let operation = MetricsLayer::new("db", MetricsConfig::default()).unwrap();
    registry.register_operation(operation.handle()).unwrap();
    assert_eq!(registry.snapshot().breakers.len(), 1);
    assert!(registry.breaker("nope").is_none());
}

#[tokio::test]
async fn operator_actions_reach_the_breaker_and_readiness_follows() {
    let registry = Registry::new();
    let layer = breaker("smtp");
    registry.register_breaker(layer.handle()).unwrap();
    registry.register_breaker(breaker("sms").handle()).unwrap();
    let service = layer.layer(service_fn(|()| async { Ok::<_, BoxError>("sent") }));
    assert_eq!(registry.readiness().status, Status::Ready);
    assert!(registry.readiness().issues.is_empty());

    registry.breaker("smtp").unwrap().force_open();
    assert!(
        service.clone().oneshot(()).await.is_err(),
        "the layer's breaker is the registry's"
    );
    let readiness = registry.readiness();
    assert_eq!(readiness.status, Status::Degraded);
    assert_eq!(readiness.issues.len(), 1);
    let issue = &readiness.issues[0];
    assert_eq!(
        (issue.component, issue.name.as_str(), issue.degrades),
        (Component::Breaker, "smtp", true)
    );
    let json = serde_json::to_value(&readiness).unwrap();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["issues"][0]["component"], "breaker");

    // Disabled: calls pass unguarded; worth a note, not a degraded status.
    registry.breaker("smtp").unwrap().disable();
    assert_eq!(service.clone().oneshot(()).await.unwrap(), "sent");
    let readiness = registry.readiness();
    assert_eq!(readiness.status, Status::Ready);
    assert!(!readiness.issues[0].degrades);

    registry.breaker("smtp").unwrap().reset();
    assert_eq!(
        registry.breaker("smtp").unwrap().state(),
        BreakerState::Closed
    );
    assert!(registry.readiness().issues.is_empty());
}

#[tokio::test]
async fn tags_are_invalidated_in_every_cache() {
    let registry = Registry::new();
    let users = cache("users");
    let assets = cache("assets");
    registry.register_cache(users.handle()).unwrap();
    registry.register_cache(assets.handle()).unwrap();
    users.insert(1, "ada".into(), &["org:1"]).await;
    users.insert(2, "bob".into(), &["org:2"]).await;
    assets
        .insert(1, "minutes.pdf".into(), &["org:1", "board:9"])
        .await;

    assert_eq!(registry.cache_invalidate_tags(&["org:1"]).await, 2);
    assert_eq!(users.get(&1).await, None);
    assert_eq!(assets.get(&1).await, None);
    assert_eq!(
        users.get(&2).await.as_deref(),
        Some("bob"),
        "other tags stay"
    );
    assert_eq!(registry.cache_invalidate_tags(&["org:1", "org:2"]).await, 1);
}

#[tokio::test]
async fn warming_picks_the_services_caches() {
    let registry = Registry::new();
    for name in ["users", "users.search", "usersettings", "assets"] {
        let cache = cache(name);
        cache.add_warmup(
            format!("{name}-warmup"),
            move |cache: Cache<u32, String>| async move {
                cache.insert(1, "warm".into(), &[]).await;
                Ok::<_, std::io::Error>(())
            },
        );
        registry.register_cache(cache.handle()).unwrap();
    }
    let reports = registry.warm_caches(Some("users")).await;
    let warmed: Vec<&str> = reports.iter().map(|r| r.cache.as_str()).collect();
    assert_eq!(warmed, ["users", "users.search"], "not 'usersettings'");
    assert_eq!(reports[0].results[0].name, "users-warmup");
    assert_eq!(reports[0].results[0].error, None);
    assert_eq!(registry.warm_caches(None).await.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn alerts_from_every_budget_reach_registry_callbacks() {
    let registry = Registry::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    // A callback given before the budgets are registered...
    registry.on_alert(Arc::new(move |event: &AlertEvent| {
        sink.lock()
            .unwrap()
            .push((event.alert.operation.clone(), event.event));
    }));
    let slow = |name: &str| {
        let layer = MetricsLayer::new(name, MetricsConfig::default()).unwrap();
        let budget = BudgetHandle::attach(
            &layer.handle(),
            BudgetConfig {
                p99: Some(Duration::from_millis(100)),
                min_samples: 2,
                ..BudgetConfig::default()
            },
        )
        .unwrap();
        registry.register_operation(layer.handle()).unwrap();
        registry.register_budget(budget).unwrap();
        layer.layer(service_fn(|()| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, BoxError>(())
        }))
    };
    let reports = slow("reports");
    let exports = slow("exports");
    // ...and one given after.
    let late = Arc::new(Mutex::new(0));
    let counter = late.clone();
    registry.on_alert(Arc::new(move |_: &AlertEvent| {
        *counter.lock().unwrap() += 1
    }));

    for _ in 0..2 {
        reports.clone().oneshot(()).await.unwrap();
    }
    assert_eq!(
        registry.alerts().len(),
        1,
        "reading alerts evaluates the budgets"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..2 {
        exports.clone().oneshot(()).await.unwrap();
    }
    let alerts = registry.alerts();
    let names: Vec<&str> = alerts.iter().map(|a| a.operation.as_str()).collect();
    assert_eq!(names, ["reports", "exports"], "oldest first");
    assert_eq!(
        *events.lock().unwrap(),
        [
            ("reports".to_string(), AlertEventKind::Raised),
            ("exports".to_string(), AlertEventKind::Raised)
        ]
    );
    assert_eq!(*late.lock().unwrap(), 2);

    let json = serde_json::to_value(registry.snapshot()).unwrap();
    assert_eq!(json["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(json["operations"][0]["name"], "exports", "name order");
    assert_eq!(json["budgets"][1]["limits"][0]["breached"], true);
    let readiness = registry.readiness();
    assert_eq!(readiness.status, Status::Ready);
    assert_eq!(readiness.issues.len(), 2);
    assert!(
        readiness
            .issues
            .iter()
            .all(|i| i.component == Component::Budget && !i.degrades)
    );

    // Traffic stops: reading the alerts evaluates the budgets, which clear.
    tokio::time::advance(Duration::from_secs(120)).await;
    assert!(registry.alerts().is_empty());
    assert_eq!(*late.lock().unwrap(), 4);
}
