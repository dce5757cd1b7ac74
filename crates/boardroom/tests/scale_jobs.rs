//! Shared background work across instances: two `boardroom` processes on
//! one database run ten bulk jobs (10,000 user updates) together, claiming
//! jobs with `FOR UPDATE SKIP LOCKED` under leases. One process is killed
//! with `SIGKILL` while it holds jobs; the other takes them over once their
//! leases pass and finishes everything. Every user must then carry exactly
//! one `user_audit` row for its job: nothing lost, nothing done twice.
//!
//! Lives in the boardroom crate because only here does cargo hand the
//! binary's path in `CARGO_BIN_EXE_boardroom` (helpers as in `jobs_crash.rs`).
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
/// Work items: 10 jobs of 1,000 users each.
const JOBS: usize = 10;
const PER_JOB: usize = 1_000;
const USERS: i64 = (JOBS * PER_JOB) as i64;
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
    let log = std::env::temp_dir().join(format!("boardroom-scale-jobs-{name}-{port}.log"));
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
        "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Scale Board', 'scale-board')",
    )
    .bind(org)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "WITH new_users AS (
             INSERT INTO users (id, email, first_name, last_name)
             SELECT gen_random_uuid(), 'scale-' || g || '@example.org', 'First', 'Last'
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

/// (instance, jobs it holds) for every instance holding a running job.
async fn holders(pool: &PgPool, jobs: &[Uuid]) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT split_part(locked_by, '-', 1), count(*) FROM jobs
         WHERE id = ANY($1) AND status = 'running' AND locked_by IS NOT NULL
         GROUP BY 1 ORDER BY 1",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_jobs_and_the_survivor_finishes_a_killed_ones_share() {
    let base = postgres_base_url();
    let database = format!("boardroom_scale_jobs_{}", Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");

    let mut first = start(&database_url, "first").await;
    let second = start(&database_url, "second").await;
    let pool = PgPool::connect(&database_url).await.unwrap();
    let users = seed(&pool).await;
    let token = operator_token(&database_url);

    let client = reqwest::Client::new();
    let mut jobs = Vec::new();
    for (n, chunk) in users.chunks(PER_JOB).enumerate() {
        let entry = if n % 2 == 0 { &first } else { &second };
        let response = client
            .post(format!("http://{}/v1/users/bulk-update", entry.addr))
            .bearer_auth(&token)
            .json(&json!({
                "userIds": chunk.iter().map(Uuid::to_string).collect::<Vec<_>>(),
                "updates": {"designation": "Shared"},
                "batchSize": BATCH,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", entry.log_tail());
        let body: Value = response.json().await.unwrap();
        jobs.push(
            body["data"]["jobId"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
    }

    // Both instances work: each holds jobs at the same time.
    let deadline = Instant::now() + Duration::from_secs(120);
    let held = loop {
        let held = holders(&pool, &jobs).await;
        let processed: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(processed), 0)::int8 FROM jobs WHERE id = ANY($1)",
        )
        .bind(&jobs)
        .fetch_one(&pool)
        .await
        .unwrap();
        if held.len() == 2 && processed >= BATCH * 10 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "both instances never held jobs at once: {held:?}\n{}\n{}",
            first.log_tail(),
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    // Kill one of them while it holds jobs.
    first.child.kill().expect("SIGKILL the first process");
    first.child.wait().unwrap();
    let at_kill = holders(&pool, &jobs).await;
    let (done_at_kill,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'")
            .bind(&jobs)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        (done_at_kill as usize) < JOBS,
        "the kill must land before all jobs are done"
    );
    drop(first);

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (completed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'completed'")
                .bind(&jobs)
                .fetch_one(&pool)
                .await
                .unwrap();
        if completed as usize == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor did not finish within 300 s ({completed} of {JOBS})\n{}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for job in &jobs {
        let response = client
            .get(format!("http://{}/v1/jobs/{job}", second.addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["processed"], PER_JOB, "{body}");
        assert_eq!(body["data"]["succeeded"], PER_JOB, "{body}");
    }
    // Exactly once: one audit row per user, for the job that named it.
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT user_id) FROM user_audit WHERE job_id = ANY($1)",
    )
    .bind(&jobs)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct), (USERS, USERS));
    let changed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE designation = 'Shared'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(changed, USERS);
    println!(
        "held before the kill {held:?}, at the kill {at_kill:?}, {done_at_kill} of {JOBS} jobs done; the survivor finished the rest exactly once"
    );

    drop(second);
    pool.close().await;
    if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{base}/postgres")).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await;
    }
}
