//! The live dashboard in a real browser: headless Chromium (Debian's
//! `chromium`, driven over the DevTools pipe by `tests/dashboard/read-dom.js`)
//! loads `/dashboard` while load runs and a breaker is forced open through
//! the admin API; the page's DOM must show that breaker `open` and request
//! counts rising between two reads, without a reload. A screenshot is saved
//! to `target/test-artifacts/dashboard.png`. A non-operator token gets the
//! login form back with the server's `403` message.
//!
//! `CHROMIUM` overrides the browser path (default `/usr/bin/chromium`),
//! `NODE` the node binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use boardroom_tests::{SendExpect, TestApp};
use serde_json::{Value, json};

fn repo_path(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Runs the DOM reader against `url`; returns one JSON value per read.
async fn read_dom(url: &str, reads: u32, screenshot: Option<&PathBuf>) -> Vec<Value> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut command = tokio::process::Command::new(node);
    command
        .arg(repo_path("tests/dashboard/read-dom.js"))
        .args(["--chromium", &chromium, "--url", url])
        .args(["--reads", &reads.to_string(), "--gap-ms", "3000"])
        .args(["--timeout-ms", "90000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(path) = screenshot {
        command.arg("--screenshot").arg(path);
    }
    let output = tokio::time::timeout(Duration::from_secs(150), command.output())
        .await
        .expect("the browser run ends within 150 s")
        .expect("node runs (scripts/test installs nodejs and chromium)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "read-dom failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_forced_open_breaker_and_rising_counts() {
    let app = Arc::new(TestApp::spawn().await);
    let operator = app.service_token();
    let (owner, org) = app.owner_with_org("dashboard").await;
    let (user, _) = app.member(&owner, &org, "member").await;

    // Load: two clients reading a user and an organization until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for client in 0..2 {
        let (app, stop, sent, owner) = (app.clone(), stop.clone(), sent.clone(), owner.clone());
        let path = if client == 0 {
            format!("/v1/users/{user}")
        } else {
            format!("/v1/organizations/{org}")
        };
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Organizations answer 503 once its breaker is forced open.
                let _ = app.get(&path, Some(&owner)).send().await;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    app.post_json("/admin/breakers/organizations/open", &operator, &json!({}))
        .expect_status(200)
        .await;

    let screenshot = repo_path("target/test-artifacts/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let url = app.url(&format!("/dashboard#token={operator}"));
    let reads = read_dom(&url, 2, Some(&screenshot)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) > 10, "the load ran");

    let (first, second) = (&reads[0], &reads[1]);
    assert_eq!(first["connection"], "live", "{first}");
    assert_eq!(first["loginVisible"], false, "{first}");
    assert!(
        !first["location"].as_str().unwrap().contains("token"),
        "the token left the address bar: {first}"
    );
    let organizations = &second["tiles"]["organizations"];
    assert_eq!(organizations["state"], "forced_open", "{second}");
    assert!(
        organizations["breaker"].as_str().unwrap().contains("open"),
        "{organizations}"
    );
    assert_eq!(second["tiles"]["users"]["state"], "closed", "{second}");
    assert_eq!(second["status"], "degraded", "{second}");
    for name in ["users", "organizations", "database"] {
        assert!(second["tiles"][name].is_object(), "{name} tile: {second}");
    }

    // Live: newer snapshots arrived without a reload and the counts rose.
    assert!(
        second["updates"].as_u64() > first["updates"].as_u64(),
        "{first}\n{second}"
    );
    let count = |read: &Value, name: &str| read["tiles"][name]["count"].as_u64().unwrap();
    assert!(
        count(second, "users") > count(first, "users"),
        "users requests rose: {} → {}",
        count(first, "users"),
        count(second, "users")
    );
    assert!(count(second, "organizations") > count(first, "organizations"));
    assert!(second["tiles"]["users"]["sparkline"].as_u64().unwrap() >= 2);
    assert!(
        second["tiles"]["users"]["budget"]
            .as_str()
            .unwrap()
            .starts_with("budget")
    );

    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG"),
        "a PNG at {}",
        screenshot.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_operator_token_is_refused_by_the_page() {
    let app = TestApp::spawn().await;
    let (owner, _) = app.owner_with_org("dashboard-refused").await;
    let reads = read_dom(&app.url(&format!("/dashboard#token={owner}")), 1, None).await;
    let read = &reads[0];
    assert_eq!(read["connection"], "refused", "{read}");
    assert_eq!(read["loginVisible"], true, "{read}");
    assert!(
        read["loginError"]
            .as_str()
            .unwrap()
            .contains("service_role"),
        "{read}"
    );
    assert_eq!(read["tiles"], json!({}), "no data shown: {read}");
}
