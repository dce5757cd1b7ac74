//! The `boardroom` binary's command line: configuration errors, `token`,
//! `migrate` and `--help`. Runs the real binary (`CARGO_BIN_EXE_boardroom`),
//! with a clean environment so the machine's variables do not leak in.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use boardroom::auth::JwtKeys;
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_boardroom");

fn boardroom(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the binary runs")
}

/// Asserts a one-line configuration error naming `key` and containing `allowed`.
fn assert_config_error(env: &[(&str, &str)], key: &str, allowed: &str) {
    let output = boardroom(
        &["token", "--user", "6f1c2b8e-0d7a-4a57-9a53-2f1d8b0c9e11"],
        env,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(key), "names {key}: {stderr}");
    assert!(
        stderr.contains(allowed),
        "says what is allowed ({allowed}): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(!stderr.contains("backtrace"), "no backtrace: {stderr}");
}

#[test]
fn bad_values_name_the_key_and_what_is_allowed() {
    assert_config_error(
        &[("BOARDROOM__DATABASE__MAX_CONNECTIONS", "0")],
        "database.max_connections",
        "between 1 and 1000",
    );
    assert_config_error(
        &[("BOARDROOM__DATABASE__MAX_CONNECTIONS", "lots")],
        "database.max_connections",
        "BOARDROOM__DATABASE__MAX_CONNECTIONS",
    );
    assert_config_error(
        &[("BOARDROOM__SERVER__SHUTDOWN_GRACE", "soon")],
        "server.shutdown_grace",
        "a duration like",
    );
    assert_config_error(&[("BOARDROOM__LOG__FORMAT", "xml")], "log.format", "json");
    assert_config_error(
        &[("BOARDROOM__SERVER__ADDR", "localhost")],
        "server.addr",
        "socket address",
    );
    assert_config_error(
        &[("BOARDROOM__SERVER__BODY_LIMIT", "huge")],
        "server.body_limit",
        "1MiB",
    );
    assert_config_error(
        &[("BOARDROOM__AUTH__JWT_SECRET", "short")],
        "auth.jwt_secret",
        "at least 16 characters",
    );
    assert_config_error(
        &[("DATABASE_URL", "mysql://nope")],
        "database.url",
        "postgres://",
    );
    assert_config_error(
        &[("BOARDROOM__SERVER__PORTT", "8080")],
        "portt",
        "one of `addr`",
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let output = boardroom(&["--config", "/nonexistent/boardroom.toml", "migrate"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/boardroom.toml"), "{stderr}");
}

#[test]
fn token_prints_only_a_token_signed_with_the_configured_secret() {
    let dir = std::env::temp_dir().join(format!("boardroom-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.toml");
    std::fs::write(
        &file,
        "[auth]\njwt_secret = \"secret-from-the-config-file\"\n",
    )
    .unwrap();
    let user = uuid::Uuid::new_v4();

    let output = boardroom(
        &[
            "token",
            "--user",
            &user.to_string(),
            "--config",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let token = stdout.trim();
    let principal = JwtKeys::new("secret-from-the-config-file")
        .unwrap()
        .verify(token)
        .unwrap();
    assert_eq!(principal.user_id, user);
    assert!(!principal.operator);

    // The environment overrides the file; --service makes an operator.
    let output = boardroom(
        &[
            "--config",
            file.to_str().unwrap(),
            "token",
            "--user",
            &user.to_string(),
            "--service",
            "--ttl",
            "5m",
        ],
        &[("BOARDROOM__AUTH__JWT_SECRET", "secret-from-the-environment")],
    );
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    let principal = JwtKeys::new("secret-from-the-environment")
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert!(principal.operator);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn token_rejects_a_bad_user_id() {
    let output = boardroom(&["token", "--user", "bob"], &[]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--user"));
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["token", "--help"],
    ] {
        let output = boardroom(&args, &[]);
        assert!(output.status.success(), "{args:?}");
        let text = String::from_utf8(output.stdout).unwrap();
        assert!(text.contains("Usage"), "{args:?}: {text}");
        assert!(text.contains("--config"), "{args:?}: {text}");
    }
    let text = String::from_utf8(boardroom(&["token", "--help"], &[]).stdout).unwrap();
    for flag in ["--user", "--service", "--ttl"] {
        assert!(text.contains(flag), "{text}");
    }
}

#[tokio::test]
async fn migrate_creates_the_database_and_applies_migrations() {
    let server = std::env::var("BOARDROOM_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = format!("boardroom_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{server}/{name}");
    let output = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            boardroom(
                &["migrate"],
                &[("DATABASE_URL", &url), ("BOARDROOM__LOG__LEVEL", "warn")],
            )
        }
    })
    .await
    .unwrap();
    let result = async {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut connection = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' ORDER BY table_name",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap();
        connection.close().await.unwrap();
        assert!(tables.contains(&"users".to_owned()), "{tables:?}");
        assert!(tables.contains(&"organizations".to_owned()), "{tables:?}");
        assert!(tables.contains(&"memberships".to_owned()), "{tables:?}");
    }
    .await;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    result
}
