//! The admin API and the stats stream: operators only (`401` without a
//! token, `403` for everyone else), breaker actions that really change what
//! callers get, cache actions, clear `4xx` envelopes for bad input, and every
//! route in the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use boardroom_tests::{SendExpect, TestApp, expect_error};
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// Every admin route, with a body that would be accepted from an operator.
fn admin_routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/admin/stats", None),
        (Method::GET, "/admin/alerts", None),
        (Method::GET, "/admin/stats/stream", None),
        (Method::POST, "/admin/breakers/users/reset", None),
        (Method::POST, "/admin/breakers/users/open", None),
        (Method::POST, "/admin/breakers/users/disable", None),
        (
            Method::POST,
            "/admin/cache/invalidate",
            Some(json!({"tags": ["users"]})),
        ),
        (
            Method::POST,
            "/admin/cache/warm",
            Some(json!({"service": "users"})),
        ),
    ]
}

#[tokio::test]
async fn only_operators_reach_admin_routes_and_the_stream() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("admin-refused").await;
    let (_, member) = app.member(&owner, &org, "admin").await;
    for (method, path, body) in admin_routes() {
        for token in [None, Some(owner.as_str()), Some(member.as_str())] {
            let mut request = app.client.request(method.clone(), app.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = &body {
                request = request.json(body);
            }
            let (status, code) = match token {
                None => (401, "unauthorized"),
                Some(_) => (403, "forbidden"),
            };
            let error = request.expect_error(status, code).await;
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains(if status == 403 {
                        "service_role"
                    } else {
                        "token"
                    }),
                "{method} {path}: {error}"
            );
        }
    }
    // Nothing a refused caller asked for happened.
    let stats = app
        .get("/admin/stats", Some(&app.service_token()))
        .expect_status(200)
        .await;
    assert_eq!(breaker(&stats, "users")["state"], "closed", "{stats}");
}

#[tokio::test]
async fn every_admin_route_is_in_the_openapi_document() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", None).expect_status(200).await;
    for (method, path, _) in admin_routes() {
        let template = path.replace("/users/", "/{name}/");
        let operation = &doc["paths"][&template][method.as_str().to_lowercase()];
        assert!(operation.is_object(), "{method} {template} missing");
        assert_eq!(operation["tags"][0], "admin", "{template}");
        assert!(operation["security"].is_array(), "{template} is secured");
        assert!(operation["responses"]["403"].is_object(), "{template}");
    }
    assert!(doc["paths"]["/dashboard"]["get"].is_object());
}

fn breaker<'a>(stats: &'a Value, name: &str) -> &'a Value {
    let tile = stats["data"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no tile {name}: {stats}"));
    &tile["breaker"]
}

#[tokio::test]
async fn breaker_actions_change_what_callers_get() {
    let app = TestApp::spawn().await;
    let operator = app.service_token();
    let (owner, org) = app.owner_with_org("admin-breakers").await;
    let (user, _) = app.member(&owner, &org, "member").await;
    let path = format!("/v1/users/{user}");
    app.get(&path, Some(&owner)).expect_status(200).await;

    // Forced open: callers get 503 + Retry-After at once; readiness says why.
    let action = app
        .post_json("/admin/breakers/users/open", &operator, &json!({}))
        .expect_status(200)
        .await;
    assert_eq!(
        action["data"],
        json!({"name": "users", "action": "open", "previousState": "closed", "state": "forced_open"})
    );
    let response = app.get(&path, Some(&owner)).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    expect_error(response, 503, "unavailable").await;
    let stats = app
        .get("/admin/stats", Some(&operator))
        .expect_status(200)
        .await;
    assert_eq!(breaker(&stats, "users")["state"], "forced_open");
    assert_eq!(stats["data"]["status"], "degraded");
    let ready = app.get("/health/ready", None).expect_status(200).await;
    assert_eq!(
        ready["data"]["checks"]["services"]["breakers"]["users"],
        "forced_open"
    );

    // Disabled: calls pass unguarded.
    let action = app
        .client
        .post(app.url("/admin/breakers/users/disable"))
        .bearer_auth(&operator)
        .expect_status(200)
        .await;
    assert_eq!(action["data"]["state"], "disabled");
    app.get(&path, Some(&owner)).expect_status(200).await;

    // Reset: closed again.
    let action = app
        .client
        .post(app.url("/admin/breakers/users/reset"))
        .bearer_auth(&operator)
        .expect_status(200)
        .await;
    assert_eq!(action["data"]["previousState"], "disabled");
    assert_eq!(action["data"]["state"], "closed");
    app.get(&path, Some(&owner)).expect_status(200).await;

    // The dependency breaker is reachable by name too; an unknown name is a 404.
    app.client
        .post(app.url("/admin/breakers/database/reset"))
        .bearer_auth(&operator)
        .expect_status(200)
        .await;
    let error = app
        .client
        .post(app.url("/admin/breakers/payments/open"))
        .bearer_auth(&operator)
        .expect_error(404, "not_found")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("payments"),
        "{error}"
    );
}

#[tokio::test]
async fn cache_actions_and_bad_input_are_clear_4xx() {
    let app = TestApp::spawn().await;
    let operator = app.service_token();
    let removed = app
        .post_json(
            "/admin/cache/invalidate",
            &operator,
            &json!({"tags": ["users", "org:1"]}),
        )
        .expect_status(200)
        .await;
    assert_eq!(
        removed["data"],
        json!({"tags": ["users", "org:1"], "removed": 0})
    );

    // A cached profile (tagged with its organization) is really dropped.
    let (owner, org) = app.owner_with_org("admin-cache").await;
    let (user, _) = app.member(&owner, &org, "member").await;
    app.get(&format!("/v1/users/{user}"), Some(&owner))
        .expect_status(200)
        .await;
    let removed = app
        .post_json(
            "/admin/cache/invalidate",
            &operator,
            &json!({"tags": [format!("org:{org}")]}),
        )
        .expect_status(200)
        .await;
    assert!(
        removed["data"]["removed"].as_u64().unwrap() >= 1,
        "{removed}"
    );

    let error = app
        .post_json("/admin/cache/invalidate", &operator, &json!({"tags": []}))
        .expect_error(422, "validation_failed")
        .await;
    assert_eq!(error["field"], "tags");
    app.post_json("/admin/cache/invalidate", &operator, &json!({"tags": "x"}))
        .expect_error(400, "invalid_input")
        .await;
    app.client
        .post(app.url("/admin/cache/invalidate"))
        .bearer_auth(&operator)
        .header("content-type", "application/json")
        .body("{not json")
        .expect_error(400, "invalid_input")
        .await;

    let warmed = app
        .post_json("/admin/cache/warm", &operator, &json!({"service": "users"}))
        .expect_status(200)
        .await;
    assert_eq!(warmed["data"]["service"], "users");
    assert!(warmed["data"]["caches"].is_array());
    app.post_json("/admin/cache/warm", &operator, &json!({}))
        .expect_status(200)
        .await;
    let error = app
        .post_json(
            "/admin/cache/warm",
            &operator,
            &json!({"service": "billing"}),
        )
        .expect_error(404, "not_found")
        .await;
    assert!(error["message"].as_str().unwrap().contains("billing"));
}

#[tokio::test]
async fn stats_show_every_service_and_dependency() {
    let app = TestApp::spawn().await;
    let operator = app.service_token();
    let (owner, _) = app.owner_with_org("admin-stats").await;
    app.get(&format!("/v1/users/{}", Uuid::new_v4()), Some(&owner))
        .expect_status(404)
        .await;
    let stats = app
        .get("/admin/stats", Some(&operator))
        .expect_status(200)
        .await;
    let services = stats["data"]["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for name in ["database", "debug", "organizations", "users"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let users = services.iter().find(|s| s["name"] == "users").unwrap();
    assert_eq!(users["kind"], "service");
    assert!(users["requests"]["count"].as_u64().unwrap() >= 1, "{users}");
    assert_eq!(users["concurrency"]["limit"], 64);
    assert_eq!(users["budget"]["status"], "ok");
    let database = services.iter().find(|s| s["name"] == "database").unwrap();
    assert_eq!(database["kind"], "dependency");
    assert_eq!(database["breaker"]["state"], "closed");
    assert!(stats["data"]["layers"]["operations"].is_array());
}

#[tokio::test]
async fn the_stream_sends_stats_events_every_interval() {
    let app =
        TestApp::spawn_with(|s| s.dashboard.stream_interval = Duration::from_millis(200)).await;
    let response = app
        .get("/admin/stats/stream", Some(&app.service_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while text.matches("event: stats").count() < 3 {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("three events within 20 s")
            .expect("the stream stays open")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap();
    let stats: Value = serde_json::from_str(first).unwrap();
    assert!(stats["services"].as_array().unwrap().len() >= 3, "{stats}");
    assert!(stats["at"].is_string());
}

#[tokio::test]
async fn an_open_stream_does_not_hold_up_a_graceful_stop() {
    let app = TestApp::spawn_with(|s| s.server.shutdown_grace = Duration::from_secs(30)).await;
    let response = app
        .get("/admin/stats/stream", Some(&app.service_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    body.next().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    // The stream ends at once instead of running into the 30 s grace period.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended when shutdown began");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped well within its grace period")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
}
