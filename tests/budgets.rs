//! Performance budgets end to end: an operation slowed past its p95 budget
//! raises an alert — in `/admin/alerts`, `/admin/stats`, the
//! `resilience_budget_breached` metric, and a webhook received by a real local
//! listener (which refuses the first delivery, so the retry is exercised) —
//! and clears when the slow calls have left the window; the breach is logged
//! at warn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use boardroom_tests::{SendExpect, TestApp};
use serde_json::Value;
use tokio::time::Instant;

/// A webhook receiver: records every body; answers `503` to the first one.
#[derive(Clone, Default)]
struct Receiver {
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn receive(State(receiver): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    let mut bodies = receiver.bodies.lock().unwrap();
    bodies.push(body);
    if bodies.len() == 1 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/alerts", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hooks/alerts", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// Collects every JSON log line of the process (one test in this binary).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `resilience_budget_breached{name="debug",budget="p95"}`.
async fn breached_gauge(app: &TestApp) -> Option<f64> {
    let text = app.metrics_text().await;
    text.lines()
        .filter(|line| line.starts_with("resilience_budget_breached{"))
        .find(|line| line.contains(r#"name="debug""#) && line.contains(r#"budget="p95""#))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_operation_raises_an_alert_everywhere_and_it_clears() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let (url, receiver) = start_receiver().await;
    let app = TestApp::spawn_with(|s| {
        let debug = s.services.entry("debug".into()).or_default();
        debug.budget.p95 = Some(Duration::from_millis(100));
        debug.budget.window = Duration::from_secs(10);
        debug.budget.min_samples = 5;
        s.alerts.webhook_url = url;
        s.alerts.webhook_base_delay = Duration::from_millis(50);
        s.alerts.evaluation_interval = Duration::from_millis(200);
    })
    .await;
    let operator = app.service_token();
    assert_eq!(breached_gauge(&app).await, Some(0.0));

    // Eight calls of 300 ms against a 100 ms p95 budget.
    let slow = (0..8).map(|_| app.get("/_debug/sleep?ms=300", None).expect_status(200));
    futures_util::future::join_all(slow).await;

    let alert = eventually(
        "the alert in /admin/alerts",
        Duration::from_secs(30),
        || async {
            let body = app
                .get("/admin/alerts", Some(&operator))
                .expect_status(200)
                .await;
            body["data"]["active"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["operation"] == "debug" && a["budget"] == "p95")
                .cloned()
        },
    )
    .await;
    assert!(alert["observed"].as_f64().unwrap() > 0.1, "{alert}");
    assert_eq!(alert["limit"], 0.1);
    assert!(alert["samples"].as_u64().unwrap() >= 5, "{alert}");
    let id = alert["id"].as_str().unwrap().to_owned();

    assert_eq!(breached_gauge(&app).await, Some(1.0), "the metric says so");
    let stats = app
        .get("/admin/stats", Some(&operator))
        .expect_status(200)
        .await;
    let tile = stats["data"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "debug")
        .unwrap()
        .clone();
    // The stats may have been taken just after the window emptied; only
    // a still-active alert must show as breached.
    if stats["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == id)
    {
        assert_eq!(tile["budget"]["status"], "breached", "{tile}");
    }

    // Logged at warn.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warned = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .any(|line| {
            line["level"] == "WARN"
                && line["fields"]["message"] == "performance budget breached"
                && line["fields"]["operation"] == "debug"
        });
    assert!(warned, "a warn line for the breach:\n{text}");

    // The webhook got it, on the second attempt (the first was refused).
    let raised = eventually("the raised webhook", Duration::from_secs(30), || async {
        let bodies = receiver.bodies.lock().unwrap().clone();
        let attempts = bodies
            .iter()
            .filter(|b| b["id"] == id && b["event"] == "raised")
            .count();
        (attempts >= 2).then(|| bodies[1].clone())
    })
    .await;
    assert_eq!(raised["operation"], "debug");
    assert_eq!(raised["budget"], "p95");
    assert_eq!(raised["source"], "boardroom");
    assert!(raised["text"].as_str().unwrap().contains("p95"), "{raised}");

    // No more slow calls: once they leave the 10 s window, it clears.
    eventually("the alert to clear", Duration::from_secs(60), || async {
        let body = app
            .get("/admin/alerts", Some(&operator))
            .expect_status(200)
            .await;
        body["data"]["active"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    assert_eq!(breached_gauge(&app).await, Some(0.0), "the metric cleared");
    let resolved = eventually("the resolved webhook", Duration::from_secs(30), || async {
        let bodies = receiver.bodies.lock().unwrap().clone();
        bodies
            .into_iter()
            .find(|b| b["id"] == id && b["event"] == "resolved")
    })
    .await;
    assert_eq!(resolved["operation"], "debug");

    // The history lists both events, newest first.
    let body = app
        .get("/admin/alerts", Some(&operator))
        .expect_status(200)
        .await;
    let recent: Vec<&str> = body["data"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"] == id)
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(recent, ["resolved", "raised"]);
}
