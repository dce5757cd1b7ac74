//! `hello`: a bare axum 0.8 hello world, the "bare axum hello" baseline of
//! `tests/load/users.sh` (and of FIELD-NOTES' reference figures).
//!
//! `GET /` answers `200` with `Hello, World!`; nothing else runs: no
//! middleware, no state, no logging. The address comes from the first
//! argument, else `HELLO_ADDR`, else `127.0.0.1:3000`:
//!
//! ```sh
//! cargo run --release -p boardroom-load --bin hello -- 127.0.0.1:3000
//! ```
//!
//! Like the `boardroom` binary it runs tokio's multi-threaded runtime with one
//! worker per CPU it may run on, so pinning both with `taskset` to the same
//! cores compares like with like.

use anyhow::Context;
use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HELLO_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let app = Router::new().route("/", get(|| async { "Hello, World!" }));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("hello listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
