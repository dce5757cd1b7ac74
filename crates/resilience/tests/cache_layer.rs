//! The HTTP face of the cache: what a client of a cached route observes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use resilience::cache::{CacheBody, CacheConfig, CacheLayer, CacheTags, InvalidateTags};
use tower::{BoxError, Layer, Service, ServiceExt};

/// Origin: `/org/<id>` answers 200 tagged `org:<id>` with the tenant and a
/// call count in the body (after a second with `x-slow`); `/missing` 404; `/big` 200 with 100 bytes; `/down`
/// 503; any other method answers 204 and invalidates `org:<id>`.
fn origin(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    origin_with(calls, Arc::new(AtomicBool::new(false)))
}

/// Like [`origin`]; while `down` is set every GET answers 503.
fn origin_with(
    calls: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let calls = Arc::clone(&calls);
        let down = down.load(SeqCst);
        async move {
            let path = request.uri().path().to_string();
            let id = path.trim_start_matches("/org/").to_string();
            if request.method() != Method::GET && request.method() != Method::HEAD {
                let mut response = Response::new(Full::default());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
                    .extensions_mut()
                    .insert(InvalidateTags::new([format!("org:{id}")]));
                return Ok(response);
            }
            if request.headers().contains_key("x-slow") {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let n = calls.fetch_add(1, SeqCst) + 1;
            let tenant = request
                .headers()
                .get("x-tenant")
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default();
            let (status, body) = match path.as_str() {
                "/missing" => (StatusCode::NOT_FOUND, format!("no such thing #{n}")),
                "/big" => (StatusCode::OK, "x".repeat(100)),
                _ if down => (StatusCode::SERVICE_UNAVAILABLE, format!("down #{n}")),
                _ => (StatusCode::OK, format!("{tenant} org {id} #{n}")),
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            response
                .extensions_mut()
                .insert(CacheTags::new([format!("org:{id}")]));
            Ok(response)
        }
    })
}

/// Cache key: the tenant and the path.
type Key = (String, String);
type KeyFn = fn(&Request<Full<Bytes>>) -> Option<Key>;

fn tenant_and_path(request: &Request<Full<Bytes>>) -> Option<Key> {
    let tenant = request
        .headers()
        .get("x-tenant")?
        .to_str()
        .ok()?
        .to_string();
    Some((tenant, request.uri().path().to_string()))
}

fn layer(max_body_bytes: usize, config: CacheConfig) -> CacheLayer<Key, KeyFn> {
    CacheLayer::with_max_body_bytes("http", config, tenant_and_path as KeyFn, max_body_bytes)
        .unwrap()
}

fn config() -> CacheConfig {
    CacheConfig {
        ttl: Duration::from_secs(60),
        ..CacheConfig::default()
    }
}

fn request(
    method: Method,
    tenant: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("x-tenant", tenant);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::default()).unwrap()
}

async fn send<S>(service: &mut S, request: Request<Full<Bytes>>) -> (StatusCode, String)
where
    S: Service<Request<Full<Bytes>>, Response = Response<CacheBody>, Error = BoxError>,
{
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn get<S>(service: &mut S, tenant: &str, path: &str) -> (StatusCode, String)
where
    S: Service<Request<Full<Bytes>>, Response = Response<CacheBody>, Error = BoxError>,
{
    send(service, request(Method::GET, tenant, path, &[])).await
}

#[tokio::test(start_paused = true)]
async fn a_second_get_is_served_from_the_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer(1024, config());
    let mut service = layer.layer(origin(Arc::clone(&calls)));
    let first = get(&mut service, "acme", "/org/1").await;
    assert_eq!(first, (StatusCode::OK, "acme org 1 #1".to_string()));

    // A service built by another `layer()` call shares the cache.
    let mut other = layer.layer(origin(Arc::clone(&calls)));
    let response = other
        .ready()
        .await
        .unwrap()
        .call(request(Method::GET, "acme", "/org/1", &[]))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/plain");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "acme org 1 #1");
    assert_eq!(calls.load(SeqCst), 1);

    // HEAD is answered from the GET entry, without a body.
    let (status, body) = send(&mut service, request(Method::HEAD, "acme", "/org/1", &[])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(layer.handle().snapshot().hits, 2);
}

#[tokio::test(start_paused = true)]
async fn client_no_cache_refreshes_and_no_store_bypasses() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = layer(1024, config()).layer(origin(Arc::clone(&calls)));
    get(&mut service, "acme", "/org/1").await;

    let refreshed = send(
        &mut service,
        request(
            Method::GET,
            "acme",
            "/org/1",
            &[("cache-control", "no-cache")],
        ),
    )
    .await;
    assert_eq!(refreshed.1, "acme org 1 #2");
    assert_eq!(
        get(&mut service, "acme", "/org/1").await.1,
        "acme org 1 #2",
        "the refresh was stored"
    );

    let bypassed = send(
        &mut service,
        request(
            Method::GET,
            "acme",
            "/org/1",
            &[("cache-control", "no-store")],
        ),
    )
    .await;
    assert_eq!(bypassed.1, "acme org 1 #3");
    assert_eq!(
        get(&mut service, "acme", "/org/1").await.1,
        "acme org 1 #2",
        "no-store left the cache alone"
    );
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn only_200_responses_within_the_size_limit_are_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = layer(64, config()).layer(origin(Arc::clone(&calls)));

    assert_eq!(
        get(&mut service, "acme", "/missing").await,
        (StatusCode::NOT_FOUND, "no such thing #1".into())
    );
    assert_eq!(
        get(&mut service, "acme", "/missing").await,
        (StatusCode::NOT_FOUND, "no such thing #2".into())
    );

    let (status, body) = get(&mut service, "acme", "/big").await;
    assert_eq!(
        (status, body.len()),
        (StatusCode::OK, 100),
        "a big body passes through whole"
    );
    get(&mut service, "acme", "/big").await;
    assert_eq!(calls.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn tenants_do_not_see_each_others_entries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = layer(1024, config()).layer(origin(Arc::clone(&calls)));
    assert_eq!(get(&mut service, "acme", "/org/1").await.1, "acme org 1 #1");
    assert_eq!(
        get(&mut service, "globex", "/org/1").await.1,
        "globex org 1 #2"
    );
    assert_eq!(get(&mut service, "acme", "/org/1").await.1, "acme org 1 #1");
    assert_eq!(
        get(&mut service, "globex", "/org/1").await.1,
        "globex org 1 #2"
    );
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_mutation_with_invalidate_tags_evicts_what_it_touched() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = layer(1024, config()).layer(origin(Arc::clone(&calls)));
    get(&mut service, "acme", "/org/1").await;
    get(&mut service, "globex", "/org/1").await;
    get(&mut service, "acme", "/org/2").await;

    let (status, _) = send(&mut service, request(Method::PUT, "acme", "/org/1", &[])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    assert_eq!(get(&mut service, "acme", "/org/1").await.1, "acme org 1 #4");
    assert_eq!(
        get(&mut service, "globex", "/org/1").await.1,
        "globex org 1 #5"
    );
    assert_eq!(
        get(&mut service, "acme", "/org/2").await.1,
        "acme org 2 #3",
        "other tags kept"
    );
    assert_eq!(calls.load(SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_answered_with_the_stale_entry_within_the_window() {
    let calls = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(AtomicBool::new(false));
    let config = CacheConfig {
        stale_if_error: Some(Duration::from_secs(60)),
        ..config()
    };
    let layer = layer(1024, config);
    let mut service = layer.layer(origin_with(Arc::clone(&calls), Arc::clone(&down)));
    assert_eq!(get(&mut service, "acme", "/org/1").await.1, "acme org 1 #1");

    down.store(true, SeqCst);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        get(&mut service, "acme", "/org/1").await,
        (StatusCode::OK, "acme org 1 #1".to_string()),
        "expired, but within stale_if_error"
    );
    assert_eq!(layer.handle().snapshot().stale, 1);

    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        get(&mut service, "acme", "/org/1").await,
        (StatusCode::SERVICE_UNAVAILABLE, "down #3".to_string())
    );
    assert_eq!(layer.handle().snapshot().loads_failure, 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_gets_of_one_key_make_one_inner_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer(1024, config());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let mut service = layer.layer(origin(Arc::clone(&calls)));
            let request = request(Method::GET, "acme", "/org/9", &[("x-slow", "1")]);
            tokio::spawn(async move { send(&mut service, request).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().1, "acme org 9 #1");
    }
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_gets_of_a_body_too_big_to_share_each_get_it_whole() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer(16, config());
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let mut service = layer.layer(origin(Arc::clone(&calls)));
            let request = request(Method::GET, "acme", "/big", &[("x-slow", "1")]);
            tokio::spawn(async move { send(&mut service, request).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), (StatusCode::OK, "x".repeat(100)));
    }
    // One shared load, whose body goes to its own caller; the others re-send.
    assert_eq!(calls.load(SeqCst), 5);
    assert_eq!(layer.handle().snapshot().entries, 0);
}
