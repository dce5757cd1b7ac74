//! Notification benchmarks (ignored: run them on purpose, ideally with
//! `--release`):
//!
//! ```sh
//! cargo test --release -p boardroom-tests --test notifications_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! - in-app deliveries per second through the queue: a backlog queued by an
//!   API-only instance, drained by a worker instance (claim, store, NOTIFY);
//! - emails per second to a local aiosmtpd (accepting and discarding), the
//!   same way;
//! - p99 from enqueue to sent while sends arrive at a fixed rate (half the
//!   measured throughput), from the deliveries' own `queuedAt`/`sentAt`.
//!
//! Each prints one Markdown row for BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use boardroom::config::Settings;
use boardroom_tests::{SendExpect, TestApp, providers::SmtpSink};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

fn tune(s: &mut Settings, outbox: &std::path::Path) {
    s.database.max_connections = 20;
    s.notifications.poll_interval = Duration::from_millis(50);
    s.notifications.outbox = outbox.to_owned();
    s.log.level = "warn".into();
}

/// An organization with `n` members seeded straight into the database.
async fn seed(pool: &PgPool, n: i64) -> (Uuid, Vec<Uuid>) {
    let org = Uuid::new_v4();
    sqlx::query("INSERT INTO organizations (id, name, slug) VALUES ($1, 'Bench', $2)")
        .bind(org)
        .bind(format!("bench-{}", &org.simple().to_string()[..8]))
        .execute(pool)
        .await
        .unwrap();
    let users = sqlx::query_scalar(
        "WITH new_users AS (
             INSERT INTO users (id, email, first_name, last_name)
             SELECT gen_random_uuid(), 'bench-' || g || '-' || $3 || '@example.org', 'B', 'M'
             FROM generate_series(1, $1) AS g RETURNING id),
         joined AS (INSERT INTO memberships (organization_id, user_id, role)
                    SELECT $2, id, 'member' FROM new_users)
         SELECT id FROM new_users",
    )
    .bind(n)
    .bind(org)
    .bind(org.simple().to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    (org, users)
}

async fn sent(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notification_deliveries WHERE status = 'sent'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn enqueue(
    app: &TestApp,
    token: &str,
    org: Uuid,
    users: &[Uuid],
    channel: &str,
    sends: usize,
) {
    for n in 0..sends {
        app.post_json(
            "/v1/notifications",
            token,
            &json!({
                "userIds": users, "organizationId": org, "type": "bench",
                "channels": [channel], "title": format!("Bench {n}"),
                "message": "Benchmark message https://example.org/x",
            }),
        )
        .expect_status(202)
        .await;
    }
}

/// The email settings of both email rows: 2 workers × batches of 200 × 64
/// SMTP sessions in flight, and no limit in the `smtp` stack (its default 16
/// in flight caps a local sink well below the drain rate).
fn email_tuning(s: &mut Settings, smtp_url: String) {
    s.notifications.workers = 2;
    s.notifications.batch_size = 200;
    s.notifications.concurrency = 64;
    s.email.smtp_url = smtp_url;
    let smtp = s.services.entry("smtp".into()).or_default();
    smtp.concurrency = None;
}

/// CPU seconds (user + system) process `pid` has used so far ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// Drains a backlog of `sends × users` deliveries on `channel`; returns deliveries/s.
async fn drain(channel: &str, users_n: i64, sends: usize, smtp: Option<&SmtpSink>) -> f64 {
    let outbox = std::env::temp_dir().join(format!("boardroom-bench-{}", Uuid::new_v4().simple()));
    let o = outbox.clone();
    let smtp_url = smtp.map(SmtpSink::url);
    let api = TestApp::spawn_with(move |s| {
        tune(s, &o);
        s.notifications.workers = 0;
    })
    .await;
    let (org, users) = seed(&api.pool, users_n).await;
    let token = api.service_token();
    enqueue(&api, &token, org, &users, channel, sends).await;
    let total = users_n * i64::try_from(sends).unwrap();
    let o = outbox.clone();
    let sink_pid = smtp.map(|s| s.pid().to_string());
    let cpu_before = (cpu_seconds("self"), sink_pid.as_deref().map(cpu_seconds));
    let started = Instant::now();
    let _worker = TestApp::spawn_on(&api.database, move |s| {
        tune(s, &o);
        s.notifications.workers = 2;
        s.notifications.batch_size = 2000;
        if let Some(url) = smtp_url {
            email_tuning(s, url);
        }
    })
    .await;
    while sent(&api.pool).await < total {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drain too slow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let service_cpu = cpu_seconds("self") - cpu_before.0;
    let sink_cpu = sink_pid
        .as_deref()
        .map(cpu_seconds)
        .zip(cpu_before.1)
        .map(|(a, b)| a - b);
    let _ = std::fs::remove_dir_all(&outbox);
    #[allow(clippy::cast_precision_loss)]
    let rate = total as f64 / elapsed;
    #[allow(clippy::cast_precision_loss)]
    let per = |cpu: f64| cpu * 1000.0 / total as f64;
    let sink = sink_cpu.map_or_else(String::new, |s| format!(", sink {:.3} ms", per(s)));
    println!(
        "| {channel} backlog drain | {total} deliveries | {elapsed:.2} s | {rate:.0} deliveries/s | CPU a delivery: service {:.3} ms{sink} |",
        per(service_cpu)
    );
    rate
}

/// Sends at `rate` deliveries/s for `seconds`, `per_send` recipients a send;
/// returns the p50 and p99 ms from queued to sent.
async fn latency(
    channel: &str,
    rate: f64,
    per_send: i64,
    seconds: u64,
    smtp: Option<&SmtpSink>,
) -> (f64, f64) {
    let outbox = std::env::temp_dir().join(format!("boardroom-bench-{}", Uuid::new_v4().simple()));
    let o = outbox.clone();
    let smtp_url = smtp.map(SmtpSink::url);
    let app = TestApp::spawn_with(move |s| {
        tune(s, &o);
        s.notifications.batch_size = 500;
        s.notifications.concurrency = 64;
        if let Some(url) = smtp_url {
            email_tuning(s, url);
        }
    })
    .await;
    let (org, users) = seed(&app.pool, per_send).await;
    let token = app.service_token();
    #[allow(clippy::cast_precision_loss)]
    let interval = Duration::from_secs_f64(per_send as f64 / rate);
    let mut tick = tokio::time::interval(interval);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut sends = 0_i64;
    while Instant::now() < end {
        tick.tick().await;
        enqueue(&app, &token, org, &users, channel, 1).await;
        sends += 1;
    }
    while sent(&app.pool).await < sends * per_send {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - queued_at)),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - queued_at))
         FROM notification_deliveries",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&outbox);
    #[allow(clippy::cast_precision_loss)]
    let offered = (sends * per_send) as f64 / seconds as f64;
    println!(
        "| {channel} aiming at {rate:.0}/s (offered {offered:.0}/s) for {seconds} s | {} deliveries | p50 {:.1} ms | p99 {:.1} ms |",
        sends * per_send,
        p50 * 1000.0,
        p99 * 1000.0
    );
    (p50 * 1000.0, p99 * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored"]
async fn bench_in_app_throughput_and_latency() {
    let rate = drain("in_app", 2000, 25, None).await;
    // 500 recipients a send: one sequential client offers half the drain
    // rate with ≈ 11 sends a second.
    latency("in_app", rate / 2.0, 500, 10, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored"]
async fn bench_email_throughput_and_latency() {
    // A sink that parses and saves every message measures its own JSON
    // writer (≈ 12 ms a message here); this one only accepts.
    let smtp = SmtpSink::start_discarding();
    let rate = drain("email", 500, 20, Some(&smtp)).await;
    latency("email", rate / 2.0, 50, 10, Some(&smtp)).await;
}
