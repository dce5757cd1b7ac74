//! Notifications against the real PostgreSQL and a real SMTP server
//! (aiosmtpd): sending, validation, preferences and quiet hours,
//! idempotency, email content and tracking, the in-app feed and its stream,
//! priority order, bulk sends, analytics and the ops sections.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use boardroom::config::Settings;
use boardroom_tests::{SendExpect, TestApp, providers::SmtpSink};
use chrono::{Timelike, Utc};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

fn fast(settings: &mut Settings, outbox: &std::path::Path) {
    settings.notifications.poll_interval = Duration::from_millis(100);
    settings.notifications.retry_base_delay = Duration::from_millis(50);
    settings.notifications.retry_max_delay = Duration::from_millis(500);
    settings.notifications.outbox = outbox.to_owned();
    settings.jobs.poll_interval = Duration::from_millis(100);
}

fn outbox() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("boardroom-outbox-{}", Uuid::new_v4().simple()))
}

/// An app sending email to `smtp` (or the file transport when `None`).
async fn app_with(smtp: Option<&SmtpSink>) -> TestApp {
    let url = smtp.map(SmtpSink::url);
    let outbox = outbox();
    TestApp::spawn_with(move |s| {
        fast(s, &outbox);
        if let Some(url) = url {
            s.email.smtp_url = url;
        }
    })
    .await
}

/// An owner, their organization, and `n` members: (owner token, org, member ids).
async fn board(app: &TestApp, n: usize) -> (String, String, Vec<String>) {
    let (token, org) = app
        .owner_with_org(&format!("b{}", &Uuid::new_v4().simple().to_string()[..10]))
        .await;
    let mut members = Vec::new();
    for _ in 0..n {
        members.push(app.member(&token, &org, "member").await.0);
    }
    (token, org, members)
}

fn send_body(org: &str, users: &[String], channels: &[&str], priority: &str) -> Value {
    json!({
        "userIds": users,
        "organizationId": org,
        "type": "meeting_reminder",
        "channels": channels,
        "title": "Board meeting tomorrow",
        "message": "The board meets at 10:00. Agenda: https://example.org/agenda?m=7. See you.",
        "priority": priority,
    })
}

async fn send(app: &TestApp, token: &str, body: &Value) -> Value {
    app.post_json("/v1/notifications", token, body)
        .expect_status(202)
        .await["data"]
        .clone()
}

const FINAL: &[&str] = &["sent", "delivered", "dead", "suppressed"];

/// Waits until every delivery of `id` is in a final state; returns the notification.
async fn settled(app: &TestApp, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = app
            .get(&format!("/v1/notifications/{id}"), Some(token))
            .expect_status(200)
            .await["data"]
            .clone();
        let done = n["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| FINAL.contains(&d["status"].as_str().unwrap()));
        if done {
            return n;
        }
        assert!(Instant::now() < deadline, "deliveries not final: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let app = app_with(None).await;
    let (token, org, members) = board(&app, 1).await;
    let body = send_body(&org, &members, &["email"], "normal");

    let mut unknown = body.clone();
    unknown["channels"] = json!(["email", "pigeon"]);
    let error = app
        .post_json("/v1/notifications", &token, &unknown)
        .expect_error(400, "invalid_input")
        .await;
    assert!(
        error["field"].as_str().unwrap().starts_with("channels"),
        "{error}"
    );

    let mut empty = body.clone();
    empty["userIds"] = json!([]);
    let error = app
        .post_json("/v1/notifications", &token, &empty)
        .expect_error(422, "validation_failed")
        .await;
    assert_eq!(error["field"], "userIds");

    let mut no_channels = body.clone();
    no_channels["channels"] = json!([]);
    app.post_json("/v1/notifications", &token, &no_channels)
        .expect_error(422, "validation_failed")
        .await;

    // Someone outside the organization (a member of another one).
    let (other_token, other_org) = app.owner_with_org("elsewhere").await;
    let (outsider, _) = app.member(&other_token, &other_org, "member").await;
    let mut outside = body.clone();
    outside["userIds"] = json!([members[0], outsider]);
    let error = app
        .post_json("/v1/notifications", &token, &outside)
        .expect_error(422, "validation_failed")
        .await;
    assert_eq!(error["field"], "userIds");
    assert!(
        error["message"].as_str().unwrap().contains(&outsider),
        "{error}"
    );

    // Another tenant's organization is a 404; a plain member may not send.
    app.post_json("/v1/notifications", &other_token, &body)
        .expect_error(404, "not_found")
        .await;
    let (_, member_token) = app.member(&token, &org, "member").await;
    app.post_json("/v1/notifications", &member_token, &body)
        .expect_error(403, "forbidden")
        .await;

    // Preferences: bad zone, bad time, unknown channel key.
    let path = format!("/v1/users/{}/notification-preferences", members[0]);
    let put = |prefs: Value| {
        app.client
            .put(app.url(&path))
            .bearer_auth(&token)
            .json(&prefs)
    };
    let error =
        put(json!({"quietHours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}}))
            .expect_error(422, "validation_failed")
            .await;
    assert_eq!(error["field"], "quietHours.timezone");
    let error =
        put(json!({"quietHours": {"start": "24:30", "end": "07:00", "timezone": "Europe/London"}}))
            .expect_error(422, "validation_failed")
            .await;
    assert_eq!(error["field"], "quietHours.start");
    put(json!({"channels": {"fax": false}}))
        .expect_error(400, "invalid_input")
        .await;

    // An over-large bulk body.
    let big = "x".repeat(app.settings.jobs.max_body + 1);
    let response = app
        .client
        .post(app.url("/v1/notifications/bulk"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"notifications\": [\"{big}\"]}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn email_arrives_over_smtp_with_both_bodies_and_tracking() {
    let smtp = SmtpSink::start();
    let app = app_with(Some(&smtp)).await;
    let (token, org, members) = board(&app, 2).await;
    let accepted = send(&app, &token, &send_body(&org, &members, &["email"], "high")).await;
    assert_eq!(accepted["queued"], 2);
    let id = accepted["notificationId"].as_str().unwrap();
    let notification = settled(&app, &token, id).await;
    let deliveries = notification["deliveries"].as_array().unwrap().clone();
    assert!(
        deliveries.iter().all(|d| d["status"] == "sent"),
        "{notification}"
    );

    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for delivery in &deliveries {
        let user = app
            .get(
                &format!("/v1/users/{}", delivery["userId"].as_str().unwrap()),
                Some(&token),
            )
            .expect_status(200)
            .await["data"]
            .clone();
        let message = messages
            .iter()
            .find(|m| {
                m["messageId"] == json!(format!("<{}@boardroom>", delivery["id"].as_str().unwrap()))
            })
            .expect("the delivery id is the Message-ID");
        assert_eq!(message["rcptTos"], json!([user["email"]]));
        assert_eq!(message["subject"], "Board meeting tomorrow");
        let text = message["text"].as_str().unwrap();
        assert!(text.contains("The board meets at 10:00"), "{text}");
        assert!(text.contains("https://example.org/agenda?m=7"), "{text}");
        let html = message["html"].as_str().unwrap();
        assert!(html.contains("The board meets at 10:00"), "{html}");
        assert!(html.contains("/t/o/"), "tracking pixel: {html}");
        assert!(html.contains("/t/c/"), "tracked link: {html}");
    }

    // Opening the pixel of the first delivery sets openedAt (and only its).
    let html = messages[0]["html"].as_str().unwrap();
    let pixel = html
        .split("/t/o/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let response = app
        .get(&format!("/t/o/{pixel}"), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/gif");
    let link = html
        .split("/t/c/")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(app.url(&format!("/t/c/{link}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://example.org/agenda?m=7"
    );
    // Unknown tokens and link numbers lead nowhere.
    let response = no_redirects
        .get(app.url(&format!("/t/c/{}.9", &link[..32])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.get(&format!("/t/o/{}", "0".repeat(32)), None)
        .expect_error(404, "not_found")
        .await;

    let opened_id = messages[0]["messageId"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .split('@')
        .next()
        .unwrap()
        .to_owned();
    let notification = app
        .get(&format!("/v1/notifications/{id}"), Some(&token))
        .expect_status(200)
        .await["data"]
        .clone();
    for d in notification["deliveries"].as_array().unwrap() {
        if d["id"] == json!(opened_id) {
            assert!(d["openedAt"].is_string(), "{d}");
            assert!(d["clickedAt"].is_string(), "{d}");
            assert_eq!(d["status"], "delivered");
        } else {
            assert!(d["openedAt"].is_null(), "{d}");
            assert_eq!(d["status"], "sent");
        }
    }
}

#[tokio::test]
async fn preferences_suppress_and_quiet_hours_defer_but_urgent_passes() {
    let app = app_with(None).await;
    let (token, org, members) = board(&app, 2).await;
    let (quiet, picky) = (&members[0], &members[1]);
    // A window around now, in a zone far from the server's (UTC).
    let zone = "Pacific/Auckland";
    let tz: chrono_tz::Tz = zone.parse().unwrap();
    let local = Utc::now().with_timezone(&tz);
    let start = format!("{:02}:{:02}", (local.hour() + 23) % 24, local.minute());
    let end = format!("{:02}:{:02}", (local.hour() + 2) % 24, local.minute());
    let prefs = json!({"quietHours": {"start": start, "end": end, "timezone": zone}});
    let answer = app
        .client
        .put(app.url(&format!("/v1/users/{quiet}/notification-preferences")))
        .bearer_auth(&token)
        .json(&prefs)
        .expect_status(200)
        .await;
    assert_eq!(answer["data"]["quietHours"]["timezone"], zone);
    let read = app
        .get(
            &format!("/v1/users/{quiet}/notification-preferences"),
            Some(&token),
        )
        .expect_status(200)
        .await;
    assert_eq!(read["data"], answer["data"]);
    app.client
        .put(app.url(&format!("/v1/users/{picky}/notification-preferences")))
        .bearer_auth(&token)
        .json(&json!({"channels": {"sms": false}, "types": {"meeting_reminder": {"push": false}}}))
        .expect_status(200)
        .await;

    let body = send_body(
        &org,
        &members,
        &["email", "push", "sms", "in_app"],
        "normal",
    );
    let accepted = send(&app, &token, &body).await;
    // quiet: 4 deferred. picky: sms and push suppressed, email and in-app queued.
    assert_eq!(accepted["deferred"], 4, "{accepted}");
    assert_eq!(accepted["suppressed"], 2, "{accepted}");
    assert_eq!(accepted["queued"], 2, "{accepted}");
    let n = app
        .get(
            &format!(
                "/v1/notifications/{}",
                accepted["notificationId"].as_str().unwrap()
            ),
            Some(&token),
        )
        .expect_status(200)
        .await["data"]
        .clone();
    for d in n["deliveries"].as_array().unwrap() {
        if d["userId"] == json!(quiet) {
            assert_eq!(d["status"], "deferred", "{d}");
            assert!(
                d["reason"].as_str().unwrap().starts_with("quiet_hours"),
                "{d}"
            );
            let due: chrono::DateTime<Utc> = d["dueAt"].as_str().unwrap().parse().unwrap();
            let wait = due - Utc::now();
            assert!(
                wait > chrono::Duration::minutes(100) && wait <= chrono::Duration::minutes(121),
                "{d}"
            );
        } else if ["sms", "push"].contains(&d["channel"].as_str().unwrap()) {
            assert_eq!(d["status"], "suppressed", "{d}");
            assert!(d["reason"].is_string(), "{d}");
        }
    }
    // Urgent passes quiet hours, not preferences.
    let mut urgent = body.clone();
    urgent["priority"] = json!("urgent");
    let accepted = send(&app, &token, &urgent).await;
    assert_eq!(accepted["deferred"], 0, "{accepted}");
    assert_eq!(accepted["queued"], 6, "{accepted}");
    assert_eq!(accepted["suppressed"], 2, "{accepted}");
}

#[tokio::test]
async fn an_idempotency_key_replays_or_conflicts() {
    let app = app_with(None).await;
    let (token, org, members) = board(&app, 3).await;
    let body = send_body(&org, &members, &["in_app", "email"], "normal");
    let post = |body: &Value| {
        app.post_json("/v1/notifications", &token, body)
            .header("Idempotency-Key", "meeting-2026-12-03")
    };
    let first = post(&body).expect_status(202).await;
    let again = post(&body).expect_status(202).await;
    assert_eq!(first["data"], again["data"]);
    let id = first["data"]["notificationId"].as_str().unwrap();
    let n = settled(&app, &token, id).await;
    assert_eq!(
        n["deliveries"].as_array().unwrap().len(),
        6,
        "one set of deliveries"
    );
    let mut other = body.clone();
    other["title"] = json!("Something else");
    post(&other).expect_error(409, "conflict").await;
}

#[tokio::test]
async fn the_in_app_feed_lists_unread_first_and_streams_with_resume() {
    let app = app_with(None).await;
    let (token, org, members) = board(&app, 1).await;
    let member_id: Uuid = members[0].parse().unwrap();
    let member_token = app.token_for(member_id);
    let mut ids = Vec::new();
    for priority in ["low", "urgent", "normal"] {
        let accepted = send(
            &app,
            &token,
            &send_body(&org, &members, &["in_app"], priority),
        )
        .await;
        let id = accepted["notificationId"].as_str().unwrap().to_owned();
        settled(&app, &token, &id).await;
        ids.push(id);
    }
    let feed = app
        .get("/v1/me/notifications", Some(&member_token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(feed["unread"], 3);
    let priorities: Vec<&str> = feed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["priority"].as_str().unwrap())
        .collect();
    assert_eq!(priorities, ["urgent", "normal", "low"]);
    // Reading the urgent one moves it after the unread ones.
    let urgent = feed["notifications"][0]["id"].as_str().unwrap().to_owned();
    let read = app
        .client
        .post(app.url(&format!("/v1/me/notifications/{urgent}/read")))
        .bearer_auth(&member_token)
        .expect_status(200)
        .await;
    assert!(read["data"]["readAt"].is_string());
    let feed = app
        .get("/v1/me/notifications", Some(&member_token))
        .expect_status(200)
        .await["data"]
        .clone();
    assert_eq!(feed["unread"], 2);
    assert_eq!(feed["notifications"][2]["id"], json!(urgent));
    // Nobody else can read it.
    app.client
        .post(app.url(&format!("/v1/me/notifications/{urgent}/read")))
        .bearer_auth(&token)
        .expect_error(404, "not_found")
        .await;

    // Resume after the first: the two later ones, then a live one.
    let first_seq = feed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seq"].as_i64().unwrap())
        .min()
        .unwrap();
    let response = app
        .get("/v1/me/notifications/stream", Some(&member_token))
        .header("Last-Event-ID", first_seq.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut live_sent = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("event:") && l.ends_with("notification"))
            .count()
    };
    while events(&text) < 3 {
        if events(&text) == 2 && !live_sent {
            live_sent = true;
            let mut live = send_body(&org, &members, &["in_app"], "high");
            live["title"] = json!("Live one");
            send(&app, &token, &live).await;
        }
        let chunk = tokio::time::timeout(deadline - Instant::now(), stream.next())
            .await
            .expect("events in time")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{text}");
    assert!(ids.iter().all(|&id| id > first_seq), "{text}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains("Live one"), "{text}");
}

#[tokio::test]
async fn with_a_backlog_urgent_goes_before_low_queued_earlier() {
    // An API-only instance takes the sends; a worker instance on the same
    // database starts afterwards, with the whole backlog waiting.
    let outbox = outbox();
    let o = outbox.clone();
    let api = TestApp::spawn_with(move |s| {
        fast(s, &o);
        s.notifications.workers = 0;
    })
    .await;
    let (token, org, members) = board(&api, 5).await;
    let mut low = Vec::new();
    for _ in 0..10 {
        let a = send(
            &api,
            &token,
            &send_body(&org, &members, &["in_app", "push"], "low"),
        )
        .await;
        low.push(a["notificationId"].as_str().unwrap().to_owned());
    }
    let mut urgent = Vec::new();
    for _ in 0..4 {
        let a = send(
            &api,
            &token,
            &send_body(&org, &members, &["in_app", "push"], "urgent"),
        )
        .await;
        urgent.push(a["notificationId"].as_str().unwrap().to_owned());
    }
    let database = api.database.clone();
    let o = outbox.clone();
    let _worker = TestApp::spawn_on(&database, move |s| {
        fast(s, &o);
        s.notifications.workers = 1;
        s.notifications.batch_size = 10;
        s.notifications.concurrency = 1;
    })
    .await;
    let sent_times = |n: &Value| -> Vec<chrono::DateTime<Utc>> {
        n["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["sentAt"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    let mut last_urgent = None;
    for id in &urgent {
        let n = settled(&api, &token, id).await;
        let latest = sent_times(&n).into_iter().max().unwrap();
        last_urgent = last_urgent.max(Some(latest));
    }
    let mut first_low = None::<chrono::DateTime<Utc>>;
    for id in &low {
        let n = settled(&api, &token, id).await;
        let earliest = sent_times(&n).into_iter().min().unwrap();
        first_low = Some(first_low.map_or(earliest, |f| f.min(earliest)));
    }
    assert!(
        last_urgent.unwrap() <= first_low.unwrap(),
        "urgent finished {last_urgent:?}, low started {first_low:?}"
    );
}

#[tokio::test]
async fn bulk_sends_run_as_a_job_and_analytics_and_ops_report_them() {
    let smtp = SmtpSink::start();
    let app = app_with(Some(&smtp)).await;
    let (token, org, members) = board(&app, 3).await;
    let mut items: Vec<Value> = (0..5)
        .map(|_| send_body(&org, &members, &["email", "in_app"], "normal"))
        .collect();
    // One bad item: its error is recorded, the others go out.
    let mut bad = send_body(&org, &members, &["email"], "normal");
    bad["userIds"] = json!([Uuid::new_v4()]);
    items.push(bad);
    let accepted = app
        .post_json(
            "/v1/notifications/bulk",
            &token,
            &json!({"notifications": items, "batchSize": 2, "maxRetries": 2}),
        )
        .expect_status(202)
        .await;
    let job_id = accepted["data"]["jobId"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        let job = app
            .get(&format!("/v1/jobs/{job_id}"), Some(&token))
            .expect_status(200)
            .await["data"]
            .clone();
        if job["status"] == "completed" {
            break job;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["succeeded"], 5, "{job}");
    assert_eq!(job["failed"], 1, "{job}");
    assert!(
        job["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not members"),
        "{job}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while smtp.messages().len() < 15 {
        assert!(
            Instant::now() < deadline,
            "{} emails",
            smtp.messages().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Open two of them.
    for message in smtp.messages().iter().take(2) {
        let html = message["html"].as_str().unwrap();
        let pixel = html
            .split("/t/o/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        app.get(&format!("/t/o/{pixel}"), None)
            .expect_status(200)
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = app
            .get(
                &format!("/v1/organizations/{org}/notifications/analytics?period=day"),
                Some(&token),
            )
            .expect_status(200)
            .await["data"]
            .clone();
        let sent = report["byStatus"]["sent"].as_i64().unwrap_or(0)
            + report["byStatus"]["delivered"].as_i64().unwrap_or(0);
        if sent == 30 {
            break report;
        }
        assert!(Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report["total"], 30, "{report}");
    assert_eq!(report["byChannel"]["email"], 15, "{report}");
    assert_eq!(report["byStatus"]["delivered"], 2, "{report}");
    assert_eq!(report["deliveryRate"], 1.0, "{report}");
    let open_rate = report["openRate"].as_f64().unwrap();
    assert!((open_rate - 2.0 / 15.0).abs() < 1e-9, "{report}");
    assert!(
        report["p95QueuedToSentMs"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
    assert_eq!(report["series"].as_array().unwrap().len(), 25, "{report}");
    let bucketed: i64 = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_i64().unwrap())
        .sum();
    assert_eq!(bucketed, 30);
    app.get(
        &format!("/v1/organizations/{org}/notifications/analytics?period=year"),
        Some(&token),
    )
    .expect_error(400, "invalid_input")
    .await;

    // The ops views: queue figures and the provider breakers.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stats = app
        .get("/admin/stats", Some(&app.service_token()))
        .expect_status(200)
        .await["data"]["notifications"]
        .clone();
    assert_eq!(stats["depth"], 0, "{stats}");
    assert!(
        stats["deliveriesPerSecond"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    assert_eq!(stats["breakers"]["smtp"], "closed", "{stats}");
    let ready = app.get("/health/ready", None).expect_status(200).await;
    let check = &ready["data"]["checks"]["notifications"];
    assert_eq!(check["status"], "ok", "{ready}");
    assert_eq!(check["dead"], 0, "{ready}");
    assert!(check["oldestDueAgeSeconds"].is_number(), "{ready}");
}
