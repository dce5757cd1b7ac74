//! A tagged, single-flight cache on moka, in two faces: a typed [`Cache`]
//! for domain code and an HTTP [`CacheLayer`] for GET responses.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::time::Duration;
//! use resilience::cache::{Cache, CacheConfig};
//!
//! let config = CacheConfig { ttl: Duration::from_secs(30), ..CacheConfig::default() };
//! let users: Cache<u64, String> = Cache::new("users", config).unwrap();
//!
//! // A miss runs the loader once and stores its value under the tags.
//! let name = users
//!     .get_or_load(7, &["org:1"], || async { Ok::<_, std::io::Error>("Ada".to_string()) })
//!     .await
//!     .unwrap();
//! assert_eq!(name, "Ada");
//! assert_eq!(users.get(&7).await.as_deref(), Some("Ada"));
//!
//! // A change to organisation 1 drops everything tagged with it.
//! assert_eq!(users.invalidate_tag("org:1").await, 1);
//! assert_eq!(users.get(&7).await, None);
//! # }
//! ```
//!
//! The HTTP face caches `GET` responses under a key the caller derives from
//! the request (always including the tenant), tagged by the handler:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use resilience::cache::{CacheConfig, CacheLayer, CacheTags};
//! use tower::{Layer, ServiceExt};
//!
//! let tenant_and_path = |request: &Request<Full<Bytes>>| {
//!     let tenant = request.headers().get("x-tenant")?.to_str().ok()?.to_owned();
//!     Some((tenant, request.uri().path().to_owned()))
//! };
//! let layer = CacheLayer::new("http", CacheConfig::default(), tenant_and_path).unwrap();
//! let handler = tower::service_fn(|_request: Request<Full<Bytes>>| async {
//!     let mut response = Response::new(Full::new(Bytes::from_static(b"board 1")));
//!     response.extensions_mut().insert(CacheTags::new(["board:1"]));
//!     Ok::<_, std::convert::Infallible>(response)
//! });
//! let service = layer.layer(handler);
//!
//! let request = || Request::get("/boards/1").header("x-tenant", "acme").body(Full::default()).unwrap();
//! service.clone().oneshot(request()).await.unwrap();
//! service.clone().oneshot(request()).await.unwrap();
//! assert_eq!(layer.handle().snapshot().hits, 1);
//! assert_eq!(layer.handle().invalidate_tag("board:1").await, 1);
//! # }
//! ```
//!
//! The typed cache (see [`Cache::get_or_load`], and [`Cache::get_or_load_with`]
//! for per-load [`LoadOptions`]):
//! - **Tags.** Each entry carries tags; [`Cache::invalidate_tag`] costs
//!   O(entries with the tag). The index is cleaned by moka's eviction
//!   listener, so it never outgrows the cache.
//! - **Races.** A load records its tags' generations when it starts; if one
//!   of them (or the key, or the whole cache) is invalidated before it ends,
//!   its value goes to its callers but is not stored.
//! - **Single flight.** Concurrent misses on a key share one load, run in its
//!   own task: a caller going away does not fail the others. Waiters sleep on
//!   a watch channel. A failure goes to every waiter and is not cached.
//! - **Refresh-ahead** past `refresh_threshold × ttl` (one refresh per entry),
//!   **stale-if-error** within `ttl + stale_if_error`, **warm-up** loads
//!   registered with [`Cache::add_warmup`] and run by [`Cache::warm`].
//! - **Metrics**: `resilience_cache_requests_total{name,result}`,
//!   `resilience_cache_loads_total{name,outcome}`,
//!   `resilience_cache_evictions_total{name,cause}`,
//!   `resilience_cache_refreshes_total{name}`, `resilience_cache_entries{name}`;
//!   [`CacheHandle`] gives the registry a snapshot and operator actions.
//!
//! Freshness is judged on the crate's hot-path clock (the time-stamp
//! counter; tokio's clock with the `test-util` feature, so it follows a
//! paused test clock — see the crate docs), while moka's own expiry (at
//! `ttl + stale_if_error`, on the wall clock) only reclaims memory. Keys are
//! hashed with foldhash (seeded per cache), not std's SipHash: a hit hashes
//! its key once, and SipHash was a tenth of a hit.

mod body;
mod config;
mod error;
mod front;
mod future;
mod handle;
mod layer;
mod service;
mod stats;
mod tags;
mod typed;

pub use crate::ConfigError;
pub use body::{CacheBody, CacheTags, InvalidateTags};
pub use config::{CacheConfig, DEFAULT_MAX_ENTRIES};
pub use error::LoadError;
pub use future::ResponseFuture;
pub use handle::{CacheHandle, CacheSnapshot, EvictionCounts, WarmResult};
pub use layer::{CacheLayer, DEFAULT_MAX_BODY_BYTES};
pub use service::CacheService;
pub use tags::Tag;
pub use typed::{Cache, CacheBuilder, LoadOptions};

/// HELP texts for the cache's Prometheus metrics (called by
/// `crate::metrics::describe_all`).
#[allow(
    dead_code,
    reason = "called by crate::metrics::describe_all (metrics module)"
)]
pub(crate) fn describe() {
    stats::describe();
}
