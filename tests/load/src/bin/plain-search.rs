//! `plain-search`: the "plain axum + sqlx handler" baseline of
//! `tests/load/users.sh` for `GET /v1/users`.
//!
//! It runs exactly the search of the service — the same
//! [`boardroom::users::search::Search`] built from the same
//! [`SearchParams`], on a pool opened by the same
//! [`boardroom::database::connect`] from the same settings (so
//! `DATABASE_URL` and `BOARDROOM__DATABASE__MAX_CONNECTIONS` mean the same
//! here) — and serializes the result as JSON. Nothing else: no auth (the
//! viewer's user id comes from the `x-viewer-id` header instead of a token),
//! no resilience stack, no database breaker, no middleware, no envelope. The
//! difference between it and the service on the same query and database is
//! therefore the cost of the service's layers, not of the SQL.
//!
//! The address comes from the first argument, else `PLAIN_SEARCH_ADDR`, else
//! `127.0.0.1:3001`:
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/boardroom \
//!   cargo run --release -p boardroom-load --bin plain-search -- 127.0.0.1:3001
//! curl -H 'x-viewer-id: <user uuid>' \
//!   '127.0.0.1:3001/v1/users?organizationId=<uuid>&role=member&isActive=true'
//! ```
//!
//! Without `x-viewer-id` it searches as an operator (every user visible).

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use boardroom::{
    config::Settings,
    users::search::{Search, SearchParams},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The header naming the user the search runs as.
const VIEWER_HEADER: &str = "x-viewer-id";

async fn search(
    State(pool): State<PgPool>,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Response {
    let viewer = match headers.get(VIEWER_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(text)) => match text.parse::<Uuid>() {
            Ok(id) => Some(id),
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "x-viewer-id is not a UUID").into_response();
            }
        },
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "x-viewer-id is not text").into_response();
        }
    };
    let result = match Search::new(params, viewer) {
        Ok(search) => search.run(&pool).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(list) => Json(list).into_response(),
        Err(error) => error.into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PLAIN_SEARCH_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3001".to_owned());
    let settings = Settings::load(None).context("boardroom settings (environment)")?;
    let pool = boardroom::database::connect(&settings.database).await?;
    let app = Router::new()
        .route("/v1/users", get(search))
        .with_state(pool);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!(
        "plain-search listening on {} (pool of {} connections)",
        listener.local_addr()?,
        settings.database.max_connections
    );
    axum::serve(listener, app).await?;
    Ok(())
}
