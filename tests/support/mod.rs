//! Test support: the real application on port 0 against a fresh database.
//!
//! [`TestApp::spawn`] creates `boardroom_test_<uuid>` on the local PostgreSQL
//! (`postgres://postgres@127.0.0.1:5432`, or `BOARDROOM_TEST_DATABASE_URL`),
//! starts the app on a random port with the test-only debug routes on, and
//! drops the database when the `TestApp` is dropped (best effort).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod clamd;
pub mod providers;
pub mod redis;
pub mod s3;
pub mod s3s;

use std::{net::SocketAddr, time::Duration};

use boardroom::{auth::JwtKeys, config::Settings, startup::Application};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

/// The secret test apps sign and verify with.
pub const TEST_JWT_SECRET: &str = "test-secret-for-the-black-box-tests";

/// The server (without database name) tests create their databases on.
pub fn server_url() -> String {
    std::env::var("BOARDROOM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A running application and a client for it.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The settings it was built with.
    pub settings: Settings,
    /// The database it owns.
    pub database: String,
    /// A plain HTTP client.
    pub client: Client,
    /// The app's pool (tests may close it to simulate a lost database).
    pub pool: PgPool,
    keys: JwtKeys,
    /// False for a peer started by [`TestApp::spawn_peer`]: the first app drops the database.
    owns_database: bool,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts the app with the test defaults.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the app after `configure` adjusts the test defaults.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let database = format!("boardroom_test_{}", Uuid::new_v4().simple());
        Self::spawn_on(&database, configure).await
    }

    /// Starts another instance on `database` (e.g. an API-only instance and
    /// a worker instance sharing one database); created if missing.
    pub async fn spawn_on(database: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        let database = database.to_owned();
        let mut settings = Settings::defaults();
        settings.server.addr = "127.0.0.1:0".parse().unwrap();
        settings.server.shutdown_grace = Duration::from_secs(5);
        settings.database.url = format!("{}/{database}", server_url());
        settings.database.max_connections = 5;
        settings.database.connect_timeout = Duration::from_secs(10);
        settings.auth.jwt_secret = TEST_JWT_SECRET.to_owned();
        settings.debug.routes = true;
        // Stored assets go to a folder of this test, removed on drop.
        settings.storage.path = std::env::temp_dir()
            .join(format!("boardroom-storage-{database}"))
            .display()
            .to_string();
        configure(&mut settings);
        Self::start(settings, database, true).await
    }

    /// A second instance of this app: the same settings (database, Redis,
    /// secret) on another free port, as behind a load balancer.
    pub async fn spawn_peer(&self) -> Self {
        let mut settings = self.settings.clone();
        settings.server.addr = "127.0.0.1:0".parse().unwrap();
        Self::start(settings, self.database.clone(), false).await
    }

    async fn start(settings: Settings, database: String, owns_database: bool) -> Self {
        settings.validate().expect("test settings are valid");

        let application = Application::build(settings.clone())
            .await
            .expect("the application starts");
        let addr = application.local_addr();
        let pool = application.pool().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until_stopped(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            keys: JwtKeys::new(&settings.auth.jwt_secret).unwrap(),
            settings,
            database,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            pool,
            owns_database,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A user token for `user_id`, valid for an hour.
    pub fn token_for(&self, user_id: Uuid) -> String {
        self.keys
            .mint(user_id, false, Duration::from_secs(3600))
            .unwrap()
    }

    /// An operator (`service_role`) token.
    pub fn service_token(&self) -> String {
        self.keys
            .mint(Uuid::new_v4(), true, Duration::from_secs(3600))
            .unwrap()
    }

    /// Signs arbitrary claims with the app's secret.
    pub fn sign(&self, claims: &Value) -> String {
        self.keys.sign(claims).unwrap()
    }

    /// The text of `GET /metrics`.
    pub async fn metrics_text(&self) -> String {
        self.get("/metrics", None)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET with an optional bearer token.
    pub fn get(&self, path: &str, token: Option<&str>) -> RequestBuilder {
        authorize(self.client.get(self.url(path)), token)
    }

    /// DELETE with a bearer token.
    pub fn delete(&self, path: &str, token: &str) -> RequestBuilder {
        authorize(self.client.delete(self.url(path)), Some(token))
    }

    /// POST a JSON body with a bearer token.
    pub fn post_json(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        authorize(self.client.post(self.url(path)), Some(token)).json(body)
    }

    /// PATCH a JSON body with a bearer token.
    pub fn patch_json(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        authorize(self.client.patch(self.url(path)), Some(token)).json(body)
    }

    /// Creates an organization as the holder of `token`; returns its `data`.
    pub async fn create_org(&self, token: &str, slug: &str) -> Value {
        let response = self
            .post_json(
                "/v1/organizations",
                token,
                &json!({"name": format!("Org {slug}"), "slug": slug}),
            )
            .send()
            .await
            .unwrap();
        expect_status(response, 201).await["data"].clone()
    }

    /// Creates a user in `org` with `role`; returns its `data`.
    pub async fn create_user(&self, token: &str, org: &str, email: &str, role: &str) -> Value {
        let response = self
            .post_json(
                "/v1/users",
                token,
                &json!({
                    "email": email,
                    "firstName": "Ada",
                    "lastName": "Lovelace",
                    "designation": "Director",
                    "organizationId": org,
                    "role": role,
                }),
            )
            .send()
            .await
            .unwrap();
        expect_status(response, 201).await["data"].clone()
    }

    /// A fresh identity that owns a fresh organization: (owner token, org id).
    pub async fn owner_with_org(&self, slug: &str) -> (String, String) {
        let token = self.token_for(Uuid::new_v4());
        let org = self.create_org(&token, slug).await;
        (token, org["id"].as_str().unwrap().to_owned())
    }

    /// A user created in `org` with `role`, and a token for them: (user id, token).
    pub async fn member(&self, owner_token: &str, org: &str, role: &str) -> (String, String) {
        let email = format!("{}@example.org", Uuid::new_v4().simple());
        let user = self.create_user(owner_token, org, &email, role).await;
        let id = user["id"].as_str().unwrap().to_owned();
        let token = self.token_for(id.parse().unwrap());
        (id, token)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

fn authorize(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// Sends a request and checks its answer in one step, for the many tests
/// whose only interest in a response is its status or error envelope.
pub trait SendExpect {
    /// Sends the request and does [`expect_status`] on its response.
    fn expect_status(self, status: u16) -> impl Future<Output = Value>;
    /// Sends the request and does [`expect_error`] on its response.
    fn expect_error(self, status: u16, code: &str) -> impl Future<Output = Value>;
}

impl SendExpect for RequestBuilder {
    async fn expect_status(self, status: u16) -> Value {
        expect_status(self.send().await.unwrap(), status).await
    }

    async fn expect_error(self, status: u16, code: &str) -> Value {
        expect_error(self.send().await.unwrap(), status, code).await
    }
}

/// Asserts the status (printing the body when it differs) and returns the JSON body.
pub async fn expect_status(response: Response, status: u16) -> Value {
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts an error envelope with `status` and `code`; returns the `error` object.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let request_id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = expect_status(response, status).await;
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    let id = body["error"]["requestId"].as_str().unwrap();
    assert!(!id.is_empty(), "{body}");
    assert_eq!(
        Some(id.to_owned()),
        request_id,
        "requestId matches the header"
    );
    body["error"].clone()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = std::fs::remove_dir_all(&self.settings.storage.path);
        if !self.owns_database {
            return;
        }
        let database = self.database.clone();
        // Best effort, on its own thread: Drop cannot await, and the test's
        // runtime may be single-threaded.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drop_database(&database));
        })
        .join();
    }
}

/// Drops `database`, disconnecting whoever still uses it.
pub async fn drop_database(database: &str) {
    if let Ok(mut connection) = PgConnection::connect(&format!("{}/postgres", server_url())).await {
        let sql = format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut connection)
            .await;
        let _ = connection.close().await;
    }
}
