//! The PostgreSQL pool: created at start (with the database itself if missing),
//! retried while PostgreSQL is unreachable, migrated.
//!
//! At start, an unreachable server is retried with backoff for
//! `database.connect_timeout`; then [`connect`] fails with a message that says
//! what to do. While running, requests that cannot get a connection within
//! `database.acquire_timeout` answer `503` (see [`crate::error`]) and the pool
//! reconnects by itself when the server returns.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let settings = boardroom::config::Settings::defaults();
//! let pool = boardroom::database::connect(&settings.database).await?;
//! boardroom::database::migrate(&pool).await?;
//! # Ok(()) }
//! ```

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use crate::{
    config::{DatabaseSettings, redact_url},
    error::is_unavailable,
};

/// The migrations in `migrations/`, compiled into the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Creates the database if missing and opens the pool, retrying while the
/// server is unreachable for at most `settings.connect_timeout`.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(&settings.url)
        .with_context(|| format!("database.url {:?} is not valid", redact_url(&settings.url)))?;
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        match try_connect(settings, &options).await {
            Ok(pool) => return Ok(pool),
            Err(error) if is_unavailable(&error) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    error = %error,
                    retry_in = ?delay,
                    url = %redact_url(&settings.url),
                    "PostgreSQL is unreachable; retrying"
                );
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(delay.min(remaining)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) if is_unavailable(&error) => {
                anyhow::bail!(
                    "could not reach PostgreSQL at {} within {} ({error}). Start PostgreSQL, \
                     or point DATABASE_URL (database.url) at a running server, or raise \
                     database.connect_timeout to wait longer",
                    redact_url(&settings.url),
                    humantime::format_duration(settings.connect_timeout),
                );
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "could not open the database at {}; check database.url (DATABASE_URL), \
                     the user and its password",
                    redact_url(&settings.url)
                )));
            }
        }
    }
}

async fn try_connect(
    settings: &DatabaseSettings,
    options: &PgConnectOptions,
) -> Result<PgPool, sqlx::Error> {
    ensure_database(options).await?;
    // The planner's default random_page_cost (4) models spinning disks: with
    // it, a search joining one organization's 1,000 memberships to `users`
    // seq-scans all 100,000 users (82–102 ms) instead of 1,000 key probes
    // (24–43 ms, measured by tests/load/users.sh's EXPLAIN ANALYZE). 1.1 is
    // the usual value for SSDs and a working set in memory. It is set per
    // session (a startup option), for this service's connections only.
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(options.clone().options([("random_page_cost", "1.1")]))
        .await
}

/// Creates the target database through the `postgres` maintenance database
/// when it does not exist. Two processes racing to create it is fine.
pub async fn ensure_database(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    // Connecting to the target first is the common case and needs no privilege.
    match PgConnection::connect_with(options).await {
        Ok(connection) => {
            let _ = connection.close().await;
            return Ok(());
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("3D000") => {}
        Err(error) => return Err(error),
    }
    let mut maintenance = PgConnection::connect_with(&options.clone().database("postgres")).await?;
    let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let created = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut maintenance)
        .await;
    let _ = maintenance.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // 42P04 duplicate_database, 23505 unique_violation: another process won the race.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("42P04") | Some("23505")) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("running database migrations failed")?;
    Ok(())
}
