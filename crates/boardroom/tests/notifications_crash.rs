//! Notification deliveries survive `SIGKILL` of the real `boardroom` process.
//!
//! The test starts the binary with a push gateway stub (an axum server in
//! this test process, answering each request after a few milliseconds),
//! seeds 2,000 members, sends one notification to all of them on `push` and
//! `in_app` (4,000 deliveries), kills the process with `SIGKILL` while
//! deliveries are mid-way, and starts it again on the same database. Once the
//! dead process's leases (`notifications.lease`, 2 s here) pass, the new one
//! requeues what was in flight. Every delivery must end `sent`; the gateway
//! must have seen every push delivery id (none lost), and — as providers do
//! with an `Idempotency-Key` — it accepts an id once: a resend of an id it
//! already accepted (a delivery in flight at the kill) is acknowledged
//! without being a second message. The in-app feed holds each delivery once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_boardroom");
const USERS: i64 = 2_000;

fn postgres_base_url() -> String {
    std::env::var("BOARDROOM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

struct Process {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Process {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn command(database_url: &str, gateway: &str, outbox: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DATABASE_URL", database_url)
        .env("BOARDROOM__NOTIFICATIONS__LEASE", "2s")
        .env("BOARDROOM__NOTIFICATIONS__POLL_INTERVAL", "200ms")
        .env("BOARDROOM__NOTIFICATIONS__BATCH_SIZE", "50")
        .env("BOARDROOM__NOTIFICATIONS__CONCURRENCY", "8")
        .env("BOARDROOM__NOTIFICATIONS__PUSH__URL", gateway)
        .env("BOARDROOM__NOTIFICATIONS__OUTBOX", outbox)
        .env("BOARDROOM__LOG__LEVEL", "boardroom=debug,info");
    cmd
}

async fn start(database_url: &str, gateway: &str, outbox: &std::path::Path, name: &str) -> Process {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::temp_dir().join(format!("boardroom-notify-crash-{name}-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = command(database_url, gateway, outbox)
        .env("BOARDROOM__SERVER__ADDR", addr.to_string())
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the boardroom binary");
    let mut process = Process { child, addr, log };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("boardroom exited early: {status}\n{}", process.log_tail());
        }
        let ready = client
            .get(format!("http://{addr}/health/ready"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return process;
        }
        assert!(
            Instant::now() < deadline,
            "not ready\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Default)]
struct Seen {
    /// 2xx answers that were a first acceptance.
    accepted: HashSet<String>,
    /// Requests per id.
    presented: HashMap<String, u32>,
}

async fn gateway(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap) -> StatusCode {
    let Some(id) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return StatusCode::BAD_REQUEST;
    };
    *seen
        .lock()
        .unwrap()
        .presented
        .entry(id.clone())
        .or_default() += 1;
    tokio::time::sleep(Duration::from_millis(10)).await;
    seen.lock().unwrap().accepted.insert(id);
    StatusCode::OK
}

async fn seed(pool: &PgPool) -> (Uuid, Vec<Uuid>) {
    let org = Uuid::new_v4();
    sqlx::query("INSERT INTO organizations (id, name, slug) VALUES ($1, 'Crash', 'crash-notify')")
        .bind(org)
        .execute(pool)
        .await
        .unwrap();
    let users = sqlx::query_scalar(
        "WITH new_users AS (
             INSERT INTO users (id, email, first_name, last_name)
             SELECT gen_random_uuid(), 'n-' || g || '@example.org', 'First', 'Last'
             FROM generate_series(1, $1) AS g
             RETURNING id),
         joined AS (
             INSERT INTO memberships (organization_id, user_id, role)
             SELECT $2, id, 'member' FROM new_users)
         SELECT id FROM new_users",
    )
    .bind(USERS)
    .bind(org)
    .fetch_all(pool)
    .await
    .unwrap();
    (org, users)
}

async fn counts(pool: &PgPool) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM notification_deliveries GROUP BY status")
            .fetch_all(pool)
            .await
            .unwrap();
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_killed_mid_batch_all_end_sent_and_none_is_lost_or_doubled() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_url = format!("http://{}/push", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/push", post(gateway))
        .with_state(seen.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let outbox = std::env::temp_dir().join(format!(
        "boardroom-crash-outbox-{}",
        Uuid::new_v4().simple()
    ));

    let base = postgres_base_url();
    let database = format!("boardroom_notify_crash_{}", Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");
    let first = start(&database_url, &gateway_url, &outbox, "first").await;
    let pool = PgPool::connect(&database_url).await.unwrap();
    let (org, users) = seed(&pool).await;
    let output = command(&database_url, &gateway_url, &outbox)
        .args(["token", "--user", &Uuid::new_v4().to_string(), "--service"])
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/notifications", first.addr))
        .bearer_auth(&token)
        .json(&json!({
            "userIds": users,
            "organizationId": org,
            "type": "meeting_reminder",
            "channels": ["push", "in_app"],
            "title": "Extraordinary meeting",
            "message": "Tonight at 19:00.",
            "priority": "high",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", first.log_tail());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["queued"], USERS * 2);

    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().accepted.len() < 300 {
        assert!(
            Instant::now() < deadline,
            "no progress\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut first = first;
    first.child.kill().expect("SIGKILL the first process");
    first.child.wait().unwrap();
    let at_kill = counts(&pool).await;
    let sending = at_kill.get("sending").copied().unwrap_or(0);
    let sent_at_kill = at_kill.get("sent").copied().unwrap_or(0);
    assert!(
        sent_at_kill < USERS * 2,
        "the kill must land mid-way: {at_kill:?}"
    );
    drop(first);

    let second = start(&database_url, &gateway_url, &outbox, "second").await;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let now = counts(&pool).await;
        if now.get("sent").copied().unwrap_or(0) == USERS * 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all sent after restart: {now:?}\n{}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let push_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM notification_deliveries WHERE channel = 'push'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let resent = {
        let seen = seen.lock().unwrap();
        let push: HashSet<String> = push_ids.iter().map(Uuid::to_string).collect();
        assert_eq!(
            seen.accepted, push,
            "the gateway accepted every push delivery, nothing else"
        );
        seen.presented.values().filter(|&&n| n > 1).count()
    };
    // Only what was in flight at the kill may be presented again.
    assert!(
        i64::try_from(resent).unwrap() <= sending,
        "{resent} ids presented twice, {sending} were in flight"
    );
    let (feed, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT feed_seq) FROM notification_deliveries
         WHERE channel = 'in_app' AND feed_seq IS NOT NULL",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((feed, distinct), (USERS, USERS));
    println!(
        "killed with {sent_at_kill} sent and {sending} in flight; after restart all {} sent; \
         {resent} push ids presented twice (acknowledged once)",
        USERS * 2
    );

    drop(second);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&outbox);
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
    }
}
