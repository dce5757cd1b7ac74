//! The notification providers tests send to: a private aiosmtpd (a real SMTP
//! server, started on a free port with its own folder) and a stub HTTP
//! gateway (push/SMS are third-party APIs) that can fail or hang on purpose.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use serde_json::Value;
use uuid::Uuid;

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running aiosmtpd; stopped (and its folder removed) on drop.
pub struct SmtpSink {
    child: Child,
    /// Its port.
    pub port: u16,
    /// Where accepted messages are saved.
    pub folder: PathBuf,
}

impl SmtpSink {
    /// Starts one accepting everything.
    pub fn start() -> Self {
        Self::start_refusing(0.0, 451)
    }

    /// Starts one that accepts everything and keeps nothing (for benchmarks:
    /// [`SmtpSink::messages`] stays empty).
    pub fn start_discarding() -> Self {
        Self::spawn(0.0, 451, true)
    }

    /// Starts one that refuses `share` (0..1) of messages with `code`.
    pub fn start_refusing(share: f64, code: u16) -> Self {
        Self::spawn(share, code, false)
    }

    fn spawn(share: f64, code: u16, discard: bool) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/support/smtp_sink.py");
        let folder =
            std::env::temp_dir().join(format!("boardroom-smtp-{}", Uuid::new_v4().simple()));
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--port", &port.to_string()])
            .arg("--folder")
            .arg(&folder)
            .args(["--refuse", &share.to_string(), "--code", &code.to_string()])
            .args(discard.then_some("--discard"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs (aiosmtpd is installed by scripts/test and .ci/run)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(
            line.trim(),
            "READY",
            "the SMTP sink did not start (is aiosmtpd installed? `python3 -m pip install aiosmtpd`)"
        );
        Self {
            child,
            port,
            folder,
        }
    }

    /// The sink process's id (benchmarks read its CPU time from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `smtp://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far (recipients, messageId, subject, text, html).
    pub fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.folder)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        paths.sort();
        paths
            .iter()
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// What the gateway stub saw.
#[derive(Default)]
pub struct GatewayLog {
    /// Times each delivery id was answered 2xx.
    pub accepted: HashMap<String, u32>,
    /// Requests per delivery id (any answer).
    pub presented: HashMap<String, u32>,
    /// Requests without an Idempotency-Key or with the wrong auth header.
    pub malformed: u32,
}

/// How the stub answers.
pub struct GatewayBehaviour {
    /// Answer everything with 500 (an outage).
    pub outage: AtomicBool,
    /// Of other requests, per mille answered 500.
    pub fail_per_mille: AtomicU64,
    /// Of other requests, per mille left hanging.
    pub hang_per_mille: AtomicU64,
}

/// A stub push/SMS gateway on a free port (runs on the test's runtime).
pub struct GatewayStub {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub log: Arc<Mutex<GatewayLog>>,
    /// How it answers (change it while the test runs).
    pub behaviour: Arc<GatewayBehaviour>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct StubState {
    log: Arc<Mutex<GatewayLog>>,
    behaviour: Arc<GatewayBehaviour>,
    counter: Arc<AtomicU64>,
    auth: Option<String>,
}

async fn receive(State(stub): State<StubState>, headers: HeaderMap, body: String) -> StatusCode {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let auth_ok = match &stub.auth {
        Some(expected) => {
            headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
        }
        None => true,
    };
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    let Some(key) = key.filter(|_| auth_ok && parsed.is_some()) else {
        stub.log.lock().unwrap().malformed += 1;
        return StatusCode::BAD_REQUEST;
    };
    *stub
        .log
        .lock()
        .unwrap()
        .presented
        .entry(key.clone())
        .or_default() += 1;
    if stub.behaviour.outage.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    // A deterministic spread (every n-th request), not randomness.
    let n = stub.counter.fetch_add(1, Ordering::SeqCst) % 1000;
    let fail = stub.behaviour.fail_per_mille.load(Ordering::SeqCst);
    let hang = stub.behaviour.hang_per_mille.load(Ordering::SeqCst);
    let slot = (n * 617) % 1000;
    if slot < hang {
        tokio::time::sleep(Duration::from_secs(120)).await;
        return StatusCode::GATEWAY_TIMEOUT;
    }
    if slot < hang + fail {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    *stub.log.lock().unwrap().accepted.entry(key).or_default() += 1;
    StatusCode::ACCEPTED
}

impl GatewayStub {
    /// Starts a stub that checks `Authorization: <auth>` when given.
    pub async fn start(auth: Option<&str>) -> Self {
        let log = Arc::new(Mutex::new(GatewayLog::default()));
        let behaviour = Arc::new(GatewayBehaviour {
            outage: AtomicBool::new(false),
            fail_per_mille: AtomicU64::new(0),
            hang_per_mille: AtomicU64::new(0),
        });
        let state = StubState {
            log: log.clone(),
            behaviour: behaviour.clone(),
            counter: Arc::new(AtomicU64::new(0)),
            auth: auth.map(str::to_owned),
        };
        let app = Router::new()
            .route("/send", post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            log,
            behaviour,
            task,
        }
    }

    /// `http://addr/send`.
    pub fn url(&self) -> String {
        format!("http://{}/send", self.addr)
    }
}

impl Drop for GatewayStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
