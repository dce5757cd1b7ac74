//! Delivering a finished job's state to its `callbackUrl`.
//!
//! A `POST` of the same body `GET /v1/jobs/{id}` returns (`{success, data}`),
//! with `Idempotency-Key: <job id>` so a receiver can drop a repeat. Any `2xx`
//! is a delivery; anything else (or no answer within `jobs.callback_timeout`)
//! is retried after `jobs.callback_backoff`, doubled each time up to 30 s, at
//! most `jobs.callback_attempts` times in all. The state is kept in the job
//! row (`callback_status`, `callback_attempts`), so a crash between
//! completion and delivery still delivers after the restart (at least once).

use std::time::Duration;

use crate::{config::JobsSettings, envelope::Envelope, validation};

use super::model::Job;

/// The longest wait between two deliveries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait after the `attempt`-th failed delivery (1-based).
pub fn backoff(settings: &JobsSettings, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    settings
        .callback_backoff
        .saturating_mul(factor)
        .min(MAX_BACKOFF)
}

/// One delivery: `Ok` on a `2xx`, else what went wrong.
pub async fn deliver(client: &reqwest::Client, url: &str, job: &Job) -> Result<(), String> {
    let response = client
        .post(url)
        .header("idempotency-key", job.id.to_string())
        .json(&Envelope::new(job))
        .send()
        .await
        .map_err(|error| error.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}

/// The HTTP client for callbacks (no redirects: the URL given is the one called).
pub fn client(settings: &JobsSettings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(settings.callback_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "jobs: callback client with defaults");
            reqwest::Client::new()
        })
}

/// Checks a `callbackUrl`: an absolute `http` or `https` URL with a host, at
/// most 2,000 characters (`422` naming `field`).
pub fn validate_url(field: &str, url: &str) -> Result<(), crate::error::ApiError> {
    let parsed = url.parse::<http::Uri>().ok();
    let ok = url.len() <= 2000
        && parsed.as_ref().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http") | Some("https"))
                && uri.host().is_some_and(|host| !host.is_empty())
        });
    if ok {
        validation::text(field, url, 2000)
    } else {
        Err(crate::error::ApiError::validation(
            field,
            format!("`{field}` must be an absolute http(s) URL such as https://example.org/hook"),
        ))
    }
}
