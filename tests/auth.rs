//! Bearer-token authentication: every way a token can be wrong is a `401`
//! envelope; a good user token and an operator token are accepted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boardroom::auth::JwtKeys;
use boardroom_tests::{SendExpect, TestApp, expect_error};
use serde_json::json;
use uuid::Uuid;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn assert_unauthorized(
    app: &TestApp,
    token: Option<&str>,
    raw_header: Option<&str>,
) -> String {
    let mut request = app
        .client
        .get(app.url("/v1/users/00000000-0000-0000-0000-000000000001"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(header) = raw_header {
        request = request.header("authorization", header);
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.headers().get("www-authenticate").unwrap(),
        "Bearer"
    );
    let error = expect_error(response, 401, "unauthorized").await;
    error["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn missing_token_is_401() {
    let app = TestApp::spawn().await;
    let message = assert_unauthorized(&app, None, None).await;
    assert!(message.contains("missing"), "{message}");
}

#[tokio::test]
async fn wrong_scheme_and_garbage_are_401() {
    let app = TestApp::spawn().await;
    assert_unauthorized(&app, None, Some("Basic dXNlcjpwYXNz")).await;
    assert_unauthorized(&app, None, Some("Bearer")).await;
    assert_unauthorized(&app, Some("not-a-jwt"), None).await;
}

#[tokio::test]
async fn bad_signature_is_401() {
    let app = TestApp::spawn().await;
    let forged = JwtKeys::new("some-other-secret-entirely")
        .unwrap()
        .mint(Uuid::new_v4(), true, Duration::from_secs(3600))
        .unwrap();
    let message = assert_unauthorized(&app, Some(&forged), None).await;
    assert!(message.contains("signature"), "{message}");
}

#[tokio::test]
async fn expired_token_is_401() {
    let app = TestApp::spawn().await;
    let expired = app.sign(&json!({"sub": Uuid::new_v4(), "exp": now() - 3600}));
    let message = assert_unauthorized(&app, Some(&expired), None).await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn token_without_exp_or_sub_is_401() {
    let app = TestApp::spawn().await;
    let no_exp = app.sign(&json!({"sub": Uuid::new_v4()}));
    let message = assert_unauthorized(&app, Some(&no_exp), None).await;
    assert!(message.contains("exp"), "{message}");
    let no_sub = app.sign(&json!({"exp": now() + 3600}));
    assert_unauthorized(&app, Some(&no_sub), None).await;
    let bad_sub = app.sign(&json!({"sub": "user-42", "exp": now() + 3600}));
    let message = assert_unauthorized(&app, Some(&bad_sub), None).await;
    assert!(message.contains("sub"), "{message}");
}

#[tokio::test]
async fn valid_tokens_are_accepted() {
    let app = TestApp::spawn().await;
    // A Supabase-style user token (with `aud`) for someone without a profile:
    // authenticated, so the answer is about the resource (404), not the token.
    let user = app.sign(&json!({
        "sub": Uuid::new_v4(), "exp": now() + 600, "aud": "authenticated", "role": "authenticated"
    }));
    app.get(
        "/v1/users/00000000-0000-0000-0000-000000000001",
        Some(&user),
    )
    .expect_error(404, "not_found")
    .await;

    // An operator token reads any organization.
    let (_, org) = app.owner_with_org("acme").await;
    let body = app
        .get(
            &format!("/v1/organizations/{org}"),
            Some(&app.service_token()),
        )
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["slug"], "acme");
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let app = TestApp::spawn().await;
    for path in [
        "/health/live",
        "/health/ready",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        let response = app.get(path, None).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}
