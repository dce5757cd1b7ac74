//! The real `boardroom` process: graceful shutdown, and a start without a database.
//!
//! SIGTERM while a request is in flight: the server stops accepting new
//! connections, the in-flight request still completes with its normal
//! response, and the process exits 0.
//!
//! The request is slow for a legitimate reason: its client uploads the JSON
//! body slowly. The test sends the headers and half of the body over a raw TCP
//! stream, sends SIGTERM, waits until the server refuses new connections (so
//! shutdown has begun while the request is in flight), then sends the rest.
//!
//! Without a reachable PostgreSQL, `serve` retries for
//! `database.connect_timeout`, then exits non-zero with a message on stderr
//! that names the server and says what to do.
//!
//! Lives in the boardroom crate (not the black-box tests crate) because only
//! here does cargo build the binary and hand its path in
//! `CARGO_BIN_EXE_boardroom`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_boardroom");

/// The server under test: the child process and what it was started with.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// stdout and stderr of the process, for the failure messages.
    log: std::path::PathBuf,
    database: String,
    admin_url: String,
}

impl Server {
    /// The last lines the process printed.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(30);
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed assertion must not leave the process behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The PostgreSQL server (no database) the test creates its database on: the
/// same variable as the black-box tests crate, else the local server.
fn postgres_base_url() -> String {
    std::env::var("BOARDROOM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(database_url: &str, addr: SocketAddr) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DATABASE_URL", database_url)
        .env("BOARDROOM__SERVER__ADDR", addr.to_string());
    cmd
}

/// A plain HTTP/1.1 request on a fresh connection; `None` when the server
/// does not accept the connection.
async fn http(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

async fn start_server() -> Server {
    start_server_with(&[]).await
}

/// Starts the binary with extra environment variables (config overrides).
async fn start_server_with(env: &[(&str, &str)]) -> Server {
    let base = postgres_base_url();
    let database = format!("boardroom_shutdown_{}", uuid::Uuid::new_v4().simple());
    let database_url = format!("{base}/{database}");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    // The service creates its database when it is missing and migrates it.
    let log = std::env::temp_dir().join(format!("{database}.log"));
    let log_file = std::fs::File::create(&log).unwrap();
    let child = command(&database_url, addr)
        .envs(env.iter().copied())
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start the boardroom binary");
    let mut server = Server {
        child,
        addr,
        log,
        database,
        admin_url: format!("{base}/postgres"),
    };

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!(
                "boardroom exited before it was ready: {status}\n{}",
                server.log_tail()
            );
        }
        if let Some((200, _)) = http(addr, &get("/health/ready")).await {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "/health/ready was not 200 within 60 s\n{}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn service_token(server: &Server) -> String {
    let output = command(
        &format!("{}/{}", postgres_base_url(), server.database),
        server.addr,
    )
    .args([
        "token",
        "--user",
        &uuid::Uuid::new_v4().to_string(),
        "--service",
    ])
    .output()
    .expect("run boardroom token");
    assert!(
        output.status.success(),
        "boardroom token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");
    token
}

fn send_sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the process did not exit within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn drop_database(server: &Server) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&server.admin_url).await {
        let sql = format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            server.database
        );
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let mut server = start_server().await;
    let token = service_token(&server);

    let body = format!(
        r#"{{"name":"Shutdown Board","slug":"shutdown-{}"}}"#,
        uuid::Uuid::new_v4().simple()
    );
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /v1/organizations HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );

    // The slow upload: headers and half of the body, then a pause.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(first_half.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    // Let the server read the headers and start the handler.
    tokio::time::sleep(Duration::from_millis(300)).await;

    send_sigterm(&server.child);

    // Shutdown has begun once new connections are no longer served; the
    // slow request is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if http(server.addr, &get("/health/live")).await.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server still served new connections 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the process exited while a request was still in flight"
    );

    // The client finishes its upload: the request completes normally.
    slow.write_all(second_half.as_bytes()).await.unwrap();
    slow.flush().await.unwrap();
    let (status, response) = read_response(&mut slow)
        .await
        .expect("a response to the in-flight request");
    assert_eq!(
        status,
        201,
        "in-flight request: {response}\n{}",
        server.log_tail()
    );
    assert!(
        response.contains("Shutdown Board"),
        "the response carries the created organization: {response}"
    );

    let exit = wait_exit(&mut server.child, Duration::from_secs(30));
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit}\n{}",
        server.log_tail()
    );
    drop_database(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_when_idle_exits_zero_promptly() {
    let mut server = start_server().await;
    send_sigterm(&server.child);
    let exit = wait_exit(&mut server.child, Duration::from_secs(10));
    assert!(
        exit.success(),
        "exit status after SIGTERM: {exit}\n{}",
        server.log_tail()
    );
    drop_database(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_reachable_database_exits_non_zero_saying_what_to_do() {
    // A port nobody listens on: connections are refused.
    let closed = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let started = Instant::now();
    let mut child = command(
        &format!("postgres://postgres@127.0.0.1:{closed}/boardroom_unreachable"),
        addr,
    )
    .env("BOARDROOM__DATABASE__CONNECT_TIMEOUT", "1s")
    .arg("serve")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the boardroom binary");

    let exit = wait_exit(&mut child, Duration::from_secs(20));
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    assert!(!exit.success(), "exit status: {exit}; stderr: {stderr}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "it gave up after {elapsed:?}, before database.connect_timeout (1s)"
    );
    for needle in [
        &format!("127.0.0.1:{closed}"),
        "DATABASE_URL",
        "database.connect_timeout",
    ] {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    assert!(
        !stderr.contains("panicked"),
        "a message, not a panic: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_the_buffered_activity_before_exiting() {
    // Nothing is written before shutdown: the batch never fills and the
    // interval never passes.
    let mut server = start_server_with(&[
        ("BOARDROOM__ACTIVITY__FLUSH_INTERVAL", "1h"),
        ("BOARDROOM__ACTIVITY__BATCH_SIZE", "10000"),
    ])
    .await;
    let token = service_token(&server);
    let user = uuid::Uuid::new_v4();
    let events: Vec<String> = (0..100)
        .map(|i| format!(r#"{{"kind":"doc.read","metadata":{{"n":{i}}}}}"#))
        .collect();
    let body = format!(r#"{{"events":[{}]}}"#, events.join(","));
    let posts = 20;
    for _ in 0..posts {
        let request = format!(
            "POST /v1/users/{user}/activity HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, response) = http(server.addr, &request).await.expect("a response");
        assert_eq!(status, 202, "{response}\n{}", server.log_tail());
    }
    let database_url = format!("{}/{}", postgres_base_url(), server.database);
    let count = || async {
        let mut conn = sqlx::PgConnection::connect(&database_url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM user_activity WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        let _ = conn.close().await;
        n
    };
    assert_eq!(count().await, 0, "still buffered before SIGTERM");

    send_sigterm(&server.child);
    let exit = wait_exit(&mut server.child, Duration::from_secs(30));
    assert!(exit.success(), "exit status: {exit}\n{}", server.log_tail());
    assert_eq!(
        count().await,
        posts * 100,
        "every accepted event written at shutdown"
    );
    drop_database(&server).await;
}
