//! A bulk job survives `SIGKILL` of the real `boardroom` process.
//!
//! The test starts the binary, seeds 12,000 users straight into its database,
//! posts one bulk update in small batches, kills the process with `SIGKILL`
//! while the job is mid-way (some batches committed, not all), starts the
//! binary again on the same database and waits for the job to complete. The
//! second process takes the job once the dead one's lease (`jobs.lease`, 2 s
//! here) has passed and resumes from the last committed batch. Each user
//! must then have exactly one `user_audit` row for the job: none skipped,
//! none applied twice.
//!
//! Lives in the boardroom crate because only here does cargo hand the
//! binary's path in `CARGO_BIN_EXE_boardroom`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::{Connection, PgPool};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_boardroom");
const USERS: i64 = 12_000;
const BATCH: i64 = 20;

fn postgres_base_url() -> String {
    std::env::var("BOARDROOM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A running binary; killed (by its pid) when dropped.
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

fn command(database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DATABASE_URL", database_url)
        .env("BOARDROOM__JOBS__LEASE", "2s")
        .env("BOARDROOM__JOBS__POLL_INTERVAL", "200ms")
        .env("BOARDROOM__LOG__LEVEL", "boardroom=debug,info");
    cmd
}

async fn start(database_url: &str, name: &str) -> Process {
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let log = std::env::temp_dir().join(format!("boardroom-jobs-crash-{name}-{port}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = command(database_url)
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
            "not ready within 60 s\n{}",
            process.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn operator_token(database_url: &str) -> String {
    let output = command(database_url)
        .args(["token", "--user", &Uuid::new_v4().to_string(), "--service"])
        .output()
        .expect("run boardroom token");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn seed(pool: &PgPool) -> Vec<Uuid> {
    let org = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Crash Board', 'crash-board')",
    )
    .bind(org)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "WITH new_users AS (
             INSERT INTO users (id, email, first_name, last_name)
             SELECT gen_random_uuid(), 'crash-' || g || '@example.org', 'First', 'Last'
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
    .unwrap()
}

async fn job_row(pool: &PgPool, id: Uuid) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT status, processed, locked_by FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_way_resumes_and_applies_each_user_exactly_once() {
    let base = postgres_base_url();
    let database = format!("boardroom_jobs_crash_{}", Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");

    let first = start(&database_url, "first").await;
    let pool = PgPool::connect(&database_url).await.unwrap();
    let users = seed(&pool).await;
    let token = operator_token(&database_url);

    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{}/v1/users/bulk-update", first.addr))
        .bearer_auth(&token)
        .json(&json!({
            "userIds": users.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            "updates": {"designation": "Survivor"},
            "batchSize": BATCH,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", first.log_tail());
    let body: Value = response.json().await.unwrap();
    let job: Uuid = body["data"]["jobId"].as_str().unwrap().parse().unwrap();

    // Kill once a few batches are committed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, processed, _) = job_row(&pool, job).await;
        if processed >= (BATCH * 10) as i32 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress within 120 s\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut first = first;
    first.child.kill().expect("SIGKILL the first process");
    first.child.wait().unwrap();
    let (status, at_kill, locked_by) = job_row(&pool, job).await;
    assert!(
        status == "running" && (at_kill as i64) < USERS && locked_by.is_some(),
        "the kill must land mid-job: status {status}, processed {at_kill}, lease {locked_by:?}"
    );
    drop(first);

    // The same database, a new process: it takes the job once the lease passes.
    let second = start(&database_url, "second").await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (status, processed, _) = job_row(&pool, job).await;
        if status == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not completed within 300 s after restart: {status} {processed}\n{}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let response = client
        .get(format!("http://{}/v1/jobs/{job}", second.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["processed"], USERS, "{body}");
    assert_eq!(body["data"]["succeeded"], USERS, "{body}");
    assert_eq!(body["data"]["failed"], 0, "{body}");

    // Exactly once: one audit row per user for this job, every user changed.
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT user_id) FROM user_audit WHERE job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (USERS, USERS));
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT user_id FROM user_audit WHERE job_id = $1
                               GROUP BY user_id HAVING count(*) <> 1) AS repeated",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(twice, 0);
    let changed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE designation = 'Survivor'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(changed, USERS);
    println!("killed at {at_kill} of {USERS}; resumed and completed exactly once");

    drop(second);
    pool.close().await;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
    }
}
