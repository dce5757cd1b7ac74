//! Bulk jobs: `POST /v1/users/bulk-update`, `GET /v1/jobs/{id}` and its SSE
//! stream, against the real app and PostgreSQL.
//!
//! Large data sets are seeded with one `INSERT … SELECT generate_series`
//! through the test's own pool, not thousands of HTTP calls. Every wait is a
//! bounded poll with a generous deadline (the machine is shared and slow).
//! The crash test on the real binary is `crates/boardroom/tests/jobs_crash.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use boardroom_tests::{SendExpect, TestApp, expect_status};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};
use uuid::Uuid;

/// Inserts `count` users who are members of `org` with `role`; returns their ids.
async fn seed_users(app: &TestApp, org: &str, count: i64, role: &str) -> Vec<Uuid> {
    let prefix = Uuid::new_v4().simple().to_string();
    sqlx::query_scalar(
        "WITH new_users AS (
             INSERT INTO users (id, email, first_name, last_name)
             SELECT gen_random_uuid(), $2 || '-' || g || '@example.org', 'First', 'Last'
             FROM generate_series(1, $1) AS g
             RETURNING id),
         joined AS (
             INSERT INTO memberships (organization_id, user_id, role)
             SELECT $3, id, $4 FROM new_users)
         SELECT id FROM new_users",
    )
    .bind(count)
    .bind(prefix)
    .bind(org.parse::<Uuid>().unwrap())
    .bind(role)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn ids_json(ids: &[Uuid]) -> Value {
    json!(ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
}

/// Posts a bulk update; returns the job id (asserting `202` and `Location`).
async fn post_bulk(app: &TestApp, token: &str, body: &Value) -> String {
    let response = app
        .post_json("/v1/users/bulk-update", token, body)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_status(response, 202).await;
    let id = body["data"]["jobId"].as_str().unwrap().to_owned();
    assert_eq!(location.as_deref(), Some(format!("/v1/jobs/{id}").as_str()));
    id
}

/// Polls `GET /v1/jobs/{id}` until the job is final; returns its `data`.
async fn wait_final(app: &TestApp, token: &str, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let job = app
            .get(&format!("/v1/jobs/{id}"), Some(token))
            .expect_status(200)
            .await["data"]
            .clone();
        if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap()) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job not final within {within:?}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads `GET /v1/jobs/{id}/events` until the server ends the stream:
/// (event name, data) in order.
async fn read_events(
    app: &TestApp,
    token: &str,
    id: &str,
    within: Duration,
) -> Vec<(String, Value)> {
    // No client timeout: the stream may last longer than any request should.
    let client = reqwest::Client::new();
    let response = client
        .get(app.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Some(chunk) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .unwrap_or_else(|_| panic!("the event stream did not end within {within:?}: {events:?}"))
    {
        buffer.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = Some(value.trim().to_owned());
                } else if let Some(value) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(value.trim()).unwrap());
                }
            }
            // Keep-alive comments carry neither.
            if let (Some(name), Some(data)) = (name, data) {
                events.push((name, data));
            }
        }
    }
    events
}

async fn count(app: &TestApp, sql: &str, job: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(job.parse::<Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_are_updated_with_progress_events_in_order() {
    let app = TestApp::spawn().await;
    let (token, org) = app.owner_with_org("bulk-board").await;
    let users = seed_users(&app, &org, 10_000, "member").await;

    let job = post_bulk(
        &app,
        &token,
        &json!({"userIds": ids_json(&users), "updates": {"designation": "Bulk Director"}, "batchSize": 500}),
    )
    .await;
    let events = read_events(&app, &token, &job, Duration::from_secs(180)).await;

    // The current state first, then one event per batch without gaps, then the end.
    let (first, state) = &events[0];
    assert_eq!(first, "state", "{events:?}");
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    let mut expected = state["processed"].as_i64().unwrap();
    let progress: Vec<&Value> = events[1..events.len() - 1]
        .iter()
        .map(|(name, data)| {
            assert_eq!(name, "progress", "{events:?}");
            data
        })
        .collect();
    for event in &progress {
        expected = (expected + 500).min(10_000);
        assert_eq!(
            event["processed"], expected,
            "batches in order, none skipped"
        );
        assert_eq!(event["id"], json!(job));
    }
    assert_eq!(expected, 10_000, "the events reach the total");
    assert_eq!(done["id"], json!(job));
    assert_eq!(done["status"], "completed");
    assert_eq!(done["kind"], "users.bulk_update");
    assert_eq!(done["total"], 10_000);
    assert_eq!(done["processed"], 10_000);
    assert_eq!(done["succeeded"], 10_000);
    assert_eq!(done["failed"], 0);
    assert_eq!(done["errors"], json!([]));

    // The counts are the database's.
    let changed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE designation = 'Bulk Director'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(changed, 10_000);
    let audited = count(
        &app,
        "SELECT count(DISTINCT user_id) FROM user_audit WHERE job_id = $1",
        &job,
    )
    .await;
    assert_eq!(audited, 10_000);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM user_audit WHERE job_id = $1",
            &job
        )
        .await,
        10_000,
        "each user changed once"
    );

    let body = app
        .get(&format!("/v1/jobs/{job}"), Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["succeeded"], 10_000);
    assert!(body["data"]["createdAt"].is_string());
    assert!(body["data"]["finishedAt"].is_string());

    // A client connecting late gets the current (final) state, then the end.
    let late = read_events(&app, &token, &job, Duration::from_secs(30)).await;
    let names: Vec<&str> = late.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["state", "done"]);
    assert_eq!(late[0].1["processed"], 10_000);
    assert_eq!(late[0].1["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_item_errors_are_listed_without_failing_the_batch() {
    let app = TestApp::spawn().await;
    let (owner_a, org_a) = app.owner_with_org("tenant-a").await;
    let (owner_b, org_b) = app.owner_with_org("tenant-b").await;
    let (_admin, admin) = app.member(&owner_a, &org_a, "admin").await;
    let (first, _) = app.member(&owner_a, &org_a, "member").await;
    let (second, _) = app.member(&owner_a, &org_a, "member").await;
    let (owner, _) = app.member(&owner_a, &org_a, "owner").await;
    let (other_tenant, _) = app.member(&owner_b, &org_b, "member").await;
    let unknown = Uuid::new_v4().to_string();
    // Cached profiles before the job must not survive it.
    let operator = app.service_token();
    for user in [&first, &second] {
        app.get(&format!("/v1/users/{user}"), Some(&operator))
            .expect_status(200)
            .await;
    }

    let job = post_bulk(
        &app,
        &admin,
        &json!({
            "userIds": [first, unknown, other_tenant, owner, second],
            "updates": {"lastName": "Bulkwell"},
            "batchSize": 2,
        }),
    )
    .await;
    let done = wait_final(&app, &admin, &job, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["processed"], 5);
    assert_eq!(done["succeeded"], 2);
    assert_eq!(done["failed"], 3);
    assert_eq!(
        done["errors"],
        json!([
            {"item": unknown, "message": "user not found"},
            {"item": other_tenant, "message": "user not found"},
            {"item": owner, "message": "not allowed: only admins and owners of the user's \
                                       organization change it (only owners change owners)"},
        ]),
        "{done}"
    );
    for (user, last_name) in [
        (&first, "Bulkwell"),
        (&second, "Bulkwell"),
        (&owner, "Lovelace"),
        (&other_tenant, "Lovelace"),
    ] {
        let body = app
            .get(&format!("/v1/users/{user}"), Some(&operator))
            .expect_status(200)
            .await;
        assert_eq!(body["data"]["lastName"], last_name, "{user}");
    }

    // A value that is invalid for one user only: an email can be one user's.
    let job = post_bulk(
        &app,
        &admin,
        &json!({"userIds": [first, second], "updates": {"email": "shared@example.org"}}),
    )
    .await;
    let done = wait_final(&app, &admin, &job, Duration::from_secs(60)).await;
    assert_eq!(done["succeeded"], 1, "{done}");
    assert_eq!(
        done["errors"],
        json!([{"item": second, "message": "a user with this email already exists"}])
    );
    let body = app
        .get(&format!("/v1/users/{first}"), Some(&admin))
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["email"], "shared@example.org");
}

#[tokio::test]
async fn bad_input_is_a_4xx_naming_the_field() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("bad-input").await;
    let (user, member) = app.member(&owner, &org, "member").await;
    let valid = |extra: Value| {
        let mut body = json!({"userIds": [user], "updates": {"lastName": "X"}});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let cases = [
        (json!({"userIds": []}), 422, "userIds"),
        (json!({"batchSize": 0}), 422, "batchSize"),
        (json!({"batchSize": 5001}), 422, "batchSize"),
        (json!({"updates": {}}), 422, "updates"),
        (
            json!({"updates": {"firstName": "  "}}),
            422,
            "updates.firstName",
        ),
        (
            json!({"updates": {"email": "not-an-email"}}),
            422,
            "updates.email",
        ),
        (
            json!({"callbackUrl": "ftp://example.org/hook"}),
            422,
            "callbackUrl",
        ),
        (json!({"callbackUrl": "not a url"}), 422, "callbackUrl"),
        (json!({"userIds": [user, "not-a-uuid"]}), 400, "userIds[1]"),
        (json!({"batchSize": "ten"}), 400, "batchSize"),
        (json!({"updates": {"shoeSize": 42}}), 400, "updates"),
    ];
    for (extra, status, field) in cases {
        let code = if status == 400 {
            "invalid_input"
        } else {
            "validation_failed"
        };
        let response = app
            .post_json("/v1/users/bulk-update", &owner, &valid(extra.clone()))
            .send()
            .await
            .unwrap();
        let actual = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(actual, status, "{extra}: {body}");
        assert!(
            body["error"]["field"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{extra}: {body}"
        );
        assert_eq!(body["error"]["code"], code, "{extra}: {body}");
    }

    // More than 100,000 ids (a 4 MB body: within jobs.max_body).
    let many: Vec<String> = (0..100_001).map(|_| Uuid::new_v4().to_string()).collect();
    let error = app
        .post_json(
            "/v1/users/bulk-update",
            &owner,
            &json!({"userIds": many, "updates": {"lastName": "X"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error.status(), 422);
    let body: Value = error.json().await.unwrap();
    assert_eq!(body["error"]["field"], "userIds");

    // Who may: not a plain member; not in another tenant's organization.
    app.post_json("/v1/users/bulk-update", &member, &valid(json!({})))
        .expect_error(403, "forbidden")
        .await;
    let (_, other_org) = app.owner_with_org("elsewhere").await;
    app.post_json(
        "/v1/users/bulk-update",
        &owner,
        &valid(json!({"organizationId": other_org})),
    )
    .expect_error(404, "not_found")
    .await;
    app.client
        .post(app.url("/v1/users/bulk-update"))
        .json(&valid(json!({})))
        .expect_error(401, "unauthorized")
        .await;
    app.client
        .post(app.url("/v1/users/bulk-update"))
        .bearer_auth(&owner)
        .header("content-type", "text/plain")
        .body(valid(json!({})).to_string())
        .expect_error(415, "unsupported_media_type")
        .await;
    let error = app
        .post_json("/v1/users/bulk-update", &owner, &valid(json!({})))
        .header("idempotency-key", "x".repeat(256))
        .expect_error(400, "invalid_input")
        .await;
    assert_eq!(error["field"], "Idempotency-Key");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "no bad request created a job");
}

#[tokio::test]
async fn a_repeated_idempotency_key_gives_the_same_job() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("idem").await;
    let users = seed_users(&app, &org, 10, "member").await;
    let body = json!({"userIds": ids_json(&users), "updates": {"isActive": false}});
    let send = |key: Option<&'static str>, body: Value| {
        let mut request = app.post_json("/v1/users/bulk-update", &owner, &body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request
    };
    let first = send(Some("deactivate-2026-12"), body.clone())
        .expect_status(202)
        .await;
    let again = send(Some("deactivate-2026-12"), body.clone())
        .expect_status(202)
        .await;
    assert_eq!(first["data"]["jobId"], again["data"]["jobId"]);
    let other = send(Some("another-key"), body.clone())
        .expect_status(202)
        .await;
    assert_ne!(first["data"]["jobId"], other["data"]["jobId"]);
    let unkeyed = send(None, body.clone()).expect_status(202).await;
    assert_ne!(first["data"]["jobId"], unkeyed["data"]["jobId"]);
    // The same key for a different request is a conflict, not a silent reuse.
    send(
        Some("deactivate-2026-12"),
        json!({"userIds": ids_json(&users), "updates": {"isActive": true}}),
    )
    .expect_error(409, "conflict")
    .await;
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 3);
    // The repeated request did not apply anything twice.
    let id = first["data"]["jobId"].as_str().unwrap();
    wait_final(&app, &owner, id, Duration::from_secs(60)).await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM user_audit WHERE job_id = $1",
            id
        )
        .await,
        10
    );
}

#[tokio::test]
async fn another_tenants_job_is_404() {
    let app = TestApp::spawn().await;
    let (owner_a, org_a) = app.owner_with_org("owner-a").await;
    let (owner_b, _org_b) = app.owner_with_org("owner-b").await;
    let (user, viewer) = app.member(&owner_a, &org_a, "viewer").await;
    let job = post_bulk(
        &app,
        &owner_a,
        &json!({"userIds": [user], "updates": {"firstName": "Grace"}, "organizationId": org_a}),
    )
    .await;
    for token in [&owner_a, &viewer, &app.service_token()] {
        let body = app
            .get(&format!("/v1/jobs/{job}"), Some(token))
            .expect_status(200)
            .await;
        assert_eq!(body["data"]["id"], json!(job));
        assert_eq!(body["data"]["organizationId"], json!(org_a));
    }
    for path in [format!("/v1/jobs/{job}"), format!("/v1/jobs/{job}/events")] {
        app.get(&path, Some(&owner_b))
            .expect_error(404, "not_found")
            .await;
    }
    app.get(&format!("/v1/jobs/{}", Uuid::new_v4()), Some(&owner_a))
        .expect_error(404, "not_found")
        .await;
    app.get("/v1/jobs/not-a-uuid", Some(&owner_a))
        .expect_error(400, "invalid_input")
        .await;
    app.get(&format!("/v1/jobs/{job}"), None)
        .expect_error(401, "unauthorized")
        .await;
}

/// A one-route HTTP server: answers `statuses` in turn (then 200) and hands
/// over each request's head and body.
async fn callback_listener(
    statuses: Vec<u16>,
) -> (String, mpsc::UnboundedReceiver<(String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/jobs", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            let (head, body_start) = loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "the callback request ended early");
                raw.extend_from_slice(&buf[..n]);
                if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&raw[..end]).to_lowercase(), end + 4);
                }
            };
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while raw.len() < body_start + length {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0);
                raw.extend_from_slice(&buf[..n]);
            }
            let body = serde_json::from_slice(&raw[body_start..body_start + length]).unwrap();
            let status = statuses.next().unwrap_or(200);
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            stream.write_all(reply.as_bytes()).await.unwrap();
            let _ = stream.shutdown().await;
            let _ = sender.send((head, body));
        }
    });
    (url, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_receives_the_final_state_with_retries() {
    let app = TestApp::spawn_with(|s| s.jobs.callback_backoff = Duration::from_millis(50)).await;
    let (owner, org) = app.owner_with_org("callback").await;
    let users = seed_users(&app, &org, 25, "member").await;
    let (url, mut received) = callback_listener(vec![500, 503]).await;
    let job = post_bulk(
        &app,
        &owner,
        &json!({"userIds": ids_json(&users), "updates": {"designation": "Trustee"},
                "batchSize": 10, "callbackUrl": url}),
    )
    .await;
    let mut deliveries = Vec::new();
    while deliveries.len() < 3 {
        let delivery = tokio::time::timeout(Duration::from_secs(60), received.recv())
            .await
            .expect("a callback within 60 s")
            .unwrap();
        deliveries.push(delivery);
    }
    for (head, body) in &deliveries {
        assert!(head.starts_with("post /hooks/jobs "), "{head}");
        assert!(head.contains(&format!("idempotency-key: {job}")), "{head}");
        assert_eq!(body["success"], true);
        assert_eq!(body["data"]["id"], json!(job));
        assert_eq!(body["data"]["status"], "completed");
        assert_eq!(body["data"]["processed"], 25);
        assert_eq!(body["data"]["succeeded"], 25);
    }
    // Delivered on the third try; nothing more is sent.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = app
            .get(&format!("/v1/jobs/{job}"), Some(&owner))
            .expect_status(200)
            .await;
        if body["data"]["callbackStatus"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(received.try_recv().is_err(), "no delivery after a 2xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_outlives_the_stack_timeout() {
    let timeout = Duration::from_millis(300);
    let app = TestApp::spawn_with(|s| {
        let mut jobs = s.service("jobs");
        jobs.timeout = Some(timeout);
        s.services.insert("jobs".into(), jobs);
        s.server.request_timeout = timeout;
    })
    .await;
    let (owner, org) = app.owner_with_org("long-stream").await;
    let users = seed_users(&app, &org, 1000, "member").await;
    // One user per batch: a thousand transactions, far longer than the timeout.
    let job = post_bulk(
        &app,
        &owner,
        &json!({"userIds": ids_json(&users), "updates": {"lastName": "Slow"}, "batchSize": 1}),
    )
    .await;
    let started = Instant::now();
    let events = read_events(&app, &owner, &job, Duration::from_secs(300)).await;
    let lasted = started.elapsed();
    assert!(
        lasted > timeout * 3,
        "the job ran in {lasted:?}: too fast to show the stream outlives {timeout:?}"
    );
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "done");
    assert_eq!(done["processed"], 1000);
}

/// The benchmark of BENCHMARKS.md "Users: bulk update": 100,000 users, one
/// job of batch size 5000, timed from the POST to `completed`. First, in the
/// same database, the floor: the same kind of change and audit rows as one
/// SQL statement from the test's pool (no service, no batches); it runs
/// first, so the job (not the floor) pays for the dead rows it leaves.
/// `cargo test -p boardroom-tests --release --test jobs -- --ignored --nocapture bench_`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn bench_bulk_update_of_100000_users() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("bench").await;
    let users = seed_users(&app, &org, 100_000, "member").await;
    let floor_started = Instant::now();
    let floor = sqlx::query(
        "WITH changed AS (
             UPDATE users SET designation = 'Floor', updated_at = now()
             WHERE id = ANY($1) RETURNING id)
         INSERT INTO user_audit (user_id, actor_id, job_id, changes)
         SELECT id, $2, $3, '{\"designation\": \"Floor\"}' FROM changed",
    )
    .bind(&users)
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&app.pool)
    .await
    .unwrap();
    let floor_elapsed = floor_started.elapsed();
    assert_eq!(floor.rows_affected(), 100_000);
    let body = json!({"userIds": ids_json(&users), "updates": {"designation": "Benchmarked"},
                      "batchSize": 5000});
    let started = Instant::now();
    let job = post_bulk(&app, &owner, &body).await;
    let accepted = started.elapsed();
    let done = wait_final(&app, &owner, &job, Duration::from_secs(600)).await;
    let elapsed = started.elapsed();
    assert_eq!(done["succeeded"], 100_000, "{done}");

    println!(
        "bulk update of 100000 users: {:.2} s (202 after {:.2} s); one-statement SQL floor {:.2} s; \
         ratio {:.2}",
        elapsed.as_secs_f64(),
        accepted.as_secs_f64(),
        floor_elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / floor_elapsed.as_secs_f64()
    );
}
