//! Every admin action is logged at info with the operator's id (the log
//! lines are captured by a process-wide subscriber, so this test has a
//! binary of its own).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use boardroom_tests::{SendExpect, TestApp};
use serde_json::{Value, json};
use uuid::Uuid;

/// Collects every JSON log line of the process (the only test in this binary).
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_admin_action_is_logged_with_the_operator_id() {
    let buffer = LogBuffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let app = TestApp::spawn().await;
    let operator_id = Uuid::new_v4();
    let operator = app.sign(&json!({
        "sub": operator_id,
        "role": "service_role",
        "exp": 4_102_444_800u64,
    }));
    let actions = [
        ("/admin/breakers/users/open", json!({}), "breaker.open"),
        (
            "/admin/breakers/users/disable",
            json!({}),
            "breaker.disable",
        ),
        ("/admin/breakers/users/reset", json!({}), "breaker.reset"),
        (
            "/admin/cache/invalidate",
            json!({"tags": ["x"]}),
            "cache.invalidate",
        ),
        ("/admin/cache/warm", json!({}), "cache.warm"),
    ];
    for (path, body, _) in &actions {
        app.post_json(path, &operator, body)
            .expect_status(200)
            .await;
    }
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for (path, _, action) in actions {
        let line = logs
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| {
                line["fields"]["message"] == "admin action" && line["fields"]["action"] == action
            })
            .unwrap_or_else(|| panic!("no log line for {path}:\n{logs}"));
        assert_eq!(
            line["fields"]["operator"],
            operator_id.to_string(),
            "{line}"
        );
        assert_eq!(line["level"], "INFO");
    }
}
