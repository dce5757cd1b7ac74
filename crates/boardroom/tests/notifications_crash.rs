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
//!
//! The second test is the scale-out case (issue 9): two instances share the
//! queue, one is killed, the other finishes its share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router, extract::Path, extract::State, http::HeaderMap, http::StatusCode, routing::post,
};
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
    /// Delivery id → the instance (gateway path) whose request first got it
    /// accepted; a later request for the same id is acknowledged, not a
    /// second message.
    accepted: HashMap<String, String>,
    /// Requests per id.
    presented: HashMap<String, u32>,
}

impl Seen {
    fn accepted_by(&self, instance: &str) -> usize {
        self.accepted.values().filter(|v| *v == instance).count()
    }
}

/// `POST /push/{instance}`: each instance is given its own path, so the stub
/// knows which process sent what.
async fn gateway(
    State(seen): State<Arc<Mutex<Seen>>>,
    Path(instance): Path<String>,
    headers: HeaderMap,
) -> StatusCode {
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
    seen.lock().unwrap().accepted.entry(id).or_insert(instance);
    StatusCode::OK
}

/// Starts the gateway stub; returns its base URL (`http://addr/push`).
async fn start_gateway(seen: Arc<Mutex<Seen>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/push", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/push/{instance}", post(gateway))
        .with_state(seen);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

async fn seed(pool: &PgPool, users: i64) -> (Uuid, Vec<Uuid>) {
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
    .bind(users)
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

/// Sends one `high` notification on `push` and `in_app` to `users` through
/// `process`, with a service token; asserts every delivery was queued.
async fn send_to_all(process: &Process, database_url: &str, org: Uuid, users: &[Uuid]) {
    let output = Command::new(BIN)
        .env("DATABASE_URL", database_url)
        .args(["token", "--user", &Uuid::new_v4().to_string(), "--service"])
        .output()
        .unwrap();
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/notifications", process.addr))
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
    assert_eq!(response.status(), 202, "{}", process.log_tail());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["queued"], users.len() * 2);
}

/// Waits until every delivery is `sent`, failing with `process`'s log.
async fn wait_all_sent(pool: &PgPool, total: i64, process: &Process, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = counts(pool).await;
        if now.get("sent").copied().unwrap_or(0) == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not all sent: {now:?}\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every push delivery was accepted by the gateway (and nothing else was);
/// returns how many ids were presented more than once.
async fn pushes_accepted_once(pool: &PgPool, seen: &Mutex<Seen>) -> usize {
    let push_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM notification_deliveries WHERE channel = 'push'")
            .fetch_all(pool)
            .await
            .unwrap();
    let seen = seen.lock().unwrap();
    let push: HashSet<String> = push_ids.iter().map(Uuid::to_string).collect();
    let accepted: HashSet<String> = seen.accepted.keys().cloned().collect();
    assert_eq!(
        accepted, push,
        "the gateway accepted every push delivery, nothing else"
    );
    seen.presented.values().filter(|&&n| n > 1).count()
}

/// The in-app feed holds `members` deliveries, each at its own position.
async fn assert_feed_holds_each_once(pool: &PgPool, members: i64) {
    let (feed, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT feed_seq) FROM notification_deliveries
         WHERE channel = 'in_app' AND feed_seq IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((feed, distinct), (members, members));
}

async fn drop_database(base: &str, database: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_killed_mid_batch_all_end_sent_and_none_is_lost_or_doubled() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gateway_url = format!("{}/only", start_gateway(seen.clone()).await);
    let outbox = std::env::temp_dir().join(format!(
        "boardroom-crash-outbox-{}",
        Uuid::new_v4().simple()
    ));

    let base = postgres_base_url();
    let database = format!("boardroom_notify_crash_{}", Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");
    let first = start(&database_url, &gateway_url, &outbox, "first").await;
    let pool = PgPool::connect(&database_url).await.unwrap();
    let (org, users) = seed(&pool, USERS).await;
    send_to_all(&first, &database_url, org, &users).await;

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
    wait_all_sent(&pool, USERS * 2, &second, Duration::from_secs(180)).await;
    let resent = pushes_accepted_once(&pool, &seen).await;
    // Only what was in flight at the kill may be presented again.
    assert!(
        i64::try_from(resent).unwrap() <= sending,
        "{resent} ids presented twice, {sending} were in flight"
    );
    assert_feed_holds_each_once(&pool, USERS).await;
    println!(
        "killed with {sent_at_kill} sent and {sending} in flight; after restart all {} sent; \
         {resent} push ids presented twice (acknowledged once)",
        USERS * 2
    );

    drop(second);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&outbox);
    drop_database(&base, &database).await;
}

/// Issue 9: two instances on one database share the queue. 5,000 members ×
/// (`push`, `in_app`) = 10,000 deliveries; instance `a` and `b` each talk to
/// the gateway on their own path, so the stub knows who sent what. Once both
/// have had pushes accepted, `a` is killed with `SIGKILL`; `b` alone must
/// finish everything, including what `a` held (its leases expire after 2 s).
/// Each delivery ends `sent` once; each push id is accepted once, and only an
/// id in flight at the kill may be presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_deliveries_and_the_survivor_finishes_a_killed_ones_share() {
    const MEMBERS: i64 = 5_000;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gateway = start_gateway(seen.clone()).await;
    let outbox = std::env::temp_dir().join(format!(
        "boardroom-scale-outbox-{}",
        Uuid::new_v4().simple()
    ));
    let base = postgres_base_url();
    let database = format!("boardroom_notify_scale_{}", Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");
    let a = start(&database_url, &format!("{gateway}/a"), &outbox, "a").await;
    let b = start(&database_url, &format!("{gateway}/b"), &outbox, "b").await;
    let pool = PgPool::connect(&database_url).await.unwrap();
    let (org, users) = seed(&pool, MEMBERS).await;
    send_to_all(&b, &database_url, org, &users).await;

    // Both work at once: each has had pushes accepted.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (by_a, by_b) = {
            let seen = seen.lock().unwrap();
            (seen.accepted_by("a"), seen.accepted_by("b"))
        };
        if by_a >= 200 && by_b >= 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both instances never worked: a {by_a}, b {by_b}\n{}\n{}",
            a.log_tail(),
            b.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut a = a;
    a.child.kill().expect("SIGKILL instance a");
    a.child.wait().unwrap();
    let by_a_at_kill = seen.lock().unwrap().accepted_by("a");
    let at_kill = counts(&pool).await;
    let sending = at_kill.get("sending").copied().unwrap_or(0);
    assert!(
        at_kill.get("sent").copied().unwrap_or(0) < MEMBERS * 2,
        "the kill must land mid-way: {at_kill:?}"
    );
    drop(a);

    wait_all_sent(&pool, MEMBERS * 2, &b, Duration::from_secs(240)).await;
    let resent = pushes_accepted_once(&pool, &seen).await;
    let (by_a, by_b) = {
        let seen = seen.lock().unwrap();
        (seen.accepted_by("a"), seen.accepted_by("b"))
    };
    let pushes = usize::try_from(MEMBERS).unwrap();
    // b finished a's share: with a dead, everything left went through b.
    assert!(
        by_b >= pushes.saturating_sub(by_a_at_kill + usize::try_from(sending).unwrap()),
        "b accepted {by_b} of {pushes}, a {by_a_at_kill} before its kill"
    );
    assert!(
        i64::try_from(resent).unwrap() <= sending,
        "{resent} ids presented twice, {sending} were in flight at the kill"
    );
    assert_feed_holds_each_once(&pool, MEMBERS).await;
    println!(
        "a sent {by_a} pushes before its kill ({sending} deliveries in flight), b sent {by_b}; \
         all {} deliveries sent once; {resent} push ids presented twice (acknowledged once)",
        MEMBERS * 2
    );

    drop(b);
    pool.close().await;
    let _ = std::fs::remove_dir_all(&outbox);
    drop_database(&base, &database).await;
}
