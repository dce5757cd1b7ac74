//! One failure classifier shared by the breaker, retry and metrics layers.
//!
//! A [`Classifier`] looks at the result of one call and says what it means for
//! the callee's health: [`Outcome::Success`] or [`Outcome::Failure`], and for a
//! failure whether trying again may help and how long the callee asked us to
//! wait. Every layer that needs to judge a call takes the same classifier, so
//! "what counts as a failure" is decided once per service.
//!
//! ```
//! use resilience::classify::{Classifier, ErrorIsFailure, Outcome};
//!
//! let classifier = ErrorIsFailure;
//! assert_eq!(Classifier::<u8, ()>::classify(&classifier, Ok(&1)), Outcome::Success);
//! assert!(Classifier::<u8, ()>::classify(&classifier, Err(&())).is_failure());
//! ```

use std::time::{Duration, SystemTime};

/// What one call's result means for the health of the service that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The callee did its job. Client mistakes (an HTTP 404 or 422) are
    /// successes here: they say nothing bad about the callee.
    Success,
    /// The callee failed.
    Failure(Failure),
}

/// Details of a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Whether the same request may succeed if sent again (a timeout, a 503),
    /// as opposed to a failure that will repeat (a 501, a bug).
    pub retryable: bool,
    /// How long the callee asked callers to wait before trying again
    /// (an HTTP `Retry-After`, an open breaker's next probe).
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// A retryable failure with no wait hint.
    pub const RETRYABLE: Outcome = Outcome::Failure(Failure {
        retryable: true,
        retry_after: None,
    });
    /// A failure that retrying will not fix.
    pub const PERMANENT: Outcome = Outcome::Failure(Failure {
        retryable: false,
        retry_after: None,
    });

    /// `true` for [`Outcome::Failure`].
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failure(_))
    }

    /// `true` for a failure that may succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Outcome::Failure(Failure {
                retryable: true,
                ..
            })
        )
    }

    /// The wait the callee asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Failure(f) => f.retry_after,
            Outcome::Success => None,
        }
    }
}

/// Judges the result of one call.
///
/// Implemented for closures `Fn(Result<&T, &E>) -> Outcome`, so a one-off rule
/// needs no type of its own.
pub trait Classifier<T, E> {
    /// Classify one result. Called once per call on the hot path: it must not
    /// allocate or block.
    fn classify(&self, result: Result<&T, &E>) -> Outcome;
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(Result<&T, &E>) -> Outcome,
{
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        self(result)
    }
}

/// Every `Ok` is a success, every `Err` a retryable failure. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorIsFailure;

impl<T, E> Classifier<T, E> for ErrorIsFailure {
    fn classify(&self, result: Result<&T, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::RETRYABLE,
        }
    }
}

/// For HTTP responses: `5xx` and `429` are failures, everything else a success.
///
/// `429`, `502`, `503` and `504` are retryable and their `Retry-After` header
/// (delta-seconds or an HTTP date) is read; other `5xx` are not retryable. An
/// `Err` from the inner service (connection refused, timeout) is a retryable
/// failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpStatus;

impl<B, E> Classifier<http::Response<B>, E> for HttpStatus {
    fn classify(&self, result: Result<&http::Response<B>, &E>) -> Outcome {
        let response = match result {
            Ok(response) => response,
            Err(_) => return Outcome::RETRYABLE,
        };
        let status = response.status();
        let retryable = match status.as_u16() {
            429 | 502 | 503 | 504 => true,
            500..=599 => false,
            _ => return Outcome::Success,
        };
        Outcome::Failure(Failure {
            retryable,
            retry_after: if retryable {
                retry_after_header(response.headers())
            } else {
                None
            },
        })
    }
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110 §10.2.3).
/// A date in the past reads as zero; an unparseable value as `None`.
pub fn retry_after_header(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, retry_after: Option<&str>) -> http::Response<()> {
        let mut builder = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            builder = builder.header(http::header::RETRY_AFTER, value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn http_status_classes() {
        let c = HttpStatus;
        let judge = |r: http::Response<()>| Classifier::<_, ()>::classify(&c, Ok(&r));
        assert_eq!(judge(response(200, None)), Outcome::Success);
        assert_eq!(judge(response(404, None)), Outcome::Success);
        assert_eq!(judge(response(500, None)), Outcome::PERMANENT);
        assert_eq!(judge(response(503, None)), Outcome::RETRYABLE);
        assert_eq!(
            judge(response(503, Some("7"))).retry_after(),
            Some(Duration::from_secs(7))
        );
        assert!(judge(response(429, None)).is_retryable());
    }

    #[test]
    fn retry_after_http_date() {
        let at = SystemTime::now() + Duration::from_secs(120);
        let value = httpdate::fmt_http_date(at);
        let parsed = retry_after_header(response(503, Some(&value)).headers()).unwrap();
        assert!(parsed <= Duration::from_secs(120) && parsed >= Duration::from_secs(118));
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            retry_after_header(response(503, Some(&past)).headers()),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after_header(response(503, Some("soon")).headers()),
            None
        );
    }
}
