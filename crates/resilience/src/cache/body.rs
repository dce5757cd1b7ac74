//! What the HTTP face stores and hands out: a buffered response, the tag
//! extensions handlers use, and the boxed body type of every response.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};
use parking_lot::Mutex;

use super::tags::Tag;
use crate::BoxError;

/// The body of every response from [`CacheService`](super::CacheService).
///
/// A boxed body, because one service answers with two kinds: bytes from the
/// cache and the inner service's own body (passed through, or re-streamed
/// after a look at its first bytes). `UnsyncBoxBody` rather than `BoxBody`:
/// bodies need not be `Sync` (axum's own body is not), and axum and hyper
/// accept it as is.
pub type CacheBody = UnsyncBoxBody<Bytes, BoxError>;

/// Response extension a handler sets to tag the response it returns; the
/// cache stores the response under these tags (on top of nothing else: the
/// HTTP face has no tags of its own).
///
/// ```
/// use resilience::cache::CacheTags;
///
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(CacheTags::new(["org:1", "users"]));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheTags(pub Vec<Tag>);

impl CacheTags {
    /// Tags from anything string-like.
    pub fn new<T: Into<Tag>>(tags: impl IntoIterator<Item = T>) -> Self {
        CacheTags(tags.into_iter().map(Into::into).collect())
    }
}

/// Response extension a mutation handler sets to name the tags its change
/// touched; after a successful (2xx) response the cache layer invalidates them
/// before answering (`invalidate_on_mutation`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvalidateTags(pub Vec<Tag>);

impl InvalidateTags {
    /// Tags from anything string-like.
    pub fn new<T: Into<Tag>>(tags: impl IntoIterator<Item = T>) -> Self {
        InvalidateTags(tags.into_iter().map(Into::into).collect())
    }
}

/// A response buffered whole: what the cache stores.
#[derive(Debug)]
pub(crate) struct CachedResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl CachedResponse {
    pub(crate) fn new(
        status: StatusCode,
        version: Version,
        headers: HeaderMap,
        body: Bytes,
    ) -> Self {
        CachedResponse {
            status,
            version,
            headers,
            body,
        }
    }

    /// A fresh response from the stored one; `head` leaves the body out.
    pub(crate) fn to_response(&self, head: bool) -> Response<CacheBody> {
        let body = if head {
            Empty::new().map_err(|never| match never {}).boxed_unsync()
        } else {
            Full::new(self.body.clone())
                .map_err(|never| match never {})
                .boxed_unsync()
        };
        let mut response = Response::new(body);
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        response
    }

    /// Approximate bytes held, for a `max_bytes` bound.
    pub(crate) fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        u32::try_from(self.body.len() + headers + 64).unwrap_or(u32::MAX)
    }
}

/// The value type of the HTTP face's cache.
#[derive(Clone)]
pub(crate) enum HttpEntry {
    /// A buffered response (stored when it is a cacheable 200).
    Buffered(Arc<CachedResponse>),
    /// A response too big to buffer, never stored. It can be streamed to one
    /// caller only: the one whose request made it; the others re-send theirs.
    Streaming(Arc<Mutex<Option<Response<CacheBody>>>>),
}

impl HttpEntry {
    pub(crate) fn weight(&self) -> u32 {
        match self {
            HttpEntry::Buffered(response) => response.weight(),
            HttpEntry::Streaming(_) => 0,
        }
    }
}

/// A body read up to a limit.
pub(crate) enum Buffered {
    /// The whole body, within the limit, without trailers.
    Complete(Bytes),
    /// Too big (or with trailers): the same body, re-streamed from the start.
    Uncacheable(CacheBody),
}

/// Reads `body` whole if it fits in `limit` bytes; otherwise hands back an
/// equivalent body (what was read, then the rest) without buffering more.
pub(crate) async fn buffer<B>(body: B, limit: usize) -> Result<Buffered, BoxError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body.map_err(Into::<BoxError>::into));
    if body.size_hint().lower() > limit as u64 {
        return Ok(Buffered::Uncacheable(body.boxed_unsync()));
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let frame = match frame.into_data() {
            Ok(data) => {
                total += data.len();
                if total <= limit {
                    chunks.push(data);
                    continue;
                }
                Frame::data(data)
            }
            Err(trailers) => trailers,
        };
        let read = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(Frame::data)
                .chain(std::iter::once(frame))
                .map(Ok::<_, BoxError>),
        );
        let rest = BodyStream::new(body);
        return Ok(Buffered::Uncacheable(
            StreamBody::new(read.chain(rest)).boxed_unsync(),
        ));
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(total);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    };
    Ok(Buffered::Complete(bytes))
}
