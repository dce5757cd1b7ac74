//! Bad input and protocol errors all answer in the envelope, naming the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use boardroom_tests::{SendExpect, TestApp, expect_error, expect_status};
use serde_json::json;

#[tokio::test]
async fn malformed_json_is_400() {
    let app = TestApp::spawn().await;
    let token = app.service_token();
    let error = app
        .client
        .post(app.url("/v1/organizations"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"name": "Acme", "slug": "#)
        .expect_error(400, "invalid_input")
        .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{error}"
    );
}

#[tokio::test]
async fn wrong_type_missing_field_and_unknown_enum_name_the_field() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;

    let error = app
        .post_json(
            "/v1/organizations",
            &owner,
            &json!({"name": "Acme", "slug": 42}),
        )
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "slug");
    assert!(
        error["message"].as_str().unwrap().contains("slug"),
        "{error}"
    );

    let error = app
        .post_json("/v1/organizations", &owner, &json!({"name": "Acme"}))
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "slug");

    let error = app
        .post_json(
            "/v1/users",
            &owner,
            &json!({"email": "a@b.org", "firstName": "A", "lastName": "B",
                    "organizationId": org, "role": "boss"}),
        )
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "role");
    assert!(
        error["message"].as_str().unwrap().contains("boss"),
        "{error}"
    );

    let response = app
        .post_json(
            "/v1/users",
            &owner,
            &json!({"email": "a@b.org", "firstName": "A", "lastName": "B",
                    "organizationId": "not-a-uuid", "role": "member"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 400, "invalid_input").await["field"],
        "organizationId"
    );

    let error = app
        .post_json(
            "/v1/organizations",
            &owner,
            &json!({"name": "A", "slug": "ab", "extra": 1}),
        )
        .expect_error(400, "invalid_input")
        .await;
    assert!(
        error["message"].as_str().unwrap().contains("extra"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_uuid_in_path_and_bad_query_are_400() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;
    let error = app
        .get("/v1/users/not-a-uuid", Some(&owner))
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "id");

    let error = app
        .get(
            &format!("/v1/organizations/{org}/members?limit=abc"),
            Some(&owner),
        )
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "limit");

    let response = app
        .get(
            &format!("/v1/organizations/{org}/members?limit=0"),
            Some(&owner),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 400, "invalid_input").await["field"],
        "limit"
    );

    let body = app
        .get(
            &format!("/v1/organizations/{org}/members?limit=1&offset=0"),
            Some(&owner),
        )
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["members"].as_array().unwrap().len(), 1);

    // A huge offset is an empty page, not an overflow.
    let body = app
        .get(
            &format!(
                "/v1/organizations/{org}/members?limit=500&offset={}",
                i64::MAX
            ),
            Some(&owner),
        )
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["pagination"]["hasMore"], false);
    assert_eq!(body["data"]["members"], serde_json::json!([]));
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_is_405() {
    let app = TestApp::spawn().await;
    let response = app.get("/v1/nothing-here", None).send().await.unwrap();
    let error = expect_error(response, 404, "not_found").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/v1/nothing-here")
    );

    let response = app
        .client
        .put(app.url("/v1/organizations"))
        .send()
        .await
        .unwrap();
    let allow = response
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("POST"), "{allow}");
    expect_error(response, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = TestApp::spawn_with(|s| s.server.body_limit = 1024).await;
    let token = app.service_token();
    let big = json!({"name": "x".repeat(4096), "slug": "big"});
    app.post_json("/v1/organizations", &token, &big)
        .expect_error(413, "payload_too_large")
        .await;

    // Without Content-Length (chunked), the limit holds while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"name\": \"".to_vec()),
        Ok(vec![b'x'; 4096]),
        Ok(b"\", \"slug\": \"big\"}".to_vec()),
    ];
    app.client
        .post(app.url("/v1/organizations"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .expect_error(413, "payload_too_large")
        .await;
}

#[tokio::test]
async fn non_json_content_type_is_415() {
    let app = TestApp::spawn().await;
    app.client
        .post(app.url("/v1/organizations"))
        .bearer_auth(app.service_token())
        .header("content-type", "text/plain")
        .body(r#"{"name": "Acme", "slug": "acme"}"#)
        .expect_error(415, "unsupported_media_type")
        .await;
    app.client
        .post(app.url("/v1/organizations"))
        .bearer_auth(app.service_token())
        .body(r#"{"name": "Acme", "slug": "acme"}"#)
        .expect_error(415, "unsupported_media_type")
        .await;
}

#[tokio::test]
async fn a_panicking_handler_is_a_500_envelope_and_the_next_request_works() {
    let app = TestApp::spawn().await;
    let response = app.get("/_debug/panic", None).send().await.unwrap();
    let error = expect_error(response, 500, "internal").await;
    assert!(
        !error["message"].as_str().unwrap().contains("deliberate"),
        "the panic message is logged, not sent: {error}"
    );
    let response = app.get("/health/live", None).send().await.unwrap();
    expect_status(response, 200).await;
    let response = app.get("/_debug/panic", None).send().await.unwrap();
    expect_error(response, 500, "internal").await;
}

#[tokio::test]
async fn a_lost_database_is_503_with_retry_after_never_500() {
    let app = TestApp::spawn().await;
    let token = app.service_token();
    app.pool.close().await;
    let response = app
        .post_json(
            "/v1/organizations",
            &token,
            &json!({"name": "A", "slug": "acme"}),
        )
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let error = expect_error(response, 503, "unavailable").await;
    assert_eq!(error["retryAfter"], retry_after);
    let message = error["message"].as_str().unwrap();
    assert!(
        !message.contains("pool"),
        "no database error text: {message}"
    );
}

#[tokio::test]
async fn a_request_over_the_timeout_is_a_503_envelope() {
    let app = TestApp::spawn_with(|s| {
        s.server.request_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let response = app.get("/_debug/sleep?ms=5000", None).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let error = expect_error(response, 503, "unavailable").await;
    assert!(
        error["message"].as_str().unwrap().contains("200ms"),
        "{error}"
    );
    let response = app.get("/_debug/sleep?ms=10", None).send().await.unwrap();
    expect_status(response, 200).await;
}
