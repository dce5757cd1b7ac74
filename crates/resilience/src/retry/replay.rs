//! Which requests may be sent again, and how they are copied.

use http::{Method, Request};

/// Decides whether a request may be retried and makes the copy to send.
///
/// Returning `None` means "never retry this request" (it is not idempotent,
/// or cannot be copied): it is sent once and its result returned as is.
pub trait Replay<Req> {
    /// A copy of `request` to send again, or `None` to never retry it.
    fn replay(&self, request: &Req) -> Option<Req>;
}

impl<Req, F> Replay<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn replay(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// Every request is idempotent and retried by cloning it. The default, for
/// requests that are not HTTP (a database query, a gRPC read).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// For `http::Request<B>` with a cloneable body: retries only idempotent
/// methods (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`), or any
/// method when the request carries an `Idempotency-Key` header.
///
/// The body must be cloneable: a streaming body (axum's `Body`) has to be
/// buffered (into `Bytes`, say) before a retry layer can send it twice.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdempotentHttp;

/// The `Idempotency-Key` header that makes a `POST` or `PATCH` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `true` when sending `request` twice has the effect of sending it once.
pub fn is_idempotent<B>(request: &Request<B>) -> bool {
    matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || request.headers().contains_key(IDEMPOTENCY_KEY)
}

impl<B: Clone> Replay<Request<B>> for IdempotentHttp {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        is_idempotent(request).then(|| request.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, key: bool) -> Request<()> {
        let mut builder = Request::builder().method(method).uri("/v1/things");
        if key {
            builder = builder.header("Idempotency-Key", "8d1e");
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn idempotent_methods_and_keys() {
        assert!(
            IdempotentHttp
                .replay(&request(Method::GET, false))
                .is_some()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::PUT, false))
                .is_some()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::DELETE, false))
                .is_some()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::POST, false))
                .is_none()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::PATCH, false))
                .is_none()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::POST, true))
                .is_some()
        );
        assert!(
            IdempotentHttp
                .replay(&request(Method::PATCH, true))
                .is_some()
        );
    }
}
