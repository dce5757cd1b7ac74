//! Performance-budget alerts, wired to the service: a history for
//! `/admin/alerts` and the dashboard, periodic evaluation, and the webhook.
//!
//! The budgets themselves live in the `resilience` crate (one per
//! `[services.<name>.budget]`): a breach already logs at warn and sets
//! `resilience_budget_breached{name,budget}`. [`AlertCenter`] adds what a
//! service needs around that:
//!
//! - every raised and resolved event is kept (the latest `alerts.history`)
//!   and listed by `GET /admin/alerts`;
//! - [`AlertCenter::run`] judges every budget every `alerts.evaluation_interval`,
//!   so an alert also clears when calls stop, and
//! - posts each event as JSON ([`AlertRecord`]) to `alerts.webhook_url`, one
//!   at a time in order, retrying connection errors, timeouts, `429` and `5xx`
//!   with a doubling delay (`webhook_base_delay` up to `webhook_max_delay`)
//!   for `webhook_attempts` attempts. The record's `id` is the same on every
//!   attempt, so a receiver can drop duplicates.
//!
//! Deliveries are counted in `boardroom_alert_webhook_deliveries_total{outcome}`
//! (`delivered`, `failed`, `dropped`) and attempts in
//! `boardroom_alert_webhook_attempts_total`.
//!
//! ```
//! use boardroom::{config::Settings, ops::alerts::AlertCenter};
//! use resilience::registry::Registry;
//!
//! let registry = Registry::new();
//! let alerts = AlertCenter::new(&Settings::defaults().alerts, &registry);
//! assert!(alerts.recent().is_empty());
//! ```

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use resilience::{
    budget::{Alert, AlertEvent, AlertEventKind},
    registry::Registry,
};
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::config::AlertSettings;

const DELIVERIES: &str = "boardroom_alert_webhook_deliveries_total";
const ATTEMPTS: &str = "boardroom_alert_webhook_attempts_total";

/// Events waiting for the webhook; beyond this, new events are dropped (and
/// counted) rather than growing memory while the receiver is down.
const WEBHOOK_QUEUE: usize = 256;

/// HELP texts of the alert metrics (called by [`crate::ops::metrics::recorder`]).
pub(crate) fn describe() {
    metrics::describe_counter!(
        DELIVERIES,
        "Alert events posted to alerts.webhook_url, by outcome (delivered, failed, dropped)."
    );
    metrics::describe_counter!(
        ATTEMPTS,
        "HTTP attempts made to deliver alert events to alerts.webhook_url."
    );
    for outcome in ["delivered", "failed", "dropped"] {
        metrics::counter!(DELIVERIES, "outcome" => outcome).increment(0);
    }
    metrics::counter!(ATTEMPTS).increment(0);
}

/// An active alert, for `/admin/alerts`, `/admin/stats` and the dashboard.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// Stable id of this breach: `<operation>:<budget>:<since, ms since the epoch>`.
    pub id: String,
    /// The operation (service) over budget.
    pub operation: String,
    /// `p95`, `p99` or `error_rate`.
    pub budget: String,
    /// The latest observed value: seconds for `p95`/`p99`, a fraction for `error_rate`.
    pub observed: f64,
    /// The limit, in the same unit.
    pub limit: f64,
    /// Calls in the budget's window at the latest evaluation.
    pub samples: u64,
    /// When the breach was first seen.
    pub since: DateTime<Utc>,
    /// How long it has lasted, in seconds.
    pub duration_seconds: f64,
    /// One line for a human.
    pub text: String,
}

impl From<&Alert> for AlertView {
    fn from(alert: &Alert) -> Self {
        Self {
            id: alert_id(alert),
            operation: alert.operation.clone(),
            budget: alert.budget.as_str().to_owned(),
            observed: alert.observed,
            limit: alert.limit,
            samples: alert.samples,
            since: alert.since.into(),
            duration_seconds: alert.duration().as_secs_f64(),
            text: describe_alert(alert, AlertEventKind::Raised),
        }
    }
}

/// One raised or resolved event: an entry of `/admin/alerts`' history, and
/// the JSON body POSTed to `alerts.webhook_url`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// `raised` or `resolved`.
    pub event: String,
    /// The breach's id (the same for its `raised` and `resolved` events and
    /// on every delivery attempt).
    pub id: String,
    /// The operation (service).
    pub operation: String,
    /// `p95`, `p99` or `error_rate`.
    pub budget: String,
    /// The observed value (for `resolved`, as last seen while breached).
    pub observed: f64,
    /// The limit, in the same unit.
    pub limit: f64,
    /// Calls in the window at the latest evaluation.
    pub samples: u64,
    /// When the breach was first seen.
    pub since: DateTime<Utc>,
    /// When this event happened.
    pub at: DateTime<Utc>,
    /// One line for a human (chat webhooks show it as is).
    pub text: String,
    /// Who sent it.
    pub source: String,
}

impl From<&AlertEvent> for AlertRecord {
    fn from(event: &AlertEvent) -> Self {
        let alert = &event.alert;
        Self {
            event: match event.event {
                AlertEventKind::Raised => "raised",
                AlertEventKind::Resolved => "resolved",
            }
            .to_owned(),
            id: alert_id(alert),
            operation: alert.operation.clone(),
            budget: alert.budget.as_str().to_owned(),
            observed: alert.observed,
            limit: alert.limit,
            samples: alert.samples,
            since: alert.since.into(),
            at: event.at.into(),
            text: describe_alert(alert, event.event),
            source: "boardroom".to_owned(),
        }
    }
}

fn alert_id(alert: &Alert) -> String {
    let millis = alert
        .since
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{}:{}:{millis}", alert.operation, alert.budget.as_str())
}

fn describe_alert(alert: &Alert, kind: AlertEventKind) -> String {
    let (observed, limit) = if alert.budget.as_str() == "error_rate" {
        (
            format!("{:.1} %", alert.observed * 100.0),
            format!("{:.1} %", alert.limit * 100.0),
        )
    } else {
        (
            format!("{:.0} ms", alert.observed * 1000.0),
            format!("{:.0} ms", alert.limit * 1000.0),
        )
    };
    match kind {
        AlertEventKind::Raised => format!(
            "boardroom: '{}' is over its {} budget: {observed} observed, limit {limit} ({} calls)",
            alert.operation, alert.budget, alert.samples
        ),
        AlertEventKind::Resolved => format!(
            "boardroom: '{}' is back under its {} budget (limit {limit})",
            alert.operation, alert.budget
        ),
    }
}

struct Inner {
    settings: AlertSettings,
    history: Mutex<VecDeque<AlertRecord>>,
    webhook: Option<mpsc::Sender<AlertRecord>>,
    receiver: Mutex<Option<mpsc::Receiver<AlertRecord>>>,
}

/// The service's alert hub: history, periodic evaluation, webhook. Cheap to
/// clone. See the module documentation.
#[derive(Clone)]
pub struct AlertCenter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AlertCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertCenter")
            .field("webhook", &!self.inner.settings.webhook_url.is_empty())
            .finish_non_exhaustive()
    }
}

impl AlertCenter {
    /// Listens to every budget of `registry` (registered now or later).
    pub fn new(settings: &AlertSettings, registry: &Registry) -> Self {
        let (webhook, receiver) = if settings.webhook_url.is_empty() {
            (None, None)
        } else {
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            (Some(tx), Some(rx))
        };
        let inner = Arc::new(Inner {
            settings: settings.clone(),
            history: Mutex::new(VecDeque::with_capacity(settings.history.min(1024))),
            webhook,
            receiver: Mutex::new(receiver),
        });
        // The callback runs on the task that completed a call: record and
        // queue only; the HTTP delivery happens in `run`. A weak reference,
        // so the registry does not keep a dropped application's hub alive.
        let weak = Arc::downgrade(&inner);
        registry.on_alert(Arc::new(move |event: &AlertEvent| {
            if let Some(inner) = weak.upgrade() {
                inner.record(AlertRecord::from(event));
            }
        }));
        Self { inner }
    }

    /// The latest raised and resolved events, newest first.
    pub fn recent(&self) -> Vec<AlertRecord> {
        let history = self
            .inner
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        history.iter().rev().cloned().collect()
    }

    /// Judges every budget every `alerts.evaluation_interval` and delivers
    /// queued events to the webhook. Runs until dropped (the application
    /// runs it beside the server).
    pub async fn run(self, registry: Registry) {
        let receiver = self
            .inner
            .receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let evaluate = async {
            let mut tick = tokio::time::interval(self.inner.settings.evaluation_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                registry.alerts();
            }
        };
        match receiver {
            Some(receiver) => {
                tokio::join!(evaluate, Webhook::new(&self.inner.settings).run(receiver));
            }
            None => evaluate.await,
        }
    }
}

impl Inner {
    fn record(&self, record: AlertRecord) {
        {
            let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
            if history.len() >= self.settings.history {
                history.pop_front();
            }
            history.push_back(record.clone());
        }
        if let Some(webhook) = &self.webhook
            && let Err(error) = webhook.try_send(record)
        {
            metrics::counter!(DELIVERIES, "outcome" => "dropped").increment(1);
            tracing::warn!(%error, "alert webhook queue is full; event dropped");
        }
    }
}

/// Posts alert records to `alerts.webhook_url`, with retries.
struct Webhook {
    client: reqwest::Client,
    url: String,
    attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl Webhook {
    fn new(settings: &AlertSettings) -> Self {
        let client = reqwest::Client::builder()
            .timeout(settings.webhook_timeout)
            .user_agent(concat!("boardroom/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "alert webhook client: falling back to the defaults");
                reqwest::Client::new()
            });
        Self {
            client,
            url: settings.webhook_url.clone(),
            attempts: settings.webhook_attempts,
            base_delay: settings.webhook_base_delay,
            max_delay: settings.webhook_max_delay,
        }
    }

    async fn run(self, mut receiver: mpsc::Receiver<AlertRecord>) {
        while let Some(record) = receiver.recv().await {
            self.deliver(&record).await;
        }
    }

    async fn deliver(&self, record: &AlertRecord) {
        let mut delay = self.base_delay;
        for attempt in 1..=self.attempts {
            metrics::counter!(ATTEMPTS).increment(1);
            let problem = match self.client.post(&self.url).json(record).send().await {
                Ok(response) if response.status().is_success() => {
                    metrics::counter!(DELIVERIES, "outcome" => "delivered").increment(1);
                    tracing::info!(id = %record.id, event = %record.event, attempt, "alert webhook delivered");
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        metrics::counter!(DELIVERIES, "outcome" => "failed").increment(1);
                        tracing::warn!(id = %record.id, %status, "alert webhook refused the event; not retrying");
                        return;
                    }
                    format!("status {status}")
                }
                Err(error) => error.to_string(),
            };
            if attempt < self.attempts {
                tracing::warn!(
                    id = %record.id,
                    attempt,
                    problem,
                    retry_in = %humantime::format_duration(delay),
                    "alert webhook failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(self.max_delay);
            } else {
                tracing::error!(id = %record.id, attempts = self.attempts, problem, "alert webhook failed; giving up");
            }
        }
        metrics::counter!(DELIVERIES, "outcome" => "failed").increment(1);
    }
}
