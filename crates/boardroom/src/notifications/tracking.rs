//! Email engagement: the open pixel `GET /t/o/{token}` and tracked links
//! `GET /t/c/{token}.{n}`. No authentication (mail clients fetch them); the
//! token is a random secret of one delivery.
//!
//! The pixel sets `openedAt` (the first time) and marks the delivery
//! `delivered`. A link redirects only to the `n`-th link of the delivery's
//! own stored message — never to a URL taken from the request, so these
//! routes cannot be used as an open redirect — and sets `clickedAt`.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::channels::links;
use crate::{error::ApiError, extract::Path, state::AppState};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn valid_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The open-tracking pixel of an email.
#[utoipa::path(
    get,
    path = "/t/o/{token}",
    tag = "notifications",
    params(("token" = String, Path, description = "The delivery's tracking token")),
    responses((status = 200, description = "A 1×1 transparent GIF", content_type = "image/gif", body = Vec<u8>))
)]
pub async fn open_pixel(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    if !valid_token(&token) {
        return Err(ApiError::not_found("tracking token"));
    }
    let pool = &state.db.pool;
    let found = state
        .db
        .run(async {
            Ok(sqlx::query(
                "UPDATE notification_deliveries
                 SET opened_at = coalesce(opened_at, now()),
                     delivered_at = coalesce(delivered_at, now()),
                     status = CASE WHEN status = 'sent' THEN 'delivered' ELSE status END,
                     updated_at = now()
                 WHERE tracking_token = $1",
            )
            .bind(&token)
            .execute(pool)
            .await?
            .rows_affected())
        })
        .await?;
    if found == 0 {
        return Err(ApiError::not_found("tracking token"));
    }
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, max-age=0"),
            ),
        ],
        PIXEL,
    )
        .into_response())
}

/// A tracked link: redirects to the original URL of the message.
#[utoipa::path(
    get,
    path = "/t/c/{token}",
    tag = "notifications",
    params(("token" = String, Path, description = "`<tracking token>.<link number>`")),
    responses((
        status = 302,
        description = "To the link's original URL",
        headers(("Location" = String, description = "The original URL"))
    ))
)]
pub async fn click(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (secret, n) = token
        .split_once('.')
        .and_then(|(secret, n)| Some((secret, n.parse::<usize>().ok()?)))
        .filter(|(secret, _)| valid_token(secret))
        .ok_or_else(|| ApiError::not_found("link"))?;
    let pool = &state.db.pool;
    let message: Option<String> = state
        .db
        .run(async {
            Ok(sqlx::query_scalar(
                "SELECT n.message FROM notification_deliveries d
                 JOIN notifications n ON n.id = d.notification_id
                 WHERE d.tracking_token = $1",
            )
            .bind(secret)
            .fetch_optional(pool)
            .await?)
        })
        .await?;
    let message = message.ok_or_else(|| ApiError::not_found("link"))?;
    let (start, end) = *links(&message)
        .get(n)
        .ok_or_else(|| ApiError::not_found("link"))?;
    let location =
        HeaderValue::from_str(&message[start..end]).map_err(|_| ApiError::not_found("link"))?;
    state
        .db
        .run(async {
            sqlx::query(
                "UPDATE notification_deliveries
                 SET clicked_at = coalesce(clicked_at, now()),
                     opened_at = coalesce(opened_at, now()),
                     delivered_at = coalesce(delivered_at, now()),
                     status = CASE WHEN status = 'sent' THEN 'delivered' ELSE status END,
                     updated_at = now()
                 WHERE tracking_token = $1",
            )
            .bind(secret)
            .execute(pool)
            .await?;
            Ok(())
        })
        .await?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}
