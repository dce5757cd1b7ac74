//! `POST /v1/notifications` (send) and `GET /v1/notifications/{id}`.
//!
//! A send is checked whole before anything is stored: every recipient must
//! be a member of the organization (`422` naming the ids otherwise), the
//! channels known and listed, the caller an admin or owner of it (or an
//! operator). It then expands to one delivery per (recipient, channel), each
//! decided by the recipient's preferences:
//!
//! - the channel off, or the type off for that channel → `suppressed` with
//!   the reason;
//! - due (now, or `scheduledAt`) inside the recipient's quiet hours and not
//!   `urgent` → `deferred` until the window ends in their time zone;
//! - otherwise `queued`, due at once or at `scheduledAt`.
//!
//! The notification, its deliveries and the workers' wake-up `NOTIFY` are
//! one transaction: a `202` means every delivery is durable. With an
//! `Idempotency-Key`, the same caller sending the same body again gets the
//! same answer (and nothing new is queued); a different body under the same
//! key is a `409`.

use std::collections::HashSet;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    QUEUED_CHANNEL,
    model::{Channel, Delivery, NotificationView, Priority, SendAccepted, SendRequest},
    preferences::{self, Resolved, valid_type},
};
use crate::{
    auth::Principal,
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path},
    organizations,
    state::AppState,
};

/// Most recipients of one send.
pub const MAX_RECIPIENTS: usize = 10_000;

/// One planned delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Recipient.
    pub user_id: Uuid,
    /// Channel.
    pub channel: Channel,
    /// `queued`, `deferred` or `suppressed`.
    pub status: &'static str,
    /// Why it is deferred or suppressed.
    pub reason: Option<String>,
    /// When it is due.
    pub run_at: DateTime<Utc>,
}

/// A recipient as the planner sees them.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The user.
    pub user_id: Uuid,
    /// Their email address, when they have a profile.
    pub email: Option<String>,
    /// Their preferences.
    pub preferences: Resolved,
}

/// Expands a send to deliveries (pure: the rules of the module doc).
pub fn plan(request: &SendRequest, recipients: &[Recipient], now: DateTime<Utc>) -> Vec<Planned> {
    let due = request.scheduled_at.map_or(now, |at| at.max(now));
    let mut channels = request.channels.clone();
    channels.sort_unstable();
    channels.dedup();
    let mut planned = Vec::with_capacity(recipients.len() * channels.len());
    for recipient in recipients {
        for &channel in &channels {
            let prefs = &recipient.preferences;
            let (status, reason, run_at) =
                if let Some(why) = prefs.suppression(channel, &request.r#type) {
                    (
                        "suppressed",
                        Some(why.reason(channel, &request.r#type)),
                        due,
                    )
                } else if channel == Channel::Email && recipient.email.is_none() {
                    (
                        "suppressed",
                        Some("no_address: the user has no email address".to_owned()),
                        due,
                    )
                } else if let Some(end) = (request.priority != Priority::Urgent)
                    .then(|| prefs.quiet().and_then(|q| q.ends_after(due)))
                    .flatten()
                {
                    (
                        "deferred",
                        Some(format!("quiet_hours: until {}", end.to_rfc3339())),
                        end,
                    )
                } else {
                    ("queued", None, due)
                };
            planned.push(Planned {
                user_id: recipient.user_id,
                channel,
                status,
                reason,
                run_at,
            });
        }
    }
    planned
}

/// The `Idempotency-Key` header, if sent: 1-255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Checks the fields that serde cannot (`422` naming the field).
pub fn validate(request: &SendRequest) -> Result<(), ApiError> {
    if request.user_ids.is_empty() || request.user_ids.len() > MAX_RECIPIENTS {
        return Err(ApiError::validation(
            "userIds",
            format!("`userIds` must list 1 to {MAX_RECIPIENTS} users"),
        ));
    }
    if request.channels.is_empty() {
        return Err(ApiError::validation(
            "channels",
            "`channels` must list at least one of email, push, sms, in_app",
        ));
    }
    if !valid_type(&request.r#type) {
        return Err(ApiError::validation(
            "type",
            "`type` is 1-64 of a-z, 0-9, `_`, `.`, `-`",
        ));
    }
    let title = request.title.trim();
    if title.is_empty() || request.title.chars().count() > 200 {
        return Err(ApiError::validation(
            "title",
            "`title` must be 1-200 characters",
        ));
    }
    if request.message.trim().is_empty() || request.message.chars().count() > 10_000 {
        return Err(ApiError::validation(
            "message",
            "`message` must be 1-10,000 characters",
        ));
    }
    if let Some(retries) = request.max_retries
        && !(0..=20).contains(&retries)
    {
        return Err(ApiError::validation(
            "maxRetries",
            "`maxRetries` must be between 0 and 20",
        ));
    }
    if let Some(data) = &request.data
        && !data.is_object()
    {
        return Err(ApiError::validation("data", "`data` must be an object"));
    }
    Ok(())
}

/// Who sends: admins and owners of the organization, and operators.
pub async fn authorize(
    state: &AppState,
    principal: Principal,
    organization_id: Uuid,
) -> Result<(), ApiError> {
    let role = organizations::caller_role(state, principal, organization_id).await?;
    if role.manages_members() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admins and owners of the organization send notifications",
        ))
    }
}

/// What a stored send answered.
#[derive(Debug)]
pub enum Stored {
    /// Newly accepted.
    New(SendAccepted),
    /// The same key and body were sent before: its answer.
    Replay(SendAccepted),
}

/// Stores one send (the notification, its deliveries, the wake-up) inside
/// `tx`. The caller commits. `Err(Conflict)` for a key reused with another body.
pub async fn store(
    tx: &mut PgConnection,
    request: &SendRequest,
    created_by: Uuid,
    idempotency_key: Option<&str>,
    default_max_retries: i32,
    job_id: Option<Uuid>,
) -> Result<Stored, ApiError> {
    let body = serde_json::to_value(request).map_err(|e| ApiError::Internal(e.into()))?;
    let id = Uuid::now_v7();
    let max_retries = request.max_retries.unwrap_or(default_max_retries);
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO notifications (id, organization_id, created_by, type, title, message, priority,
                                    data, scheduled_at, max_retries, idempotency_key, request, job_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (organization_id, created_by, idempotency_key)
             WHERE idempotency_key IS NOT NULL DO NOTHING
         RETURNING id",
    )
    .bind(id)
    .bind(request.organization_id)
    .bind(created_by)
    .bind(&request.r#type)
    .bind(&request.title)
    .bind(&request.message)
    .bind(request.priority.rank())
    .bind(&request.data)
    .bind(request.scheduled_at)
    .bind(max_retries)
    .bind(idempotency_key)
    .bind(&body)
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    if inserted.is_none() {
        let (existing, same, queued, deferred, suppressed): (Uuid, bool, i32, i32, i32) =
            sqlx::query_as(
                "SELECT id, request = $4, queued, deferred, suppressed FROM notifications
                 WHERE organization_id = $1 AND created_by = $2 AND idempotency_key = $3",
            )
            .bind(request.organization_id)
            .bind(created_by)
            .bind(idempotency_key)
            .bind(&body)
            .fetch_one(&mut *tx)
            .await?;
        if !same {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used for a different notification".into(),
            ));
        }
        return Ok(Stored::Replay(SendAccepted {
            notification_id: existing,
            queued,
            deferred,
            suppressed,
        }));
    }

    let recipients = recipients(&mut *tx, request).await?;
    let planned = plan(request, &recipients, Utc::now());
    let count = |status: &str| {
        i32::try_from(planned.iter().filter(|p| p.status == status).count()).unwrap_or(i32::MAX)
    };
    let accepted = SendAccepted {
        notification_id: id,
        queued: count("queued"),
        deferred: count("deferred"),
        suppressed: count("suppressed"),
    };
    let n = planned.len();
    let mut ids = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    for p in &planned {
        ids.push(Uuid::now_v7());
        users.push(p.user_id);
        channels.push(p.channel.as_str());
        statuses.push(p.status);
        reasons.push(p.reason.clone());
        run_ats.push(p.run_at);
        tokens.push(Uuid::new_v4().simple().to_string());
    }
    sqlx::query(
        "INSERT INTO notification_deliveries
             (id, notification_id, organization_id, user_id, channel, priority, status, reason,
              max_retries, run_at, tracking_token)
         SELECT d.id, $2, $3, d.user_id, d.channel, $4, d.status, d.reason, $5, d.run_at, d.token
         FROM unnest($1::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[],
                     $10::timestamptz[], $11::text[])
              AS d(id, user_id, channel, status, reason, run_at, token)",
    )
    .bind(&ids)
    .bind(id)
    .bind(request.organization_id)
    .bind(request.priority.rank())
    .bind(max_retries)
    .bind(&users)
    .bind(&channels)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&run_ats)
    .bind(&tokens)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE notifications SET queued = $2, deferred = $3, suppressed = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(accepted.queued)
    .bind(accepted.deferred)
    .bind(accepted.suppressed)
    .execute(&mut *tx)
    .await?;
    if accepted.queued > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(QUEUED_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(Stored::New(accepted))
}

/// The recipients, deduplicated; `422` naming those outside the organization.
async fn recipients(
    tx: &mut PgConnection,
    request: &SendRequest,
) -> Result<Vec<Recipient>, ApiError> {
    let mut seen = HashSet::with_capacity(request.user_ids.len());
    let ids: Vec<Uuid> = request
        .user_ids
        .iter()
        .copied()
        .filter(|id| seen.insert(*id))
        .collect();
    let rows: Vec<(Uuid, bool, Option<String>)> = sqlx::query_as(
        "SELECT b.id, m.user_id IS NOT NULL, u.email
         FROM unnest($1::uuid[]) WITH ORDINALITY AS b(id, n)
         LEFT JOIN memberships m ON m.user_id = b.id AND m.organization_id = $2
         LEFT JOIN users u ON u.id = b.id
         ORDER BY b.n",
    )
    .bind(&ids)
    .bind(request.organization_id)
    .fetch_all(&mut *tx)
    .await?;
    let outside: Vec<String> = rows
        .iter()
        .filter(|(_, member, _)| !member)
        .map(|(id, _, _)| id.to_string())
        .collect();
    if !outside.is_empty() {
        let shown: Vec<&str> = outside.iter().take(5).map(String::as_str).collect();
        return Err(ApiError::validation(
            "userIds",
            format!(
                "{} recipient(s) are not members of the organization: {}{}",
                outside.len(),
                shown.join(", "),
                if outside.len() > 5 { ", …" } else { "" }
            ),
        ));
    }
    let mut prefs = preferences::load_many(&mut *tx, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, _, email)| Recipient {
            user_id,
            email,
            preferences: prefs.remove(&user_id).unwrap_or_default(),
        })
        .collect())
}

/// Send a notification to members of an organization (admins, owners and
/// operators). `202` with the counts; every delivery is durable by then.
#[utoipa::path(
    post,
    path = "/v1/notifications",
    tag = "notifications",
    request_body = SendRequest,
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "1-255 visible ASCII characters; the same key and body return the same answer, another body a 409"
    )),
    security(("bearer" = [])),
    responses((
        status = 202,
        description = "Accepted: deliveries queued, deferred or suppressed",
        body = Envelope<SendAccepted>,
        headers(("Location" = String, description = "/v1/notifications/{notificationId}"))
    ))
)]
pub async fn send(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Json(request): Json<SendRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    validate(&request)?;
    authorize(&state, principal, request.organization_id).await?;
    let default_retries = state.settings.notifications.max_retries;
    let stored = state
        .db
        .run(async {
            let mut tx = state.db.pool.begin().await?;
            let stored = store(
                &mut tx,
                &request,
                principal.user_id,
                key.as_deref(),
                default_retries,
                None,
            )
            .await?;
            tx.commit().await?;
            Ok(stored)
        })
        .await?;
    let accepted = match stored {
        Stored::New(accepted) => {
            tracing::info!(
                notification_id = %accepted.notification_id,
                queued = accepted.queued,
                deferred = accepted.deferred,
                suppressed = accepted.suppressed,
                "notification accepted"
            );
            accepted
        }
        Stored::Replay(accepted) => accepted,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(
            header::LOCATION,
            format!("/v1/notifications/{}", accepted.notification_id),
        )],
        axum::Json(Envelope::new(accepted)),
    )
        .into_response())
}

type NotificationRow = (
    Uuid,
    Uuid,
    Uuid,
    String,
    String,
    String,
    i16,
    Option<Value>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    i32,
    i32,
    i32,
);

/// A notification with each delivery's status (members of its organization,
/// operators).
#[utoipa::path(
    get,
    path = "/v1/notifications/{id}",
    tag = "notifications",
    params(("id" = Uuid, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The notification and its deliveries", body = Envelope<NotificationView>))
)]
pub async fn get_notification(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let pool = &state.db.pool;
    let row: Option<NotificationRow> = state
        .db
        .run(async {
            Ok(sqlx::query_as(
                "SELECT n.id, n.organization_id, n.created_by, n.type, n.title, n.message,
                        n.priority, n.data, n.scheduled_at, n.created_at, n.queued, n.deferred,
                        n.suppressed
                 FROM notifications n
                 WHERE n.id = $1 AND ($2 OR EXISTS (
                     SELECT 1 FROM memberships m
                     WHERE m.organization_id = n.organization_id AND m.user_id = $3))",
            )
            .bind(id)
            .bind(principal.operator)
            .bind(principal.user_id)
            .fetch_optional(pool)
            .await?)
        })
        .await?;
    let Some(row) = row else {
        return Err(ApiError::not_found("notification"));
    };
    let deliveries: Vec<Delivery> = state
        .db
        .run(async {
            Ok(sqlx::query_as(
                "SELECT id, user_id, channel, status, reason, attempts, last_error, queued_at,
                        run_at AS due_at, sent_at, delivered_at, opened_at, clicked_at, read_at
                 FROM notification_deliveries WHERE notification_id = $1
                 ORDER BY user_id, channel",
            )
            .bind(id)
            .fetch_all(pool)
            .await?)
        })
        .await?;
    let (id, organization_id, created_by, kind, title, message, priority, data, scheduled_at) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    Ok(envelope::ok(NotificationView {
        id,
        organization_id,
        created_by,
        r#type: kind,
        title,
        message,
        priority: Priority::from_rank(priority),
        data,
        scheduled_at,
        created_at: row.9,
        queued: row.10,
        deferred: row.11,
        suppressed: row.12,
        deliveries,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::TimeZone;

    use super::*;
    use crate::notifications::preferences::{Preferences, QuietHoursBody};

    fn request(priority: Priority, channels: Vec<Channel>) -> SendRequest {
        SendRequest {
            user_ids: vec![Uuid::nil()],
            organization_id: Uuid::nil(),
            r#type: "meeting_reminder".into(),
            channels,
            title: "Board meeting tomorrow".into(),
            message: "At 10:00".into(),
            priority,
            data: None,
            scheduled_at: None,
            max_retries: None,
        }
    }

    fn night_owl() -> Recipient {
        let mut prefs = Preferences {
            quiet_hours: Some(QuietHoursBody {
                start: "22:00".into(),
                end: "07:00".into(),
                timezone: "America/New_York".into(),
            }),
            ..Preferences::default()
        };
        prefs.channels.sms = Some(false);
        prefs
            .types
            .insert("meeting_reminder".into(), [(Channel::Push, false)].into());
        Recipient {
            user_id: Uuid::nil(),
            email: Some("a@example.org".into()),
            preferences: Resolved::new(prefs),
        }
    }

    #[test]
    fn preferences_and_quiet_hours_decide_each_delivery() {
        // 08:00 UTC = 03:00 in New York (EST in January): quiet until 07:00 EST = 12:00 UTC.
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap();
        let all = vec![Channel::Email, Channel::Push, Channel::Sms, Channel::InApp];
        let planned = plan(&request(Priority::Normal, all.clone()), &[night_owl()], now);
        let by = |c: Channel| planned.iter().find(|p| p.channel == c).unwrap();
        assert_eq!(by(Channel::Email).status, "deferred");
        assert_eq!(
            by(Channel::Email).run_at,
            Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
        );
        assert_eq!(by(Channel::Push).status, "suppressed");
        assert!(
            by(Channel::Push)
                .reason
                .as_deref()
                .unwrap()
                .starts_with("type_disabled")
        );
        assert_eq!(by(Channel::Sms).status, "suppressed");
        assert!(
            by(Channel::Sms)
                .reason
                .as_deref()
                .unwrap()
                .starts_with("channel_disabled")
        );
        assert_eq!(by(Channel::InApp).status, "deferred");

        // Urgent passes quiet hours (not preferences).
        let planned = plan(&request(Priority::Urgent, all), &[night_owl()], now);
        let by = |c: Channel| planned.iter().find(|p| p.channel == c).unwrap();
        assert_eq!(by(Channel::Email).status, "queued");
        assert_eq!(by(Channel::Email).run_at, now);
        assert_eq!(by(Channel::Sms).status, "suppressed");
    }

    #[test]
    fn a_scheduled_send_is_judged_at_its_due_time() {
        let now = Utc.with_ymd_and_hms(2026, 1, 15, 8, 0, 0).unwrap();
        let mut req = request(Priority::Low, vec![Channel::Email]);
        // 15:00 UTC = 10:00 in New York: outside quiet hours.
        let at = Utc.with_ymd_and_hms(2026, 1, 15, 15, 0, 0).unwrap();
        req.scheduled_at = Some(at);
        let planned = plan(&req, &[night_owl()], now);
        assert_eq!(planned[0].status, "queued");
        assert_eq!(planned[0].run_at, at);
    }
}
