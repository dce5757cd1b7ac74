//! `GET|PUT /v1/users/{id}/notification-preferences`: which channels a person
//! wants, per channel and per notification type, and their quiet hours.
//!
//! Everything is on by default; a `PUT` replaces the whole document. The
//! user themself, their organization's admins and owners, and operators may
//! read and change them; anyone else gets a `404` (as for the user).

use std::collections::BTreeMap;

use axum::{extract::State, response::Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgExecutor;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    model::Channel,
    quiet::{QuietHours, parse_time},
};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path},
    state::AppState,
    users::UserAccess,
};

/// Per-channel switches; a channel left out is on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSwitches {
    /// Email.
    pub email: Option<bool>,
    /// Push.
    pub push: Option<bool>,
    /// SMS.
    pub sms: Option<bool>,
    /// In-app.
    pub in_app: Option<bool>,
}

impl ChannelSwitches {
    fn get(&self, channel: Channel) -> Option<bool> {
        match channel {
            Channel::Email => self.email,
            Channel::Push => self.push,
            Channel::Sms => self.sms,
            Channel::InApp => self.in_app,
        }
    }
}

/// Quiet hours as the API carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursBody {
    /// Local start, `HH:MM`.
    #[schema(
        example = "22:00",
        pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
    )]
    pub start: String,
    /// Local end, `HH:MM` (before `start` for a window across midnight).
    #[schema(
        example = "07:00",
        pattern = "^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
    )]
    pub end: String,
    /// IANA time zone name, e.g. `Europe/London`.
    #[schema(example = "Europe/London")]
    pub timezone: String,
}

/// A person's notification preferences (body of `PUT`, answer of both).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preferences {
    /// Channel switches.
    #[serde(default)]
    pub channels: ChannelSwitches,
    /// Per notification type, per channel: `false` turns that type off there.
    #[serde(default)]
    pub types: BTreeMap<String, BTreeMap<Channel, bool>>,
    /// Only `urgent` notifications go out inside this window; others wait for its end.
    pub quiet_hours: Option<QuietHoursBody>,
}

/// Preferences as the sender uses them.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    prefs: Preferences,
    quiet: Option<QuietHours>,
}

/// Why a channel is not used for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// The channel is off.
    ChannelOff,
    /// The type is off for the channel.
    TypeOff,
}

impl Suppression {
    /// The `reason` recorded on the delivery.
    pub fn reason(self, channel: Channel, kind: &str) -> String {
        match self {
            Self::ChannelOff => format!("channel_disabled: {} is off", channel.as_str()),
            Self::TypeOff => format!("type_disabled: {kind} is off for {}", channel.as_str()),
        }
    }
}

impl Resolved {
    /// Whether `kind` may go through `channel`.
    pub fn suppression(&self, channel: Channel, kind: &str) -> Option<Suppression> {
        if self.prefs.channels.get(channel) == Some(false) {
            return Some(Suppression::ChannelOff);
        }
        if self
            .prefs
            .types
            .get(kind)
            .and_then(|by_channel| by_channel.get(&channel))
            == Some(&false)
        {
            return Some(Suppression::TypeOff);
        }
        None
    }

    /// The quiet hours, if any.
    pub fn quiet(&self) -> Option<&QuietHours> {
        self.quiet.as_ref()
    }

    /// Builds from stored preferences (already validated when stored).
    pub fn new(prefs: Preferences) -> Self {
        let quiet = prefs
            .quiet_hours
            .as_ref()
            .and_then(|q| QuietHours::parse(&q.start, &q.end, &q.timezone).ok());
        Self { prefs, quiet }
    }
}

/// A type name: 1-64 of `a-z 0-9 _ . -`.
pub fn valid_type(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

impl Preferences {
    /// Checks the types and quiet hours (`422` naming the field).
    pub fn validate(&self) -> Result<Option<QuietHours>, ApiError> {
        for kind in self.types.keys() {
            if !valid_type(kind) {
                return Err(ApiError::validation(
                    format!("types.{kind}"),
                    "a type name is 1-64 of a-z, 0-9, `_`, `.`, `-`",
                ));
            }
        }
        if self.types.len() > 200 {
            return Err(ApiError::validation("types", "at most 200 types"));
        }
        match &self.quiet_hours {
            None => Ok(None),
            Some(q) => QuietHours::parse(&q.start, &q.end, &q.timezone)
                .map(Some)
                .map_err(|e| ApiError::validation(format!("quietHours.{}", e.field), e.message)),
        }
    }
}

type Row = (Value, Value, Option<String>, Option<String>, Option<String>);
/// A row of [`load_many`]: the user and a [`Row`].
type UserRow = (
    Uuid,
    Value,
    Value,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn from_row((channels, types, start, end, zone): Row) -> Preferences {
    let quiet_hours = match (start, end, zone) {
        (Some(start), Some(end), Some(timezone)) => Some(QuietHoursBody {
            start,
            end,
            timezone,
        }),
        _ => None,
    };
    Preferences {
        channels: serde_json::from_value(channels).unwrap_or_default(),
        types: serde_json::from_value(types).unwrap_or_default(),
        quiet_hours,
    }
}

const SELECT: &str = "SELECT channels, types, to_char(quiet_start, 'HH24:MI'),
                             to_char(quiet_end, 'HH24:MI'), quiet_zone
                      FROM notification_preferences WHERE user_id = $1";

/// The stored preferences of `user_id` (defaults when none).
pub async fn load(db: impl PgExecutor<'_>, user_id: Uuid) -> Result<Preferences, ApiError> {
    let row: Option<Row> = sqlx::query_as(SELECT)
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    Ok(row.map(from_row).unwrap_or_default())
}

/// The preferences of many users at once (absent ones get the defaults).
pub async fn load_many(
    db: impl PgExecutor<'_>,
    user_ids: &[Uuid],
) -> Result<BTreeMap<Uuid, Resolved>, ApiError> {
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT user_id, channels, types, to_char(quiet_start, 'HH24:MI'),
                    to_char(quiet_end, 'HH24:MI'), quiet_zone
             FROM notification_preferences WHERE user_id = ANY($1)",
    )
    .bind(user_ids)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, c, t, s, e, z)| (id, Resolved::new(from_row((c, t, s, e, z)))))
        .collect())
}

async fn store(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    prefs: &Preferences,
) -> Result<(), ApiError> {
    let channels =
        serde_json::to_value(prefs.channels).map_err(|e| ApiError::Internal(e.into()))?;
    let types = serde_json::to_value(&prefs.types).map_err(|e| ApiError::Internal(e.into()))?;
    let (start, end, zone) = match &prefs.quiet_hours {
        Some(q) => (
            parse_time(&q.start),
            parse_time(&q.end),
            Some(q.timezone.clone()),
        ),
        None => (None, None, None),
    };
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, channels, types, quiet_start, quiet_end, quiet_zone)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (user_id) DO UPDATE SET channels = $2, types = $3, quiet_start = $4,
             quiet_end = $5, quiet_zone = $6, updated_at = now()",
    )
    .bind(user_id)
    .bind(channels)
    .bind(types)
    .bind(start)
    .bind(end)
    .bind(zone)
    .execute(db)
    .await?;
    Ok(())
}

async fn authorize(state: &AppState, principal: Principal, id: Uuid) -> Result<(), ApiError> {
    let access = UserAccess::resolve(state, principal, id).await?;
    if access.is_self || access.manages {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the user, their admins and owners manage notification preferences",
        ))
    }
}

/// A user's notification preferences (everything on when never set).
#[utoipa::path(
    get,
    path = "/v1/users/{id}/notification-preferences",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The preferences", body = Envelope<Preferences>))
)]
pub async fn get_preferences(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    authorize(&state, principal, id).await?;
    let prefs = state.db.run(load(&state.db.pool, id)).await?;
    Ok(envelope::ok(prefs))
}

/// Replace a user's notification preferences.
#[utoipa::path(
    put,
    path = "/v1/users/{id}/notification-preferences",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = Preferences,
    security(("bearer" = [])),
    responses((status = 200, description = "The stored preferences", body = Envelope<Preferences>))
)]
pub async fn put_preferences(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<Preferences>,
) -> Result<Response, ApiError> {
    authorize(&state, principal, id).await?;
    let quiet = body.validate()?;
    let mut body = body;
    // Store the normalized times, answer with what a GET will return.
    if let (Some(q), Some(parsed)) = (body.quiet_hours.as_mut(), quiet) {
        q.start = parsed.start.format("%H:%M").to_string();
        q.end = parsed.end.format("%H:%M").to_string();
    }
    state.db.run(store(&state.db.pool, id, &body)).await?;
    Ok(envelope::ok(body))
}
