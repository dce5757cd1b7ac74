//! [`CacheService`]: answers `GET`/`HEAD` from the cache, loads misses once
//! per key through the inner service, and applies mutations' invalidations.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, PRAGMA, SET_COOKIE};
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use parking_lot::Mutex;
use tower_service::Service;

use super::body::{Buffered, CacheTags, CachedResponse, HttpEntry, InvalidateTags, buffer};
use super::future::{ResponseFuture, box_response};
use super::layer::Shared;
use super::typed::{LoadOptions, Loaded, Store};
use crate::BoxError;

/// Caches the inner service's `GET` responses; built by
/// [`CacheLayer`](super::CacheLayer).
///
/// - `GET` with a key: a fresh entry is answered from the cache; a miss
///   joins or starts one load per key (the inner call runs in its own task),
///   whose `200` response is buffered (up to the layer's body limit) and
///   stored under the response's [`CacheTags`]. Other statuses, responses
///   with `Set-Cookie` or a `Cache-Control` of `no-store`/`private`, and
///   bigger bodies are answered but not stored. A `5xx` or an error lets
///   stale-if-error serve the expired entry instead.
/// - `HEAD` with a key: answered from a cached `GET` entry (without the
///   body) or passed through; it never fills the cache.
/// - The client's `Cache-Control: no-store` bypasses the cache;
///   `no-cache` (or `max-age=0`, `Pragma: no-cache`) skips the cached entry
///   and refreshes it.
/// - Other methods pass through; after a `2xx` response carrying
///   [`InvalidateTags`], those tags are invalidated before the response is
///   returned.
pub struct CacheService<S, K, F> {
    inner: S,
    shared: Arc<Shared<K, F>>,
}

impl<S, K, F> CacheService<S, K, F> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, F>>) -> Self {
        CacheService { inner, shared }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, K, F> Clone for CacheService<S, K, F> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K, F> fmt::Debug for CacheService<S, K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .field("cache", &self.shared.cache)
            .finish()
    }
}

/// What the client asked of caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Directive {
    /// Use the cache.
    Normal,
    /// `no-cache`: do not answer from the cache; refresh the entry.
    Refresh,
    /// `no-store`: leave the cache alone.
    Bypass,
}

fn cache_control_has(headers: &HeaderMap, name: &http::HeaderName, wanted: &[&str]) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|directive| {
            let directive = directive.trim();
            wanted
                .iter()
                .any(|wanted| directive.eq_ignore_ascii_case(wanted))
        })
}

fn client_directive(headers: &HeaderMap) -> Directive {
    if !headers.contains_key(CACHE_CONTROL) && !headers.contains_key(PRAGMA) {
        return Directive::Normal;
    }
    if cache_control_has(headers, &CACHE_CONTROL, &["no-store"]) {
        Directive::Bypass
    } else if cache_control_has(headers, &CACHE_CONTROL, &["no-cache", "max-age=0"])
        || cache_control_has(headers, &PRAGMA, &["no-cache"])
    {
        Directive::Refresh
    } else {
        Directive::Normal
    }
}

/// May this response be stored (beyond its status)?
fn storable(headers: &HeaderMap) -> bool {
    !headers.contains_key(SET_COOKIE)
        && !cache_control_has(headers, &CACHE_CONTROL, &["no-store", "private"])
}

/// Takes the service that was polled ready, leaving a clone in its place.
fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

/// Turns the inner service's response into what the cache keeps.
async fn load_response<B>(
    response: Response<B>,
    max_body_bytes: usize,
) -> Result<Loaded<HttpEntry>, BoxError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let status = parts.status;
    let failure = status.is_server_error();
    match buffer(body, max_body_bytes).await? {
        Buffered::Complete(bytes) => {
            let store = if status == http::StatusCode::OK && storable(&parts.headers) {
                let tags = parts.extensions.remove::<CacheTags>().unwrap_or_default();
                Store::Fresh(tags.0)
            } else if failure {
                Store::Failed
            } else {
                Store::Skip
            };
            let cached = CachedResponse::new(status, parts.version, parts.headers, bytes);
            Ok(Loaded {
                value: HttpEntry::Buffered(Arc::new(cached)),
                store,
            })
        }
        Buffered::Uncacheable(body) => Ok(Loaded {
            value: HttpEntry::Streaming(Arc::new(Mutex::new(Some(Response::from_parts(
                parts, body,
            ))))),
            store: if failure { Store::Failed } else { Store::Skip },
        }),
    }
}

impl<S, K, F, ReqBody, ResBody> Service<Request<ReqBody>> for CacheService<S, K, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    ReqBody: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&Request<ReqBody>) -> Option<K> + Send + Sync + 'static,
{
    type Response = Response<super::CacheBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let method = request.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.mutation(request);
        }
        let directive = client_directive(request.headers());
        let key = match directive {
            Directive::Bypass => None,
            _ => (self.shared.key)(&request),
        };
        let Some(key) = key else {
            return ResponseFuture::passthrough(self.inner.call(request));
        };
        let shared = Arc::clone(&self.shared);
        let mut service = take_ready(&mut self.inner);
        if method == Method::HEAD {
            return ResponseFuture::cache(Box::pin(async move {
                if directive == Directive::Normal
                    && let Some(HttpEntry::Buffered(cached)) = shared.cache.get(&key).await
                {
                    return Ok(cached.to_response(true));
                }
                service
                    .call(request)
                    .await
                    .map(box_response)
                    .map_err(Into::into)
            }));
        }
        ResponseFuture::cache(Box::pin(async move {
            // The request goes to the load only if this caller starts it;
            // otherwise it stays here (see `HttpEntry::Streaming`).
            let slot = Arc::new(Mutex::new(Some((service, request))));
            let loader = {
                let slot = Arc::clone(&slot);
                let max_body_bytes = shared.max_body_bytes;
                move || async move {
                    let taken = slot.lock().take();
                    let (mut service, request) = taken.ok_or("cache: request already sent")?;
                    let response = service.call(request).await.map_err(Into::into)?;
                    load_response(response, max_body_bytes).await
                }
            };
            let force = directive == Directive::Refresh;
            let entry = shared
                .cache
                .fetch(key, LoadOptions::default(), force, loader)
                .await
                .map_err(BoxError::from)?;
            match entry {
                HttpEntry::Buffered(cached) => Ok(cached.to_response(false)),
                HttpEntry::Streaming(response) => {
                    let mine = slot.lock().take();
                    if let Some((mut service, request)) = mine {
                        // Another caller's load got a body too big to share:
                        // send this request on its own.
                        return service
                            .call(request)
                            .await
                            .map(box_response)
                            .map_err(Into::into);
                    }
                    let response = response.lock().take();
                    response.ok_or_else(|| "cache: streamed response already taken".into())
                }
            }
        }))
    }
}

impl<S, K, F> CacheService<S, K, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    F: Send + Sync + 'static,
{
    /// A non-`GET` request: pass through, then apply its `InvalidateTags`.
    fn mutation<ReqBody, ResBody>(&mut self, request: Request<ReqBody>) -> ResponseFuture<S::Future>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let future = self.inner.call(request);
        let shared = Arc::clone(&self.shared);
        ResponseFuture::cache(Box::pin(async move {
            let mut response = future.await.map_err(Into::into)?;
            if response.status().is_success()
                && let Some(InvalidateTags(tags)) =
                    response.extensions_mut().remove::<InvalidateTags>()
            {
                for tag in &tags {
                    shared.cache.invalidate_tag(tag).await;
                }
            }
            Ok(box_response(response))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn client_directives() {
        assert_eq!(client_directive(&headers(&[])), Directive::Normal);
        assert_eq!(
            client_directive(&headers(&[("cache-control", "max-age=60")])),
            Directive::Normal
        );
        assert_eq!(
            client_directive(&headers(&[("cache-control", "No-Cache")])),
            Directive::Refresh
        );
        assert_eq!(
            client_directive(&headers(&[("pragma", "no-cache")])),
            Directive::Refresh
        );
        assert_eq!(
            client_directive(&headers(&[("cache-control", "no-cache, no-store")])),
            Directive::Bypass
        );
        assert!(!storable(&headers(&[(
            "cache-control",
            "private, max-age=5"
        )])));
        assert!(!storable(&headers(&[("set-cookie", "a=b")])));
        assert!(storable(&headers(&[("cache-control", "max-age=5")])));
    }
}
