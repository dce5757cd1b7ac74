//! Downloads: `POST /v1/assets/{id}/download-url` signs a link, and
//! `GET /v1/files/{token}` serves it — or, with `storage.backend = "s3"`,
//! the link is the bucket's presigned `GET` URL and S3 serves the bytes.
//!
//! With S3 the service never sees the fetch, so the download is recorded
//! when the link is granted (one per `download-url` call); with the local
//! store, when `/v1/files/{token}` serves it (below).
//!
//! The link is the credential (no bearer token needed, so a browser or a
//! CDN can fetch it): HMAC-signed, expiring, bound to the asset and its
//! version ([`super::token`]). A tampered or expired link is a `403`.
//! Served with `Range` (one range: `206`, unsatisfiable: `416`), a strong
//! `ETag` (the SHA-256) with `If-None-Match` (`304`), `Content-Disposition:
//! attachment` with the original name, and `Cache-Control: public,
//! max-age=<the link's remaining life>, immutable` — the bytes behind a link
//! never change, so a CDN may keep them exactly as long as the link works.
//!
//! A file is served only once it is known clean (or scanning is off):
//! quarantined files never (`403`), files whose scan is pending only with
//! `scanner.allow_unscanned_downloads` (else `409`). Every download (a
//! full body, or a range from byte 0) is recorded with who signed the link.

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use uuid::Uuid;

use super::{
    load_for,
    model::{Asset, DownloadUrl, DownloadUrlRequest, ProcessingStatus, ScanStatus},
    repository, storage_unavailable,
    token::TokenError,
};
use crate::{
    auth::Principal,
    config::Settings,
    envelope::{self, Envelope, ErrorBody, ErrorEnvelope},
    error::{ApiError, ErrorReport},
    extract::{Json, Path},
    state::AppState,
};

/// Lifetime of a link when `expiresIn` is not given.
pub const DEFAULT_EXPIRES_IN: i64 = 3600;

/// Whether `asset` may be served now.
pub fn check_downloadable(settings: &Settings, asset: &Asset) -> Result<(), ApiError> {
    if asset.processing_status == ProcessingStatus::Quarantined
        || asset.scan_status == ScanStatus::Infected
    {
        return Err(ApiError::forbidden(
            "the file is quarantined (malware was found) and is never served",
        ));
    }
    match asset.scan_status {
        ScanStatus::Clean | ScanStatus::Skipped => Ok(()),
        ScanStatus::Pending if settings.scanner.allow_unscanned_downloads => Ok(()),
        ScanStatus::Pending => Err(ApiError::Conflict(
            "the file has not been virus-scanned yet; retry once its scanStatus is clean".into(),
        )),
        ScanStatus::Failed | ScanStatus::Infected => Err(ApiError::forbidden(
            "the file could not be virus-scanned and is not served",
        )),
    }
}

/// Sign a download link for an asset (anyone who can see it).
#[utoipa::path(
    post,
    path = "/v1/assets/{id}/download-url",
    tag = "assets",
    params(("id" = Uuid, Path, description = "Asset id")),
    request_body = DownloadUrlRequest,
    security(("bearer" = [])),
    responses((status = 200, description = "A signed link", body = Envelope<DownloadUrl>))
)]
pub async fn create_download_url(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<DownloadUrlRequest>,
) -> Result<Response, ApiError> {
    let (asset, _) = load_for(&state, principal, id).await?;
    let max =
        i64::try_from(state.settings.assets.max_download_expiry.as_secs()).unwrap_or(i64::MAX);
    let expires_in = body.expires_in.unwrap_or(DEFAULT_EXPIRES_IN.min(max));
    if !(1..=max).contains(&expires_in) {
        return Err(ApiError::validation(
            "expiresIn",
            format!("`expiresIn` must be between 1 and {max} seconds"),
        ));
    }
    check_downloadable(&state.settings, &asset)?;
    let expires_at = Utc::now().timestamp().saturating_add(expires_in);
    let user = (!principal.operator).then_some(principal.user_id);
    let url = if state.assets.storage.presigns() {
        presigned_url(&state, &asset, expires_in, user).await?
    } else {
        let token = state
            .assets
            .signer
            .sign(asset.id, asset.version, expires_at, user);
        format!("/v1/files/{token}")
    };
    Ok(envelope::ok(DownloadUrl {
        url,
        expires_at: DateTime::from_timestamp(expires_at, 0).unwrap_or_else(Utc::now),
        file_name: asset.file_name,
        file_size: asset.size_bytes,
        mime_type: asset.mime_type,
    }))
}

/// The object-store key of `id`'s current file (`404` once the asset is gone).
async fn storage_key(state: &AppState, id: Uuid) -> Result<String, ApiError> {
    match state.db.run(repository::keys(&state.db.pool, id)).await? {
        Some((key, _)) => Ok(key),
        None => Err(ApiError::not_found("asset")),
    }
}

/// Records a `kind` event (`view`, `download`) of `asset` by `user` (none for operators).
pub(super) async fn record_event(
    state: &AppState,
    asset: &Asset,
    user: Option<Uuid>,
    kind: &str,
) -> Result<(), ApiError> {
    state
        .db
        .run(repository::record_event(
            &state.db.pool,
            asset.id,
            asset.organization_id,
            user,
            kind,
        ))
        .await
}

/// The S3 presigned URL of `asset`'s current file, valid `expires_in`
/// seconds; records the download (the grant) for `user`.
async fn presigned_url(
    state: &AppState,
    asset: &Asset,
    expires_in: i64,
    user: Option<Uuid>,
) -> Result<String, ApiError> {
    let key = storage_key(state, asset.id).await?;
    let lifetime = std::time::Duration::from_secs(u64::try_from(expires_in).unwrap_or(1));
    let url = state
        .assets
        .storage
        .presigned_get(
            &key,
            lifetime,
            &asset.mime_type,
            &content_disposition(&asset.file_name),
        )
        .await
        .map_err(storage_unavailable)?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the store signs no URLs")))?;
    record_event(state, asset, user, "download").await?;
    Ok(url)
}

/// Download a file through a signed link (no bearer token: the link is
/// the credential).
#[utoipa::path(
    get,
    path = "/v1/files/{token}",
    tag = "assets",
    params(
        ("token" = String, Path, description = "The signed token of a download link"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
        ("If-None-Match" = Option<String>, Header, description = "An ETag from an earlier download"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>,
            headers(
                ("ETag" = String, description = "The SHA-256 of the bytes, quoted"),
                ("Content-Disposition" = String, description = "attachment with the file name"),
                ("Cache-Control" = String, description = "public, max-age = the link's remaining life"),
                ("Accept-Ranges" = String, description = "bytes"),
            )),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Content-Range" = String, description = "bytes start-end/size"))),
        (status = 304, description = "Not modified (If-None-Match matched the ETag)"),
        (status = 403, description = "The link is invalid, tampered with or expired, or the file is quarantined", body = ErrorEnvelope),
        (status = 409, description = "The file is not virus-scanned yet", body = ErrorEnvelope),
        (status = 416, description = "The range is outside the file", body = ErrorEnvelope),
    )
)]
pub async fn serve_file(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = Utc::now().timestamp();
    let claims = state
        .assets
        .signer
        .verify(&token, now)
        .map_err(|error| match error {
            TokenError::Invalid | TokenError::Expired => ApiError::forbidden(error.to_string()),
        })?;
    let asset = state
        .db
        .run(repository::find(&state.db.pool, claims.asset_id))
        .await?
        .ok_or_else(|| ApiError::not_found("asset"))?;
    if asset.version != claims.version {
        return Err(ApiError::forbidden(
            "the download link is for an older version of the file",
        ));
    }
    check_downloadable(&state.settings, &asset)?;
    let key = storage_key(&state, asset.id).await?;
    let size = u64::try_from(asset.size_bytes).unwrap_or(0);
    let etag = format!("\"{}\"", asset.sha256);
    let remaining = claims.expires_at.saturating_sub(now).max(0);
    let mut common = HeaderMap::new();
    let insert = |map: &mut HeaderMap, name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(name, value);
        }
    };
    insert(&mut common, header::ETAG, etag.clone());
    insert(
        &mut common,
        header::CACHE_CONTROL,
        format!("public, max-age={remaining}, immutable"),
    );
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));

    if let Some(candidates) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && candidates
            .split(',')
            .any(|c| c.trim() == "*" || c.trim().trim_start_matches("W/") == etag)
    {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }

    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) => match parse_range(value, size) {
            RangeSpec::Ignore => None,
            RangeSpec::Unsatisfiable => return Ok(unsatisfiable(size)),
            RangeSpec::Bytes(start, end) => Some((start, end)),
        },
        None => None,
    };
    if range.is_none_or(|(start, _)| start == 0) {
        record_event(&state, &asset, claims.user_id, "download").await?;
    }
    let stream = state
        .assets
        .storage
        .stream(&key, range.map(|(start, end)| start..end + 1))
        .await
        .map_err(storage_unavailable)?;
    insert(&mut common, header::CONTENT_TYPE, asset.mime_type.clone());
    insert(
        &mut common,
        header::CONTENT_DISPOSITION,
        content_disposition(&asset.file_name),
    );
    let (status, length) = match range {
        Some((start, end)) => {
            insert(
                &mut common,
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{size}"),
            );
            (StatusCode::PARTIAL_CONTENT, end - start + 1)
        }
        None => (StatusCode::OK, size),
    };
    insert(&mut common, header::CONTENT_LENGTH, length.to_string());
    Ok((status, common, Body::from_stream(stream)).into_response())
}

/// A `Range` header, judged against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// Malformed, several ranges, or not bytes: serve the whole file.
    Ignore,
    /// Starts past the end: `416`.
    Unsatisfiable,
    /// Inclusive byte range.
    Bytes(u64, u64),
}

/// Parses one `bytes=` range.
///
/// ```
/// use boardroom::assets::download::{parse_range, RangeSpec};
/// assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Bytes(0, 9));
/// assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Bytes(90, 99));
/// assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Bytes(90, 99));
/// assert_eq!(parse_range("bytes=50-500", 100), RangeSpec::Bytes(50, 99));
/// assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
/// assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
/// ```
pub fn parse_range(value: &str, size: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let Ok(suffix) = last.parse::<u64>() else {
            return RangeSpec::Ignore;
        };
        if suffix == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Bytes(size.saturating_sub(suffix), size - 1);
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Ignore;
    };
    let end = if last.is_empty() {
        size.saturating_sub(1)
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end.min(size.saturating_sub(1)),
            _ => return RangeSpec::Ignore,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Bytes(start, end)
}

fn unsatisfiable(size: u64) -> Response {
    let report = ErrorReport {
        status: StatusCode::RANGE_NOT_SATISFIABLE,
        body: ErrorBody {
            code: "range_not_satisfiable".into(),
            message: format!("the range is outside the file ({size} bytes)"),
            request_id: String::new(),
            field: Some("Range".into()),
            retry_after: None,
        },
    };
    let mut response = report.clone().into_response_with_id("");
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response.extensions_mut().insert(report);
    response
}

/// `attachment` with an ASCII fallback name and the exact UTF-8 name.
///
/// ```
/// use boardroom::assets::download::content_disposition;
/// assert_eq!(
///     content_disposition("Q3 \"final\".pdf"),
///     "attachment; filename=\"Q3 _final_.pdf\"; filename*=UTF-8''Q3%20%22final%22%2Epdf"
/// );
/// ```
pub fn content_disposition(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = utf8_percent_encode(file_name, NON_ALPHANUMERIC);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}
