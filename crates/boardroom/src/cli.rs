//! The command line: `boardroom [--config FILE] [serve|migrate|token]`.
//!
//! `serve` (the default) runs the service; `migrate` applies migrations and
//! exits; `token --user <uuid> [--service] [--ttl 1h]` prints a signed bearer
//! token alone on stdout. A bad configuration prints one line naming the key
//! and exits with status 2; a failure to start exits with status 1.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::{
    auth::JwtKeys,
    config::{ConfigError, Settings},
    database,
    startup::Application,
    telemetry,
};

/// Boardroom: the board-governance REST service.
#[derive(Debug, Parser)]
#[command(name = "boardroom", version, about, long_about = None)]
pub struct Cli {
    /// A TOML file overriding the built-in defaults (environment variables
    /// BOARDROOM__SECTION__KEY and DATABASE_URL override both).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service (the default): create the database if missing,
    /// migrate, listen on server.addr until SIGTERM/SIGINT.
    Serve,
    /// Create the database if missing, apply pending migrations, exit.
    Migrate,
    /// Print a signed bearer token for local use (the token alone on stdout).
    Token(TokenArgs),
}

/// `boardroom token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id to put in `sub`.
    #[arg(long, value_name = "UUID")]
    pub user: Uuid,
    /// Mint an operator token (`"role": "service_role"`), allowed everything.
    #[arg(long)]
    pub service: bool,
    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token(args) => token(&settings, &args),
        Command::Serve => run_async(settings, serve),
        Command::Migrate => run_async(settings, migrate),
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("boardroom: {error}");
    ExitCode::from(2)
}

fn token(settings: &Settings, args: &TokenArgs) -> ExitCode {
    if settings.auth.uses_dev_secret() {
        eprintln!(
            "boardroom: warning: signing with the development auth.jwt_secret; \
             set BOARDROOM__AUTH__JWT_SECRET for anything shared"
        );
    }
    let minted = JwtKeys::new(&settings.auth.jwt_secret)
        .and_then(|keys| keys.mint(args.user, args.service, args.ttl));
    match minted {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("boardroom: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_async<F, Fut>(settings: Settings, command: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("boardroom: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "boardroom stopped with an error");
            eprintln!("boardroom: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let application = Application::build(settings).await?;
    application.run_until_stopped(shutdown_signal()).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let pool = database::connect(&settings.database).await?;
    database::migrate(&pool).await?;
    pool.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
