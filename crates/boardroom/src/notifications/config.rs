//! `[notifications]` and `[email]`: the delivery workers and the providers.
//!
//! Each provider left unconfigured (empty URL) writes to a file transport
//! instead: one file per message under `notifications.outbox/<channel>/`,
//! named after the delivery id, so the service runs out of the box.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSettings {
    /// `notifications.workers` — delivery worker tasks in this process (0-64; 0
    /// for an API-only instance). Default `2`.
    pub workers: usize,
    /// `notifications.batch_size` — deliveries one worker claims at once (1-5000). Default `200`.
    pub batch_size: i64,
    /// `notifications.concurrency` — provider calls one worker makes at once (1-1000). Default `32`.
    pub concurrency: usize,
    /// `notifications.lease` — how long claimed deliveries stay reserved; after a
    /// crash they are queued again once it passes. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// `notifications.poll_interval` — fallback poll (scheduled and deferred
    /// deliveries falling due, expired leases). Default `1s`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// `notifications.max_retries` — retries per delivery when a send gives none (0-20). Default `5`.
    pub max_retries: i32,
    /// `notifications.retry_base_delay` — wait before the first retry, doubled
    /// each time with full jitter. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// `notifications.retry_max_delay` — longest wait between two tries. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// `notifications.public_url` — base URL of the tracking pixel and links in
    /// emails. Default `http://127.0.0.1:8080`.
    pub public_url: String,
    /// `notifications.outbox` — folder of the file transports. Default `./data/outbox`.
    pub outbox: PathBuf,
    /// `[notifications.push]` — the push gateway.
    pub push: GatewaySettings,
    /// `[notifications.sms]` — the SMS gateway.
    pub sms: GatewaySettings,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            workers: 2,
            batch_size: 200,
            concurrency: 32,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            max_retries: 5,
            retry_base_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            public_url: "http://127.0.0.1:8080".into(),
            outbox: PathBuf::from("./data/outbox"),
            push: GatewaySettings::default(),
            sms: GatewaySettings::default(),
        }
    }
}

/// An HTTP gateway (push or SMS).
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySettings {
    /// `url` — where each message is POSTed as JSON; empty: file transport.
    pub url: String,
    /// `auth_header` — sent with every request, as `Name: value`
    /// (e.g. `Authorization: Bearer …`); empty for none.
    pub auth_header: String,
    /// `timeout` — longest one request may take. Default `5s`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("url", &self.url)
            .field("auth_header", &"<hidden>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[email]`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `email.smtp_url` — `smtp://host:port` (STARTTLS when offered... plain
    /// for local servers), `smtps://host:port` (TLS) or empty for the file
    /// transport in `notifications.outbox/email`. Credentials may be given in
    /// the URL (`smtp://user:pass@host:587`) or below.
    pub smtp_url: String,
    /// `email.username` — SMTP user (empty: none).
    pub username: String,
    /// `email.password` — SMTP password.
    pub password: String,
    /// `email.from` — the sender mailbox. Default `Boardroom <notifications@boardroom.local>`.
    pub from: String,
    /// `email.timeout` — longest one SMTP exchange may take. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: String::new(),
            username: String::new(),
            password: String::new(),
            from: "Boardroom <notifications@boardroom.local>".into(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("smtp_url", &crate::config::redact_url(&self.smtp_url))
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("from", &self.from)
            .finish()
    }
}

fn invalid(key: &'static str, value: impl ToString, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

impl NotificationSettings {
    /// Checks ranges, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > 64 {
            return Err(invalid(
                "notifications.workers",
                self.workers,
                "must be between 0 and 64",
            ));
        }
        if !(1..=5000).contains(&self.batch_size) {
            return Err(invalid(
                "notifications.batch_size",
                self.batch_size,
                "must be between 1 and 5000",
            ));
        }
        if !(1..=1000).contains(&self.concurrency) {
            return Err(invalid(
                "notifications.concurrency",
                self.concurrency,
                "must be between 1 and 1000",
            ));
        }
        if !(0..=20).contains(&self.max_retries) {
            return Err(invalid(
                "notifications.max_retries",
                self.max_retries,
                "must be between 0 and 20",
            ));
        }
        if self.lease < Duration::from_millis(100) {
            return Err(invalid(
                "notifications.lease",
                "too short",
                "must be at least 100ms",
            ));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(invalid(
                "notifications.poll_interval",
                "too short",
                "must be at least 10ms",
            ));
        }
        if self.retry_max_delay < self.retry_base_delay {
            return Err(invalid(
                "notifications.retry_max_delay",
                humantime::format_duration(self.retry_max_delay),
                "must be at least notifications.retry_base_delay",
            ));
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(invalid(
                "notifications.public_url",
                &self.public_url,
                "must be an http:// or https:// URL",
            ));
        }
        for (key, gateway) in [
            ("notifications.push.url", &self.push),
            ("notifications.sms.url", &self.sms),
        ] {
            if !gateway.url.is_empty() && reqwest::Url::parse(&gateway.url).is_err() {
                return Err(invalid(
                    key,
                    &gateway.url,
                    "must be an http(s) URL or empty",
                ));
            }
            if !gateway.auth_header.is_empty() && !gateway.auth_header.contains(':') {
                return Err(invalid(
                    "notifications.<gateway>.auth_header",
                    "<hidden>",
                    "must be `Name: value` or empty",
                ));
            }
        }
        Ok(())
    }
}

impl EmailSettings {
    /// Checks the URL and sender, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let known = self.smtp_url.is_empty()
            || self.smtp_url.starts_with("smtp://")
            || self.smtp_url.starts_with("smtps://");
        if !known {
            return Err(invalid(
                "email.smtp_url",
                crate::config::redact_url(&self.smtp_url),
                "must be smtp://host:port, smtps://host:port or empty",
            ));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "email.from",
                &self.from,
                "must be a mailbox such as `Name <a@b.c>`",
            ));
        }
        Ok(())
    }
}
