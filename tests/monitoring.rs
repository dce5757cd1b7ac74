//! The Prometheus and Grafana artifacts agree with the service: every metric
//! name `config/prometheus/alerts.yml` and the Grafana dashboard use is
//! present in the real `/metrics`, and every Grafana query is valid PromQL
//! (checked by `promtool check rules`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use boardroom_tests::{SendExpect, TestApp};
use serde_json::Value;
use uuid::Uuid;

/// Prefixes of the metrics the service exports (anything else in a query is
/// a function, a label or Prometheus' own `up`).
const PREFIXES: &[&str] = &["resilience_", "boardroom_", "http_server_"];

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The metric names a piece of PromQL (or a whole rules file) mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| PREFIXES.iter().any(|p| word.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// Every `expr` and templating query of the Grafana dashboard.
fn grafana_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push(query.to_owned());
        }
    }
    queries
}

/// Sample names of a Prometheus text exposition (`x_bucket`, `x_sum`, … included).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_metric_the_rules_and_grafana_use_is_exported() {
    let rules = std::fs::read_to_string(repo_file("config/prometheus/alerts.yml")).unwrap();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("config/grafana/dashboards/boardroom.json")).unwrap(),
    )
    .unwrap();
    let from_rules = metric_names(&rules);
    let from_grafana: BTreeSet<String> = grafana_queries(&dashboard)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    // The extraction finds what is obviously there (so this test can fail).
    assert!(
        from_rules.contains("resilience_breaker_state"),
        "{from_rules:?}"
    );
    assert!(
        from_grafana.contains("resilience_operation_duration_seconds_bucket"),
        "{from_grafana:?}"
    );

    // Traffic through every stack, so every series has been touched.
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("monitoring").await;
    app.get(&format!("/v1/organizations/{org}"), Some(&owner))
        .expect_status(200)
        .await;
    app.get(&format!("/v1/users/{}", Uuid::new_v4()), Some(&owner))
        .expect_status(404)
        .await;
    app.get("/_debug/sleep?ms=1", None).expect_status(200).await;
    app.get("/health/ready", None).expect_status(200).await;
    let metrics = app.metrics_text().await;
    let exported = exposed(&metrics);

    let mut missing = Vec::new();
    for (source, names) in [("alerts.yml", &from_rules), ("grafana", &from_grafana)] {
        for name in names {
            if !exported.contains(name) {
                missing.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "used but not in /metrics: {missing:#?}\nexported: {exported:#?}"
    );
    // The database breaker (built before the first request) is exported too.
    assert!(
        metrics.contains(r#"resilience_breaker_state{name="database",state="closed"} 1"#),
        "{metrics}"
    );
}

#[test]
fn every_grafana_query_is_valid_promql() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("config/grafana/dashboards/boardroom.json")).unwrap(),
    )
    .unwrap();
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, query) in grafana_queries(&dashboard).iter().enumerate() {
        if query.starts_with("label_values(") {
            continue; // a Grafana function, not PromQL
        }
        let promql = query
            .replace("$__rate_interval", "1m")
            .replace("$service", ".*");
        rules.push_str(&format!(
            "      - record: grafana:query_{i}\n        expr: {}\n",
            serde_json::to_string(&promql).unwrap()
        ));
    }
    let dir = std::env::temp_dir().join(format!("boardroom-grafana-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("grafana.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let output = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool is installed (scripts/test installs Debian's prometheus)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "{}\n{}\n{rules}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
