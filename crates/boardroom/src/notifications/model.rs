//! The notification domain's vocabulary: channels, priorities, statuses and
//! the API bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A way to reach a person. The same names are used as values and as keys.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Email over SMTP (or the email file transport).
    Email,
    /// Push through the push gateway.
    Push,
    /// SMS through the SMS gateway.
    Sms,
    /// Stored and shown in `GET /v1/me/notifications`.
    InApp,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Push, Channel::Sms, Channel::InApp];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Push => "push",
            Self::Sms => "sms",
            Self::InApp => "in_app",
        }
    }

    /// The channel named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// How soon a notification must go out. `urgent` also passes quiet hours.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Whenever convenient.
    Low,
    /// The default.
    #[default]
    Normal,
    /// Ahead of normal work.
    High,
    /// First in the queue, and not held back by quiet hours.
    Urgent,
}

impl Priority {
    /// The queue's sort key: 0 (urgent) first.
    pub fn rank(self) -> i16 {
        match self {
            Self::Urgent => 0,
            Self::High => 1,
            Self::Normal => 2,
            Self::Low => 3,
        }
    }

    /// The priority of a sort key.
    pub fn from_rank(rank: i16) -> Self {
        match rank {
            0 => Self::Urgent,
            1 => Self::High,
            2 => Self::Normal,
            _ => Self::Low,
        }
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Due (now or at `dueAt`), waiting for a worker.
    Queued,
    /// Held back by the recipient's quiet hours until `dueAt`.
    Deferred,
    /// A worker is handing it to the provider.
    Sending,
    /// The provider accepted it (in-app: stored in the feed).
    Sent,
    /// Known to have reached the person (the email was opened).
    Delivered,
    /// The last try failed; another follows at `dueAt`.
    Failed,
    /// Out of retries (`lastError` says why), or refused for good.
    Dead,
    /// Not sent because of the recipient's preferences (`reason`).
    Suppressed,
}

/// `POST /v1/notifications` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRequest {
    /// Recipients, members of the organization (1 to 10,000; a repeated id counts once).
    #[schema(min_items = 1, max_items = 10000)]
    pub user_ids: Vec<Uuid>,
    /// The organization the notification is about; the caller must manage it.
    pub organization_id: Uuid,
    /// What kind of notification this is (`meeting_reminder`, `vote_opened`, …):
    /// 1-64 of `a-z 0-9 _ . -`; preferences can turn a type off per channel.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9_.-]{1,64}$")]
    pub r#type: String,
    /// Channels to deliver through (one delivery per recipient and channel).
    #[schema(min_items = 1, max_items = 4)]
    pub channels: Vec<Channel>,
    /// Subject line, 1-200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    /// Body text, 1-10,000 characters; `http(s)://` links become tracked links in email.
    #[schema(min_length = 1, max_length = 10000)]
    pub message: String,
    /// Queue order; `urgent` also passes quiet hours. Default `normal`.
    #[serde(default)]
    pub priority: Priority,
    /// Free-form data handed to the providers and the in-app feed.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Not before this time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Retries per delivery after the first try (0-20). Default `notifications.max_retries`.
    #[schema(minimum = 0, maximum = 20)]
    pub max_retries: Option<i32>,
}

/// `202` answer of a send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendAccepted {
    /// The notification.
    pub notification_id: Uuid,
    /// Deliveries waiting for a worker (due now or at `scheduledAt`).
    pub queued: i32,
    /// Deliveries held back by quiet hours.
    pub deferred: i32,
    /// Deliveries not sent because of preferences.
    pub suppressed: i32,
}

/// One delivery, as `GET /v1/notifications/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The delivery id (the email's `Message-ID`, the gateways' `Idempotency-Key`).
    pub id: Uuid,
    /// The recipient.
    pub user_id: Uuid,
    /// The channel.
    #[sqlx(try_from = "String")]
    #[schema(value_type = Channel)]
    pub channel: ChannelName,
    /// Its status.
    #[sqlx(try_from = "String")]
    #[schema(value_type = DeliveryStatus)]
    pub status: StatusName,
    /// Why it is suppressed or deferred.
    pub reason: Option<String>,
    /// Tries made.
    pub attempts: i32,
    /// The error of the last failed try.
    pub last_error: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it is due (scheduled time, end of quiet hours, next retry).
    pub due_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When it was known to have arrived.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the email's tracking pixel was loaded.
    pub opened_at: Option<DateTime<Utc>>,
    /// When a tracked link was followed.
    pub clicked_at: Option<DateTime<Utc>>,
    /// When the in-app notification was marked read.
    pub read_at: Option<DateTime<Utc>>,
}

/// A channel name read from the database.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChannelName(pub Channel);

impl TryFrom<String> for ChannelName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Channel::parse(&value)
            .map(ChannelName)
            .ok_or_else(|| format!("unknown channel {value}"))
    }
}

/// A status read from the database.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusName(pub DeliveryStatus);

impl TryFrom<String> for StatusName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        serde_json::from_value(Value::String(value.clone()))
            .map(StatusName)
            .map_err(|_| format!("unknown status {value}"))
    }
}

/// `GET /v1/notifications/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationView {
    /// The notification.
    pub id: Uuid,
    /// Its organization.
    pub organization_id: Uuid,
    /// Who sent it.
    pub created_by: Uuid,
    /// Its type.
    pub r#type: String,
    /// Subject.
    pub title: String,
    /// Body text.
    pub message: String,
    /// Priority.
    pub priority: Priority,
    /// The request's data.
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    /// Not before this time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// Counts at acceptance.
    pub queued: i32,
    /// Deferred at acceptance.
    pub deferred: i32,
    /// Suppressed at acceptance.
    pub suppressed: i32,
    /// Every delivery with its status now.
    pub deliveries: Vec<Delivery>,
}
