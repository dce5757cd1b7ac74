//! Test-only routes, mounted when `debug.routes = true`: `GET /_debug/panic`
//! panics inside a handler (to prove a panic becomes a `500` envelope and the
//! process lives on) and `GET /_debug/sleep?ms=N` answers after `N`
//! milliseconds (to prove graceful shutdown lets in-flight requests finish).
//! They are not part of the OpenAPI document.

use std::time::Duration;

use axum::{Json, Router, routing::get};
use serde::Deserialize;

use crate::{envelope::Envelope, extract::Query, state::AppState};

/// The debug routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/_debug/panic", get(panic))
        .route("/_debug/sleep", get(sleep))
}

async fn panic() -> &'static str {
    panic!("deliberate panic from /_debug/panic")
}

#[derive(Debug, Deserialize)]
struct SleepParams {
    ms: u64,
}

async fn sleep(Query(params): Query<SleepParams>) -> Json<Envelope<u64>> {
    tokio::time::sleep(Duration::from_millis(params.ms.min(600_000))).await;
    Json(Envelope::new(params.ms))
}
