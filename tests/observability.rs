//! Request ids, Prometheus metrics, health probes and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io::Write, process::Stdio};

use boardroom_tests::{SendExpect, TestApp, expect_error, expect_status};
use serde_json::Value;

#[tokio::test]
async fn request_ids_are_generated_or_propagated() {
    let app = TestApp::spawn().await;
    let response = app.get("/health/live", None).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");

    let response = app
        .client
        .get(app.url("/v1/nowhere"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-123");
    let error = expect_error(response, 404, "not_found").await;
    assert_eq!(error["requestId"], "trace-me-123");
}

#[tokio::test]
async fn metrics_are_labelled_by_route_template() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("metrics-org").await;
    let (user, _) = app.member(&owner, &org, "member").await;
    app.get(&format!("/v1/users/{user}"), Some(&owner))
        .expect_status(200)
        .await;
    let response = app
        .get("/v1/users/not-a-uuid", Some(&owner))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = app.get("/metrics", None).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"http_server_requests_total{method="GET",route="/v1/users/{id}",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/users/{id}",status="400""#),
        "{text}"
    );
    assert!(!text.contains(&user), "raw ids never become labels");
    assert!(
        !text.contains("not-a-uuid"),
        "raw paths never become labels"
    );
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"));
    assert!(text.contains("http_server_request_duration_seconds_bucket{"));
    assert!(text.contains("# TYPE http_server_active_requests gauge"));
    assert!(text.contains("# HELP http_server_requests_total"));
}

/// `promtool check metrics` is silent on `/metrics` (skipped with a notice
/// when promtool is not installed; `.ci/run` installs it).
#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let app = TestApp::spawn().await;
    app.get("/health/live", None).send().await.unwrap();
    let text = app.metrics_text().await;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("promtool not installed; skipping");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn health_reports_each_check() {
    let app = TestApp::spawn().await;
    let body = expect_status(app.get("/health/live", None).send().await.unwrap(), 200).await;
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["status"], "ok");

    for path in ["/health/ready", "/health"] {
        let body = expect_status(app.get(path, None).send().await.unwrap(), 200).await;
        let data = &body["data"];
        assert!(
            matches!(data["status"].as_str(), Some("ok" | "degraded")),
            "{body}"
        );
        let database = &data["checks"]["database"];
        assert_eq!(database["status"], "ok", "{body}");
        assert!(database["latencyMs"].as_f64().unwrap() >= 0.0);
        let pool = &data["checks"]["pool"];
        for field in ["size", "idle", "inUse", "max"] {
            assert!(pool[field].is_u64(), "{field}: {body}");
        }
        assert_eq!(pool["max"], 5);
        assert!(data["checks"]["memory"]["rssBytes"].as_u64().unwrap() > 1_000_000);
        assert!(data["version"].is_string());
    }
}

#[tokio::test]
async fn readiness_is_503_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    app.pool.close().await;
    let body = app
        .client
        .get(app.url("/health/ready"))
        .header("x-request-id", "ready-check")
        .expect_status(503)
        .await;
    assert_eq!(body["success"], false);
    assert_eq!(body["data"]["status"], "down");
    assert_eq!(body["data"]["checks"]["database"]["status"], "down");
    assert_eq!(body["data"]["checks"]["memory"]["status"], "ok");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(body["error"]["requestId"], "ready-check");
    // Liveness does not depend on the database.
    expect_status(app.get("/health/live", None).send().await.unwrap(), 200).await;
}

#[tokio::test]
async fn openapi_lists_every_route_and_docs_load() {
    let app = TestApp::spawn().await;
    let api: Value = expect_status(app.get("/openapi.json", None).send().await.unwrap(), 200).await;
    assert!(api["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/health/live", "get"),
        ("/health/ready", "get"),
        ("/health", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/admin/stats", "get"),
        ("/admin/stats/stream", "get"),
        ("/admin/alerts", "get"),
        ("/admin/breakers/{name}/reset", "post"),
        ("/admin/breakers/{name}/open", "post"),
        ("/admin/breakers/{name}/disable", "post"),
        ("/admin/cache/invalidate", "post"),
        ("/admin/cache/warm", "post"),
        ("/dashboard", "get"),
        ("/v1/organizations", "post"),
        ("/v1/organizations/{id}", "get"),
        ("/v1/organizations/{id}/members", "post"),
        ("/v1/organizations/{id}/members", "get"),
        ("/v1/users", "post"),
        ("/v1/users", "get"),
        ("/v1/users/{id}/activity", "post"),
        ("/v1/users/{id}/activity", "get"),
        ("/v1/users/{id}", "get"),
        ("/v1/users/{id}", "patch"),
        ("/v1/users/{id}", "delete"),
        ("/v1/users/bulk-update", "post"),
        ("/v1/jobs/{id}", "get"),
        ("/v1/jobs/{id}/events", "get"),
        ("/v1/assets", "post"),
        ("/v1/assets", "get"),
        ("/v1/assets/bulk", "post"),
        ("/v1/assets/{id}", "get"),
        ("/v1/assets/{id}", "patch"),
        ("/v1/assets/{id}", "delete"),
        ("/v1/assets/{id}/thumbnail", "get"),
        ("/v1/assets/{id}/download-url", "post"),
        ("/v1/organizations/{id}/assets/analytics", "get"),
        ("/v1/files/{token}", "get"),
        ("/v1/notifications", "post"),
        ("/v1/notifications/bulk", "post"),
        ("/v1/notifications/{id}", "get"),
        ("/v1/users/{id}/notification-preferences", "get"),
        ("/v1/users/{id}/notification-preferences", "put"),
        ("/v1/me/notifications", "get"),
        ("/v1/me/notifications/{id}/read", "post"),
        ("/v1/me/notifications/stream", "get"),
        ("/v1/organizations/{id}/notifications/analytics", "get"),
        ("/t/o/{token}", "get"),
        ("/t/c/{token}", "get"),
    ];
    let paths = api["paths"].as_object().unwrap();
    let operations: usize = paths
        .values()
        .map(|item| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .count()
        })
        .sum();
    assert_eq!(
        operations,
        expected.len(),
        "no undocumented or unexpected operations"
    );
    for (path, method) in expected {
        let operation = &api["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        assert!(operation["responses"]["500"].is_object(), "{method} {path}");
        // A download link is its own credential (no bearer token).
        if path.starts_with("/v1/files/") {
            assert!(operation["security"].is_null(), "{method} {path}");
            assert!(operation["responses"]["403"].is_object(), "{method} {path}");
        } else if path.starts_with("/v1/") || path.starts_with("/admin/") {
            assert_eq!(operation["security"][0]["bearer"], Value::Array(vec![]));
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        }
    }
    assert_eq!(
        api["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(api["components"]["schemas"]["ErrorEnvelope"].is_object());
    let create_user = &api["paths"]["/v1/users"]["post"];
    assert!(create_user["requestBody"]["content"]["application/json"].is_object());
    assert!(create_user["responses"]["201"]["content"]["application/json"]["schema"].is_object());

    let response = app.get("/docs/", None).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    let response = app
        .get("/docs/swagger-initializer.js", None)
        .send()
        .await
        .unwrap();
    let js = response.text().await.unwrap();
    assert!(
        js.contains("/openapi.json"),
        "the UI loads our document: {js}"
    );
}

#[tokio::test]
async fn openapi_links_lead_from_each_created_id_to_the_routes_taking_it() {
    let app = TestApp::spawn().await;
    let api: Value = expect_status(app.get("/openapi.json", None).send().await.unwrap(), 200).await;
    let links = |path: &str, status: &str| -> Vec<(String, String)> {
        api["paths"][path]["post"]["responses"][status]["links"]
            .as_object()
            .unwrap_or_else(|| panic!("no links on POST {path} {status}"))
            .values()
            .map(|link| {
                (
                    link["operationId"].as_str().unwrap().to_owned(),
                    link["parameters"]["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    // Every linked operationId exists, and takes `{id}` under the prefix.
    let operation_path = |id: &str| -> String {
        api["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, item)| {
                item.as_object()
                    .unwrap()
                    .values()
                    .any(|op| op["operationId"] == id)
            })
            .map(|(path, _)| path.clone())
            .unwrap_or_else(|| panic!("operationId {id} is not in the document"))
    };
    let users = links("/v1/users", "201");
    assert!(users.len() >= 6, "{users:?}");
    for (operation, parameter) in &users {
        assert_eq!(parameter, "$response.body#/data/id");
        assert!(operation_path(operation).starts_with("/v1/users/{id}"));
    }
    for (source, status, pointer, prefix) in [
        (
            "/v1/organizations",
            "201",
            "/data/id",
            "/v1/organizations/{id}",
        ),
        ("/v1/assets", "201", "/data/id", "/v1/assets/{id}"),
        (
            "/v1/notifications",
            "202",
            "/data/notificationId",
            "/v1/notifications/{id}",
        ),
        (
            "/v1/users/bulk-update",
            "202",
            "/data/jobId",
            "/v1/jobs/{id}",
        ),
        ("/v1/assets/bulk", "202", "/data/jobId", "/v1/jobs/{id}"),
        (
            "/v1/notifications/bulk",
            "202",
            "/data/jobId",
            "/v1/jobs/{id}",
        ),
    ] {
        let found = links(source, status);
        assert!(!found.is_empty(), "{source}");
        for (operation, parameter) in &found {
            assert_eq!(parameter, &format!("$response.body#{pointer}"));
            assert!(
                operation_path(operation).starts_with(prefix),
                "{source} -> {operation}"
            );
        }
    }
}
