//! Database outages, seen from outside the running service.
//!
//! The app is cut off from PostgreSQL by a TCP proxy this test controls —
//! never by stopping the shared PostgreSQL server other tests use. The app's
//! database URL points at the proxy; cutting drops every live connection and
//! refuses new ones, restoring accepts again.
//!
//! - While the app runs: after a cut, within 5 s `/health/ready` is `503`
//!   with its database check down and API calls are `503` envelopes with
//!   `Retry-After`; after restoring, within 5 s both answer `200` again, with
//!   the same process. No response is ever a `500`.
//! - At start: with the database unreachable the app retries, then gives up
//!   after `database.connect_timeout` with an error that says what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boardroom::config::Settings;
use boardroom::startup::Application;
use boardroom_tests::{SendExpect, TEST_JWT_SECRET, TestApp, drop_database, server_url};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

/// How soon the service must notice an outage, and its end.
const WITHIN: Duration = Duration::from_secs(5);

/// A TCP proxy in front of PostgreSQL that the test can cut and restore.
struct DbProxy {
    addr: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicUsize>,
    accept_loop: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    up: bool,
    /// Bumped at every cut, so a connection ends even if the link is restored
    /// before its task notices the cut.
    cuts: u64,
}

impl DbProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    async fn start(upstream: SocketAddr, up: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link { up, cuts: 0 });
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept_loop = tokio::spawn(accept_loop(
            listener,
            upstream,
            link.clone(),
            Arc::clone(&accepted),
        ));
        Self {
            addr,
            link,
            accepted,
            accept_loop,
        }
    }

    /// Drops every live connection and refuses new ones until `restore`.
    fn cut(&self) {
        self.link.send_modify(|link| {
            link.up = false;
            link.cuts += 1;
        });
    }

    fn restore(&self) {
        self.link.send_modify(|link| link.up = true);
    }

    /// Connections the proxy has accepted (and refused while cut) so far.
    fn connection_attempts(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept_loop.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    link: watch::Sender<Link>,
    accepted: Arc<AtomicUsize>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let state = *link.borrow();
        if !state.up {
            // Refused: closed at once, before PostgreSQL's handshake.
            drop(client);
            continue;
        }
        let mut cut = link.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.wait_for(|now| now.cuts != state.cuts) => {}
            }
            // Both sockets are dropped here: the app sees its connection die.
        });
    }
}

// --- the app under test -----------------------------------------------------

/// The shared PostgreSQL server's TCP address (what the proxy forwards to).
async fn upstream_addr() -> SocketAddr {
    let options = sqlx::postgres::PgConnectOptions::from_str(&server_url()).unwrap();
    tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .unwrap()
        .next()
        .expect("the PostgreSQL host resolves")
}

/// `url` with its host and port replaced by `addr`; path and query kept.
fn url_through(url: &str, addr: SocketAddr) -> String {
    let scheme_end = url.find("://").expect("a URL with a scheme") + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
    format!(
        "{}{userinfo}{addr}{}",
        &url[..scheme_end],
        &rest[authority_end..]
    )
}

/// Settings for an app built directly (not through [`TestApp`], which insists
/// on a successful start), with its own database reached through `proxy`.
fn direct_settings(proxy: &DbProxy, database: &str) -> Settings {
    let mut settings = Settings::defaults();
    settings.server.addr = "127.0.0.1:0".parse().unwrap();
    settings.auth.jwt_secret = TEST_JWT_SECRET.to_owned();
    settings.database.url = url_through(&format!("{}/{database}", server_url()), proxy.addr);
    settings
}

fn fresh_database_name() -> String {
    format!("boardroom_test_{}", Uuid::new_v4().simple())
}

/// What one probe saw.
#[derive(Debug, Clone)]
struct Observation {
    probe: Probe,
    /// When the request was sent and answered, since the test's start.
    sent: Duration,
    answered: Duration,
    /// `Err` when no HTTP response came back.
    status: Result<u16, String>,
    retry_after: Option<String>,
    body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Ready,
    Api,
}

/// Probes `/health/ready` and an API read every 100 ms, recording everything.
struct Poller {
    origin: Instant,
    observations: Arc<Mutex<Vec<Observation>>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    fn start(
        client: reqwest::Client,
        base: String,
        api_path: String,
        token: String,
        origin: Instant,
    ) -> Self {
        let observations = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = watch::channel(false);
        let sink = Arc::clone(&observations);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut probes = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                for probe in [Probe::Ready, Probe::Api] {
                    let request = match probe {
                        Probe::Ready => client.get(format!("{base}/health/ready")),
                        Probe::Api => client.get(format!("{base}{api_path}")).bearer_auth(&token),
                    };
                    let sink = Arc::clone(&sink);
                    probes.spawn(async move {
                        let sent = origin.elapsed();
                        let observation = match request.send().await {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let retry_after = response
                                    .headers()
                                    .get("retry-after")
                                    .map(|v| v.to_str().unwrap_or("<not text>").to_owned());
                                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                                Observation {
                                    probe,
                                    sent,
                                    answered: origin.elapsed(),
                                    status: Ok(status),
                                    retry_after,
                                    body,
                                }
                            }
                            Err(error) => Observation {
                                probe,
                                sent,
                                answered: origin.elapsed(),
                                status: Err(error.to_string()),
                                retry_after: None,
                                body: Value::Null,
                            },
                        };
                        sink.lock().unwrap().push(observation);
                    });
                }
                // Reap finished probes so the set stays small.
                while probes.try_join_next().is_some() {}
            }
            // Let the probes in flight finish (each is bounded by the client timeout).
            while probes.join_next().await.is_some() {}
        });
        Self {
            origin,
            observations,
            stop,
            task,
        }
    }

    fn snapshot(&self) -> Vec<Observation> {
        self.observations.lock().unwrap().clone()
    }

    /// Time since the poller started.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Waits until an observation sent at or after `since` satisfies `want`
    /// and was answered within [`WITHIN`] of `since`; returns it, or panics
    /// with the timeline.
    async fn wait_for(
        &self,
        what: &str,
        since: Duration,
        want: impl Fn(&Observation) -> bool,
    ) -> Observation {
        let deadline = since + WITHIN;
        loop {
            let seen = self.snapshot();
            if let Some(found) = seen
                .iter()
                .filter(|o| o.sent >= since && o.answered <= deadline)
                .find(|o| want(o))
            {
                return found.clone();
            }
            if self.now() > deadline + Duration::from_millis(200) {
                panic!("{what}: not seen within {WITHIN:?}\n{}", timeline(&seen));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) -> Vec<Observation> {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the probes finish")
            .unwrap();
        Arc::try_unwrap(self.observations)
            .expect("the poller is stopped")
            .into_inner()
            .unwrap()
    }
}

fn timeline(observations: &[Observation]) -> String {
    let mut sorted = observations.to_vec();
    sorted.sort_by_key(|o| o.sent);
    sorted
        .iter()
        .map(|o| {
            format!(
                "  {:>6}ms → {:>6}ms {:?} {:?} retry-after={:?} {}",
                o.sent.as_millis(),
                o.answered.as_millis(),
                o.probe,
                o.status,
                o.retry_after,
                o.body.to_string().chars().take(160).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ready_ok(o: &Observation) -> bool {
    o.probe == Probe::Ready && o.status == Ok(200) && o.body["data"]["status"] != "down"
}

fn is_ready_down(o: &Observation) -> bool {
    o.probe == Probe::Ready
        && o.status == Ok(503)
        && o.body["success"] == false
        && o.body["data"]["status"] == "down"
        && o.body["data"]["checks"]["database"]["status"] == "down"
}

fn is_api_ok(o: &Observation, organization_id: &str) -> bool {
    o.probe == Probe::Api && o.status == Ok(200) && o.body["data"]["id"] == organization_id
}

/// A `503` envelope with a `Retry-After` header of whole seconds.
fn is_api_unavailable(o: &Observation) -> bool {
    o.probe == Probe::Api
        && o.status == Ok(503)
        && o.retry_after
            .as_deref()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|seconds| seconds >= 1)
        && o.body["success"] == false
        && o.body["error"]["code"].is_string()
        && o.body["error"]["message"].is_string()
        && o.body["error"]["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_database_answers_503_and_recovers_without_a_restart() {
    let proxy = DbProxy::start(upstream_addr().await, true).await;
    let app = TestApp::spawn_with(|settings| {
        settings.database.url = url_through(&settings.database.url, proxy.addr);
    })
    .await;
    let base = app.url("");
    let token = app.service_token();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let created = app
        .create_org(&token, &format!("outage-{}", Uuid::new_v4().simple()))
        .await;
    let organization_id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("created organization: {created}"))
        .to_owned();

    let poller = Poller::start(
        client,
        base,
        format!("/v1/organizations/{organization_id}"),
        token,
        Instant::now(),
    );

    // Healthy to begin with.
    poller
        .wait_for("ready 200 before the cut", Duration::ZERO, is_ready_ok)
        .await;
    poller
        .wait_for("API 200 before the cut", Duration::ZERO, |o| {
            is_api_ok(o, &organization_id)
        })
        .await;

    // Cut: every live connection dropped, new ones refused.
    let cut_at = poller.now();
    proxy.cut();
    poller
        .wait_for("ready 503 with the database down", cut_at, is_ready_down)
        .await;
    poller
        .wait_for(
            "API 503 envelope with Retry-After",
            cut_at,
            is_api_unavailable,
        )
        .await;
    // Stay cut a little longer: the answers must remain 503s, not turn into 500s.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Restore: the same process recovers by itself.
    let restored_at = poller.now();
    proxy.restore();
    poller
        .wait_for("ready 200 after restoring", restored_at, is_ready_ok)
        .await;
    poller
        .wait_for("API 200 after restoring", restored_at, |o| {
            is_api_ok(o, &organization_id)
        })
        .await;
    let observations = poller.stop().await;

    // Never a 500 (nor any 5xx but 503), and every probe got an HTTP answer.
    let bad: Vec<Observation> = observations
        .iter()
        .filter(|o| match o.status {
            Ok(status) => (500..600).contains(&status) && status != 503,
            Err(_) => true,
        })
        .cloned()
        .collect();
    assert!(
        bad.is_empty(),
        "answers other than 200/503 or no answer at all:\n{}\nfull timeline:\n{}",
        timeline(&bad),
        timeline(&observations)
    );
    // During the cut, a probe answered 200 only if it was served before the cut
    // took effect; after the first 503s nothing may claim to be healthy again
    // until the link is restored.
    let first_down = observations
        .iter()
        .filter(|o| o.sent >= cut_at && (is_ready_down(o) || is_api_unavailable(o)))
        .map(|o| o.answered)
        .min()
        .unwrap();
    let healthy_while_cut: Vec<Observation> = observations
        .iter()
        .filter(|o| o.sent > first_down && o.answered < restored_at && o.probe == Probe::Ready)
        .filter(|o| o.status == Ok(200))
        .cloned()
        .collect();
    assert!(
        healthy_while_cut.is_empty(),
        "ready said 200 while the database was cut off:\n{}",
        timeline(&healthy_while_cut)
    );
    let during_cut = observations
        .iter()
        .filter(|o| o.sent >= cut_at && o.answered < restored_at)
        .count();
    assert!(
        during_cut >= 10,
        "the poller kept probing during the cut: {during_cut} probes"
    );
    // Shown with `--nocapture`.
    println!("timeline:\n{}", timeline(&observations));

    // Same process throughout: it still serves, and stops cleanly.
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("the app stops within 20 s")
        .expect("the app ran and stopped without error");
    drop(proxy);
}

/// A database outage is the `database` breaker's to judge: the domain's
/// own breaker stays closed however many `503`s its handlers answer, so the
/// API is back as soon as the `database` breaker closes (within its
/// `reset_timeout`, 1 s, plus a probe) instead of waiting out the domain's
/// longer `reset_timeout` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_opens_the_database_breaker_not_the_domains() {
    let proxy = DbProxy::start(upstream_addr().await, true).await;
    let app = TestApp::spawn_with(|settings| {
        settings.database.url = url_through(&settings.database.url, proxy.addr);
    })
    .await;
    let token = app.service_token();
    let created = app
        .create_org(&token, &format!("outage-{}", Uuid::new_v4().simple()))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/organizations/{id}");
    app.get(&path, Some(&token)).expect_status(200).await;

    proxy.cut();
    // Well over the organizations breaker's rule (10 failures of >= 20 calls).
    let mut unavailable = 0;
    for _ in 0..60 {
        let response = app.get(&path, Some(&token)).send().await.unwrap();
        let status = response.status().as_u16();
        assert!(
            status == 503 || status == 200,
            "only 503 (or a 200 before the cut took effect): {status}"
        );
        unavailable += usize::from(status == 503);
    }
    assert!(unavailable >= 50, "{unavailable} of 60 answered 503");
    let ready = app.get("/health/ready", None).send().await.unwrap();
    let ready: Value = ready.json().await.unwrap();
    let breakers = &ready["data"]["checks"]["services"]["breakers"];
    assert!(
        breakers["database"] == "open" || breakers["database"] == "half_open",
        "{ready}"
    );
    assert_eq!(breakers["organizations"], "closed", "{ready}");

    let restored = Instant::now();
    proxy.restore();
    loop {
        let response = app.get(&path, Some(&token)).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(2),
            "still {} {:?} after the database returned",
            response.status(),
            restored.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(Duration::from_secs(20), app.stop())
        .await
        .expect("the app stops within 20 s")
        .expect("the app ran and stopped without error");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_the_database_unreachable_retries_then_fails_clearly() {
    let proxy = DbProxy::start(upstream_addr().await, false).await;
    let database = fresh_database_name();
    let mut settings = direct_settings(&proxy, &database);
    settings.database.connect_timeout = Duration::from_secs(2);

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), Application::build(settings))
        .await
        .expect("build gives up on its own");
    let elapsed = started.elapsed();
    let Err(error) = result else {
        panic!("the app started without a database");
    };
    let message = format!("{error:#}");

    assert!(
        elapsed >= Duration::from_millis(1900),
        "gave up after {elapsed:?}, before database.connect_timeout (2s): {message}"
    );
    assert!(
        elapsed <= Duration::from_secs(7),
        "took {elapsed:?} to give up with database.connect_timeout = 2s: {message}"
    );
    assert!(
        proxy.connection_attempts() >= 3,
        "it retried: {} connection attempts in {elapsed:?}",
        proxy.connection_attempts()
    );
    // The message says what failed and what to do about it.
    for needle in ["PostgreSQL", "DATABASE_URL", "database.connect_timeout"] {
        assert!(
            message.contains(needle),
            "{needle:?} missing from: {message}"
        );
    }
    assert!(
        message.contains(&proxy.addr.to_string()),
        "the message names the server it tried: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_waits_for_a_database_that_comes_back_within_connect_timeout() {
    let proxy = DbProxy::start(upstream_addr().await, false).await;
    let database = fresh_database_name();
    let mut settings = direct_settings(&proxy, &database);
    settings.database.connect_timeout = Duration::from_secs(20);

    let build = tokio::spawn(Application::build(settings));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!build.is_finished(), "build gave up while it should retry");
    let refused = proxy.connection_attempts();
    assert!(refused >= 2, "it retried while down: {refused} attempts");
    proxy.restore();

    let app = tokio::time::timeout(Duration::from_secs(15), build)
        .await
        .expect("build finishes once the database is back")
        .unwrap()
        .expect("the app starts once the database is back");
    let base = format!("http://{}", app.local_addr());
    let (stop_app, app_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = app_stopped.await;
    }));
    let ready = reqwest::get(format!("{base}/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);

    stop_app.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the app stops within 20 s")
        .unwrap()
        .unwrap();
    drop(proxy);
    drop_database(&database).await;
}
