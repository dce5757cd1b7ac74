//! Typed, validated configuration.
//!
//! Settings come from three layers, later ones winning:
//! 1. `config/default.toml`, compiled into the binary (so it runs from any directory);
//! 2. an optional file given with `--config FILE`;
//! 3. the environment: `DATABASE_URL` for `database.url`, then
//!    `BOARDROOM__SECTION__KEY` for any key (`BOARDROOM__SERVER__ADDR`).
//!
//! Durations are human-readable (`"10s"`, `"250ms"`), sizes accept `"1MiB"`.
//! A bad value is a [`ConfigError`] whose one-line message names the key and what
//! is allowed; the binary prints it and exits non-zero.
//!
//! ```
//! let settings = boardroom::config::Settings::defaults();
//! assert_eq!(settings.server.addr.port(), 8080);
//! assert!(settings.validate().is_ok());
//! ```

use std::{collections::BTreeMap, net::SocketAddr, path::Path, str::FromStr, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use resilience::stack::ServiceConfig;
use serde::{Deserialize, Serialize};

/// The defaults, embedded so the binary needs no files beside it.
pub const DEFAULT_TOML: &str = include_str!("../../../config/default.toml");

/// The development secret shipped in `config/default.toml`; using it logs a warning.
pub const DEV_JWT_SECRET: &str = "boardroom-development-secret-do-not-use-in-production";

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// HTTP server.
    pub server: ServerSettings,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Bearer-token authentication.
    pub auth: AuthSettings,
    /// Logging.
    pub log: LogSettings,
    /// Readiness checks.
    pub health: HealthSettings,
    /// Test-only switches.
    pub debug: DebugSettings,
    /// Performance-budget alerts: evaluation and the optional webhook.
    pub alerts: AlertSettings,
    /// The live dashboard at `/dashboard`.
    pub dashboard: DashboardSettings,
    /// `[activity]`: the activity buffer.
    pub activity: ActivitySettings,
    /// `[cache]`: the shared second level (Redis) and cross-instance invalidation.
    #[serde(default)]
    pub cache: crate::shared_cache::CacheSettings,
    /// `[jobs]`: the background job workers (bulk operations).
    #[serde(default)]
    pub jobs: JobsSettings,
    /// `[storage]`: the object store of assets.
    #[serde(default)]
    pub storage: crate::assets::settings::StorageSettings,
    /// `[scanner]`: the clamd virus scanner of assets.
    #[serde(default)]
    pub scanner: crate::assets::settings::ScannerSettings,
    /// `[assets]`: uploads, processing and downloads.
    #[serde(default)]
    pub assets: crate::assets::settings::AssetSettings,
    /// `[notifications]`: delivery workers, retries, gateways, file outbox.
    #[serde(default)]
    pub notifications: crate::notifications::config::NotificationSettings,
    /// `[email]`: the SMTP provider of the email channel.
    #[serde(default)]
    pub email: crate::notifications::config::EmailSettings,
    /// `[services.<name>]`: the resilience stack of each domain router
    /// (`users`, `organizations`) and dependency (`database`); see
    /// [`crate::stacks`]. A name left out gets the defaults.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
}

/// `[server]`: the HTTP listener.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// `server.addr` — address to listen on; port 0 picks a free port. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// `server.shutdown_grace` — how long in-flight requests may run after SIGTERM/SIGINT. Default `10s`.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// `server.body_limit` — largest accepted request body, bytes or `"1MiB"`. Default `1MiB`.
    #[serde(with = "byte_size")]
    pub body_limit: usize,
    /// `server.request_timeout` — longest a request may take before a `503`. Default `30s`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
}

/// `[database]`: the PostgreSQL pool.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `database.url` — connection URL (also `DATABASE_URL`); the database is created if missing.
    /// Default `postgres://postgres@127.0.0.1:5432/boardroom`.
    #[serde(deserialize_with = "string_or_number")]
    pub url: String,
    /// `database.max_connections` — most pooled connections (1–1000). Default `10`.
    pub max_connections: u32,
    /// `database.connect_timeout` — how long to keep retrying at start while PostgreSQL is
    /// unreachable. Default `30s`.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// `database.acquire_timeout` — how long a request waits for a connection before a `503`.
    /// Default `2s`.
    #[serde(with = "duration")]
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// `[auth]`: bearer tokens.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `auth.jwt_secret` — HS256 secret (at least 16 characters). Default: a development
    /// secret, with a warning at start.
    #[serde(deserialize_with = "string_or_number")]
    pub jwt_secret: String,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &"<hidden>")
            .finish()
    }
}

impl AuthSettings {
    /// True when the development secret from `config/default.toml` is in use.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret == DEV_JWT_SECRET
    }
}

/// `[log]`: tracing output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `log.format` — `json` or `pretty`. Default `pretty`.
    pub format: LogFormat,
    /// `log.level` — filter directives as in `RUST_LOG`. Default `info`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Pretty,
}

/// `[health]`: readiness checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// `health.timeout` — longest the database check may take. Default `1s`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// `health.degraded_latency` — database round trip above which readiness is `degraded`.
    /// Default `250ms`.
    #[serde(with = "duration")]
    pub degraded_latency: Duration,
}

/// `[activity]`: the in-memory buffer activity events are written from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivitySettings {
    /// `activity.buffer_capacity` — most events held in memory (1–1,000,000). Default `10000`.
    pub buffer_capacity: usize,
    /// `activity.batch_size` — most events written by one statement (1–10,000). Default `1000`.
    pub batch_size: usize,
    /// `activity.flush_interval` — longest an event waits before its batch is written. Default `250ms`.
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// `activity.enqueue_timeout` — how long a posted event waits for room in a full
    /// buffer before a `503`. Default `1s`.
    #[serde(with = "duration")]
    pub enqueue_timeout: Duration,
    /// `activity.view_window` — a profile view is recorded at most once per
    /// (viewer, profile) within this window; `0s` records every view. Default `60s`.
    #[serde(with = "duration", default = "default_view_window")]
    pub view_window: Duration,
}

fn default_view_window() -> Duration {
    Duration::from_secs(60)
}

/// `[debug]`: switches for tests; never enable in production.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebugSettings {
    /// `debug.routes` — mount `GET /_debug/panic` and `GET /_debug/sleep?ms=`. Default `false`.
    pub routes: bool,
}

/// `[jobs]`: the workers that run bulk jobs (see [`crate::jobs`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSettings {
    /// `jobs.workers` — worker tasks in this process (0–64; 0 runs none, for an
    /// API-only instance). Default `2`.
    pub workers: usize,
    /// `jobs.lease` — how long a claimed job stays reserved for its worker
    /// without a committed batch; after a crash the job is taken again once it
    /// passes. Default `30s`.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// `jobs.poll_interval` — fallback poll when no `NOTIFY` arrives. Default `5s`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// `jobs.max_attempts` — tries of one batch that fails as a whole (the
    /// database refusing it) before the job is `failed`. Default `5`.
    pub max_attempts: u32,
    /// `jobs.callback_attempts` — deliveries of a job's `callbackUrl` before
    /// giving up. Default `5`.
    pub callback_attempts: u32,
    /// `jobs.callback_backoff` — wait before the second delivery, doubled each
    /// time (capped at 30 s). Default `1s`.
    #[serde(with = "duration")]
    pub callback_backoff: Duration,
    /// `jobs.callback_timeout` — longest one delivery may take. Default `10s`.
    #[serde(with = "duration")]
    pub callback_timeout: Duration,
    /// `jobs.max_body` — largest body of a bulk request such as
    /// `POST /v1/users/bulk-update` (100,000 ids are about 4 MB), bytes or
    /// `"8MiB"`. Default `8MiB`.
    #[serde(with = "byte_size")]
    pub max_body: usize,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            max_attempts: 5,
            callback_attempts: 5,
            callback_backoff: Duration::from_secs(1),
            callback_timeout: Duration::from_secs(10),
            max_body: 8 << 20,
        }
    }
}

impl JobsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > 64 {
            return Err(ConfigError::Invalid {
                key: "jobs.workers",
                value: self.workers.to_string(),
                allowed: "must be between 0 and 64".into(),
            });
        }
        check_duration("jobs.lease", self.lease, Duration::from_millis(100), HOUR)?;
        check_duration(
            "jobs.poll_interval",
            self.poll_interval,
            Duration::from_millis(10),
            HOUR,
        )?;
        check_duration(
            "jobs.callback_backoff",
            self.callback_backoff,
            Duration::ZERO,
            Duration::from_secs(60),
        )?;
        check_duration(
            "jobs.callback_timeout",
            self.callback_timeout,
            Duration::from_millis(1),
            Duration::from_secs(300),
        )?;
        for (key, value) in [
            ("jobs.max_attempts", self.max_attempts),
            ("jobs.callback_attempts", self.callback_attempts),
        ] {
            if !(1..=100).contains(&value) {
                return Err(ConfigError::Invalid {
                    key,
                    value: value.to_string(),
                    allowed: "must be between 1 and 100".into(),
                });
            }
        }
        if !(1..=GIB).contains(&self.max_body) {
            return Err(ConfigError::Invalid {
                key: "jobs.max_body",
                value: self.max_body.to_string(),
                allowed: "must be between 1 byte and 1GiB".into(),
            });
        }
        Ok(())
    }
}

/// `[alerts]`: when budgets are judged and where their alerts are posted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// `alerts.evaluation_interval` — how often every budget is judged even without traffic,
    /// so alerts also clear when calls stop (100ms–1m). Default `1s`.
    #[serde(with = "duration")]
    pub evaluation_interval: Duration,
    /// `alerts.history` — how many raised/resolved events `/admin/alerts` keeps (1–10000).
    /// Default `100`.
    pub history: usize,
    /// `alerts.webhook_url` — `http://` or `https://` URL every raised and resolved alert is
    /// POSTed to as JSON; empty for none. Default empty.
    #[serde(deserialize_with = "string_or_number")]
    pub webhook_url: String,
    /// `alerts.webhook_timeout` — longest one delivery attempt may take (1ms–1m). Default `5s`.
    #[serde(with = "duration")]
    pub webhook_timeout: Duration,
    /// `alerts.webhook_attempts` — attempts per event, the first included (1–20). Default `5`.
    pub webhook_attempts: u32,
    /// `alerts.webhook_base_delay` — wait before the first retry, doubling each time
    /// (1ms–1m). Default `500ms`.
    #[serde(with = "duration")]
    pub webhook_base_delay: Duration,
    /// `alerts.webhook_max_delay` — longest wait between two attempts (at least
    /// `webhook_base_delay`, at most 1h). Default `30s`.
    #[serde(with = "duration")]
    pub webhook_max_delay: Duration,
}

/// `[dashboard]`: the live page at `/dashboard`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSettings {
    /// `dashboard.stream_interval` — how often `/admin/stats/stream` sends a snapshot
    /// (100ms–1s). Default `1s`.
    #[serde(with = "duration")]
    pub stream_interval: Duration,
}

/// A configuration that cannot be used; the message is one line naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read or parsed.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value parsed but is out of range.
    #[error("invalid configuration: `{key}` = {value}: {allowed}")]
    Invalid {
        /// The dotted key, e.g. `database.max_connections`.
        key: &'static str,
        /// The value found (secrets hidden).
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A `[services.<name>]` table the resilience layers cannot use.
    #[error("invalid configuration: `{key}`: {message}")]
    Service {
        /// The dotted key, e.g. `services.users.breaker.failure_threshold`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

impl Settings {
    /// The embedded defaults alone, without files or environment.
    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("config/default.toml is valid; the unit tests parse it")
    }

    /// The layered sources: embedded defaults, `config_file`, then the environment.
    pub fn figment(config_file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = config_file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::prefixed("BOARDROOM__").split("__"))
    }

    /// Loads and validates the settings from all sources.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        if let Some(path) = config_file
            && !path.is_file()
        {
            return Err(ConfigError::Load(format!(
                "--config {}: no such file",
                path.display()
            )));
        }
        let settings: Settings = Self::figment(config_file)
            .extract()
            .map_err(|error| ConfigError::Load(describe_figment_error(&error)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The `[services.<name>]` table, or the defaults when it is absent.
    pub fn service(&self, name: &str) -> ServiceConfig {
        self.services.get(name).cloned().unwrap_or_default()
    }

    /// Checks every range; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::stacks::validate(self)?;
        let s = &self.server;
        check_duration(
            "server.shutdown_grace",
            s.shutdown_grace,
            Duration::ZERO,
            HOUR,
        )?;
        check_duration(
            "server.request_timeout",
            s.request_timeout,
            Duration::from_millis(1),
            HOUR,
        )?;
        if !(1..=GIB).contains(&s.body_limit) {
            return Err(ConfigError::Invalid {
                key: "server.body_limit",
                value: s.body_limit.to_string(),
                allowed: "must be between 1 byte and 1GiB".into(),
            });
        }
        let d = &self.database;
        if sqlx::postgres::PgConnectOptions::from_str(&d.url).is_err()
            || !(d.url.starts_with("postgres://") || d.url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "database.url",
                value: format!("{:?}", redact_url(&d.url)),
                allowed: "must be a PostgreSQL URL like postgres://user@host:5432/dbname".into(),
            });
        }
        if !(1..=1000).contains(&d.max_connections) {
            return Err(ConfigError::Invalid {
                key: "database.max_connections",
                value: d.max_connections.to_string(),
                allowed: "must be between 1 and 1000".into(),
            });
        }
        check_duration(
            "database.connect_timeout",
            d.connect_timeout,
            Duration::ZERO,
            HOUR,
        )?;
        check_duration(
            "database.acquire_timeout",
            d.acquire_timeout,
            Duration::from_millis(1),
            Duration::from_secs(300),
        )?;
        if self.auth.jwt_secret.chars().count() < 16 {
            return Err(ConfigError::Invalid {
                key: "auth.jwt_secret",
                value: "<hidden>".into(),
                allowed: "must be at least 16 characters".into(),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                value: format!("{:?}", self.log.level),
                allowed: "must be a level (error, warn, info, debug, trace) or RUST_LOG-style \
                          directives like \"boardroom=debug,info\""
                    .into(),
            });
        }
        check_duration(
            "health.timeout",
            self.health.timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        let a = &self.activity;
        if !(1..=1_000_000).contains(&a.buffer_capacity) {
            return Err(ConfigError::Invalid {
                key: "activity.buffer_capacity",
                value: a.buffer_capacity.to_string(),
                allowed: "must be between 1 and 1000000".into(),
            });
        }
        if !(1..=10_000).contains(&a.batch_size) {
            return Err(ConfigError::Invalid {
                key: "activity.batch_size",
                value: a.batch_size.to_string(),
                allowed: "must be between 1 and 10000".into(),
            });
        }
        check_duration(
            "activity.flush_interval",
            a.flush_interval,
            Duration::from_millis(1),
            HOUR,
        )?;
        check_duration(
            "activity.enqueue_timeout",
            a.enqueue_timeout,
            Duration::ZERO,
            Duration::from_secs(60),
        )?;
        check_duration("activity.view_window", a.view_window, Duration::ZERO, HOUR)?;
        check_duration(
            "health.degraded_latency",
            self.health.degraded_latency,
            Duration::ZERO,
            Duration::from_secs(60),
        )?;
        self.jobs.validate()?;
        self.cache.validate()?;
        crate::assets::settings::validate(&self.storage, &self.scanner, &self.assets)?;
        self.notifications.validate()?;
        self.email.validate()?;
        self.validate_alerts()?;
        check_duration(
            "dashboard.stream_interval",
            self.dashboard.stream_interval,
            Duration::from_millis(100),
            Duration::from_secs(1),
        )?;
        Ok(())
    }

    fn validate_alerts(&self) -> Result<(), ConfigError> {
        let a = &self.alerts;
        check_duration(
            "alerts.evaluation_interval",
            a.evaluation_interval,
            Duration::from_millis(100),
            Duration::from_secs(60),
        )?;
        if !(1..=10_000).contains(&a.history) {
            return Err(ConfigError::Invalid {
                key: "alerts.history",
                value: a.history.to_string(),
                allowed: "must be between 1 and 10000".into(),
            });
        }
        let url_ok = a.webhook_url.is_empty()
            || ((a.webhook_url.starts_with("http://") || a.webhook_url.starts_with("https://"))
                && a.webhook_url.parse::<http::Uri>().is_ok());
        if !url_ok {
            return Err(ConfigError::Invalid {
                key: "alerts.webhook_url",
                value: format!("{:?}", redact_url(&a.webhook_url)),
                allowed: "must be empty or an http:// or https:// URL".into(),
            });
        }
        check_duration(
            "alerts.webhook_timeout",
            a.webhook_timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        if !(1..=20).contains(&a.webhook_attempts) {
            return Err(ConfigError::Invalid {
                key: "alerts.webhook_attempts",
                value: a.webhook_attempts.to_string(),
                allowed: "must be between 1 and 20".into(),
            });
        }
        check_duration(
            "alerts.webhook_base_delay",
            a.webhook_base_delay,
            Duration::from_millis(1),
            Duration::from_secs(60),
        )?;
        check_duration(
            "alerts.webhook_max_delay",
            a.webhook_max_delay,
            a.webhook_base_delay,
            HOUR,
        )?;
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const GIB: usize = 1 << 30;

fn check_duration(
    key: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::Invalid {
            key,
            value: format!("\"{}\"", humantime::format_duration(value)),
            allowed: format!(
                "must be between \"{}\" and \"{}\"",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
    Ok(())
}

/// One line per figment error: the dotted key, where it came from, what was wrong.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .map(|m| {
                    if m.name.contains("BOARDROOM__") {
                        let var = e.path.join("__").to_ascii_uppercase();
                        format!(" (from environment variable BOARDROOM__{var})")
                    } else if m.name.contains("environment") {
                        " (from environment variable DATABASE_URL)".to_owned()
                    } else {
                        match &m.source {
                            Some(figment::Source::File(path)) => {
                                format!(" (from {})", path.display())
                            }
                            _ => format!(" (from {})", m.name),
                        }
                    }
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("`{key}`{source}: {}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses a size given as bytes or with a unit (`"512KiB"`, `"1MiB"`, `"2MB"`).
pub fn parse_size(text: &str) -> Option<usize> {
    byte_size::parse(text)
}

/// Hides the password of a connection URL for logs and messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Environment values that look like numbers arrive as numbers; secrets and URLs are text.
fn string_or_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        U(u64),
        F(f64),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::S(s) => s,
        Text::I(i) => i.to_string(),
        Text::U(u) => u.to_string(),
        Text::F(f) => f.to_string(),
    })
}

/// Human-readable durations (`"10s"`, `"250ms"`, `"1m 30s"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer, de::Error};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = super::string_or_number(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            D::Error::custom(format!(
                "invalid duration {text:?} ({e}); expected a duration like \"10s\", \"250ms\" or \"1m\""
            ))
        })
    }

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }
}

/// Sizes as a number of bytes or text with a unit (`"1MiB"`, `"512KiB"`, `"2MB"`).
mod byte_size {
    use serde::{Deserializer, Serializer, de::Error};

    pub(super) fn parse(text: &str) -> Option<usize> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let number: usize = digits.parse().ok()?;
        let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1 << 10,
            "mb" => 1_000_000,
            "mib" | "m" => 1 << 20,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1 << 30,
            _ => return None,
        };
        number.checked_mul(multiplier)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let text = super::string_or_number(d)?;
        parse(&text).ok_or_else(|| {
            D::Error::custom(format!(
                "invalid size {text:?}; expected a number of bytes or a size like \"512KiB\" or \"1MiB\""
            ))
        })
    }

    pub(super) fn serialize<S: Serializer>(value: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*value as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_parse_and_validate() {
        let settings = Settings::defaults();
        settings.validate().expect("defaults are valid");
        assert_eq!(settings.server.body_limit, 1 << 20);
        assert_eq!(settings.database.acquire_timeout, Duration::from_secs(2));
        assert!(settings.auth.uses_dev_secret());
    }

    #[test]
    fn s3_storage_keys_load_and_are_checked_naming_the_key() {
        use crate::assets::settings::StorageBackend;
        let load = |vars: &[(&str, &str)]| -> Result<Settings, ConfigError> {
            let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
            for (key, value) in vars {
                figment = figment.merge(figment::providers::Serialized::global(
                    &key.to_lowercase(),
                    value,
                ));
            }
            let settings: Settings = figment
                .extract()
                .map_err(|e| ConfigError::Load(describe_figment_error(&e)))?;
            settings.validate()?;
            Ok(settings)
        };
        assert_eq!(load(&[]).unwrap().storage.backend, StorageBackend::Local);
        let settings = load(&[
            ("storage.backend", "s3"),
            ("storage.s3.bucket", "board-files"),
            ("storage.s3.endpoint", "https://s3.example.test"),
        ])
        .unwrap();
        assert_eq!(settings.storage.backend, StorageBackend::S3);
        assert_eq!(settings.storage.s3.bucket, "board-files");
        assert!(settings.storage.s3.path_style);

        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("storage.backend", "s3")], "storage.s3.bucket"),
            (
                &[
                    ("storage.backend", "s3"),
                    ("storage.s3.bucket", "b"),
                    ("storage.s3.endpoint", "http://127.0.0.1:9000"),
                ],
                "storage.s3.endpoint",
            ),
            (
                &[
                    ("storage.backend", "s3"),
                    ("storage.s3.bucket", "b"),
                    ("storage.s3.access_key_id", "AKIA"),
                ],
                "storage.s3.access_key_id",
            ),
            (
                &[
                    ("storage.backend", "s3"),
                    ("storage.s3.bucket", "b"),
                    ("assets.max_download_expiry", "8d"),
                ],
                "assets.max_download_expiry",
            ),
        ];
        for (vars, key) in cases {
            let message = load(vars).unwrap_err().to_string();
            assert!(message.contains(key), "{vars:?}: {message}");
        }
        let message = load(&[("storage.backend", "ftp")]).unwrap_err().to_string();
        assert!(message.contains("storage.backend"), "{message}");
    }

    #[test]
    fn sizes_accept_units() {
        assert_eq!(byte_size::parse("512KiB"), Some(512 * 1024));
        assert_eq!(byte_size::parse("2MB"), Some(2_000_000));
        assert_eq!(byte_size::parse("100"), Some(100));
        assert_eq!(byte_size::parse("lots"), None);
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        let mut settings = Settings::defaults();
        settings.database.max_connections = 0;
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("database.max_connections"), "{message}");
        assert!(message.contains("between 1 and 1000"), "{message}");
    }

    #[test]
    fn service_tables_are_checked_naming_the_key() {
        let load = |toml: &str| -> Result<Settings, ConfigError> {
            let settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
                .merge(Toml::string(toml))
                .extract()
                .map_err(|e| ConfigError::Load(describe_figment_error(&e)))?;
            settings.validate()?;
            Ok(settings)
        };
        let settings = load("").expect("defaults");
        assert_eq!(
            settings.service("users").timeout,
            Some(Duration::from_secs(10))
        );
        // A service left out of the file gets the layers' defaults.
        assert!(settings.service("organizations").concurrency.is_some());

        let cases = [
            (
                "[services.users.breaker]\nfailure_threshold = 0",
                "services.users.breaker.failure_threshold",
            ),
            (
                "[services.users]\ntimeout = \"0s\"",
                "services.users.timeout",
            ),
            ("[services.billing]\ntimeout = \"1s\"", "services.billing"),
            (
                "[services.users.retry]\nattempts = 3",
                "services.users.retry",
            ),
            (
                "[services.database.concurrency]\nmax_concurrent = 3",
                "services.database",
            ),
        ];
        for (toml, key) in cases {
            let message = load(toml).unwrap_err().to_string();
            assert!(message.contains(&format!("`{key}`")), "{toml}: {message}");
        }
    }

    #[test]
    fn alert_and_dashboard_keys_are_checked() {
        type Change = fn(&mut Settings);
        let cases: [(Change, &str); 5] = [
            (
                |s| s.alerts.webhook_url = "ftp://x".into(),
                "alerts.webhook_url",
            ),
            (|s| s.alerts.webhook_attempts = 0, "alerts.webhook_attempts"),
            (
                |s| s.alerts.webhook_max_delay = Duration::from_millis(1),
                "alerts.webhook_max_delay",
            ),
            (|s| s.alerts.history = 0, "alerts.history"),
            (
                |s| s.dashboard.stream_interval = Duration::from_secs(5),
                "dashboard.stream_interval",
            ),
        ];
        for (change, key) in cases {
            let mut settings = Settings::defaults();
            change(&mut settings);
            let message = settings.validate().unwrap_err().to_string();
            assert!(message.contains(key), "{key}: {message}");
        }
        let mut settings = Settings::defaults();
        settings.alerts.webhook_url = "http://127.0.0.1:9/hook".into();
        settings.validate().expect("an http URL is accepted");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
    }
}
