//! Building and running the application, apart from `main` so tests can start
//! it on port 0.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use boardroom::{config::Settings, startup::Application};
//! let mut settings = Settings::defaults();
//! settings.server.addr = "127.0.0.1:0".parse()?;
//! let app = Application::build(settings).await?;
//! println!("listening on {}", app.local_addr());
//! app.run_until_stopped(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Extension, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::{
    auth::JwtKeys,
    config::Settings,
    database,
    jobs::{self, Handlers, JobEvents},
    middleware, notifications, openapi, ops, organizations,
    stacks::{Database, DomainLayer},
    state::{AppState, Shared},
    users::{
        self,
        activity::{ActivityBuffer, ActivityWriter},
        cache::UserCaches,
    },
};
use resilience::registry::Registry;

/// A built application: database ready, listener bound, router assembled.
pub struct Application {
    listener: TcpListener,
    router: Router,
    activity_writer: ActivityWriter,
    state: AppState,
    local_addr: SocketAddr,
}

impl Application {
    /// Connects to PostgreSQL (creating the database, retrying while it is
    /// unreachable), runs migrations, binds `server.addr` and builds the router.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.auth.uses_dev_secret() {
            tracing::warn!(
                "auth.jwt_secret is the development default; set BOARDROOM__AUTH__JWT_SECRET \
                 before exposing this service"
            );
        }
        let pool = database::connect(&settings.database).await?;
        database::migrate(&pool).await?;
        let listener = TcpListener::bind(settings.server.addr)
            .await
            .with_context(|| format!("cannot listen on server.addr {}", settings.server.addr))?;
        let local_addr = listener.local_addr()?;
        // The recorder first: layers built before it would record nowhere
        // (the `database` breaker's series were missing from /metrics).
        let metrics = ops::metrics::recorder();
        let registry = Registry::new();
        let db = Database::new(pool, &settings, &registry)?;
        let ops = ops::OpsState::new(&settings, &registry);
        let notifications = notifications::NotificationsState::new(&settings, &registry)?;
        let shared_cache = crate::shared_cache::SharedCache::new(&settings, &db, &registry)?;
        let users = UserCaches::new(settings.service("users").cache, &registry, &shared_cache)?;
        let (activity, activity_writer) =
            ActivityBuffer::start(db.pool.clone(), &settings.activity);
        let assets = crate::assets::AssetServices::new(&settings, &registry)?;
        let state = AppState::new(Shared {
            assets,
            ops,
            db,
            registry,
            users,
            activity,
            jwt: Arc::new(JwtKeys::new(&settings.auth.jwt_secret).context("auth.jwt_secret")?),
            settings: Arc::new(settings),
            metrics,
            jobs: JobEvents::new(),
            notifications,
            started_at: Instant::now(),
            shared_cache,
        });
        let router = app(state.clone())?;
        Ok(Self {
            listener,
            router,
            activity_writer,
            state,
            local_addr,
        })
    }

    /// The bound address (the real port when `server.addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The database pool.
    pub fn pool(&self) -> &PgPool {
        &self.state.db.pool
    }

    /// The job handlers of every domain, by kind.
    pub fn job_handlers() -> Handlers {
        Handlers::new()
            .with(users::bulk::BulkUpdateHandler)
            .with(crate::assets::bulk::BulkUploadHandler)
            .with(notifications::bulk::BulkSendHandler)
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight
    /// requests finish within `server.shutdown_grace`, and closes the pool.
    /// The job workers and their `LISTEN` connection run alongside; on
    /// shutdown each worker finishes its current batch and gives its job back.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let grace = self.state.settings.server.shutdown_grace;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // Owned by this future: dropping it (an aborted test server) ends them too.
        let mut background = tokio::task::JoinSet::new();
        background.spawn(
            self.state
                .jobs
                .clone()
                .listen(self.state.settings.database.url.clone(), stop_rx.clone()),
        );
        // Other instances' cache invalidations, applied to this one's L1.
        background.spawn(
            self.state
                .shared_cache
                .clone()
                .listen(self.state.settings.database.url.clone(), stop_rx.clone()),
        );
        jobs::worker::spawn(
            &self.state,
            &Self::job_handlers(),
            &stop_rx,
            &mut background,
        );
        crate::assets::processing::spawn(&self.state, &stop_rx, &mut background);
        notifications::start(&self.state, &stop_rx, &mut background);
        let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
        let ops_state = self.state.ops.clone();
        let signal = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
            // Open dashboard streams end now, so they do not hold up the drain.
            ops_state.begin_shutdown();
            tracing::info!(
                grace = %humantime::format_duration(grace),
                "shutting down: no new connections; waiting for in-flight requests"
            );
            let _ = signalled_tx.send(());
        };
        tracing::info!(addr = %self.local_addr, "listening");
        let serve = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        let deadline = async move {
            if signalled_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        };
        // Budget evaluation, webhook deliveries and readiness gauges run
        // beside the server and stop with it.
        let ops_background = ops::background(self.state.clone());
        let result = tokio::select! {
            result = serve.into_future() => result.context("the HTTP server failed"),
            () = ops_background => Ok(()),
            () = deadline => {
                tracing::warn!("shutdown grace period elapsed; dropping unfinished requests");
                Ok(())
            }
        };
        // Workers finish the batch they are in (one transaction); bounded by the grace.
        let drained = tokio::time::timeout(grace.max(Duration::from_secs(1)), async {
            while background.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("job workers did not stop in time; abandoning their batches");
            background.abort_all();
        }
        // Requests are done: write the buffered activity, then close the pool.
        self.activity_writer
            .shutdown(grace.max(Duration::from_secs(5)))
            .await;
        self.state.db.pool.close().await;
        tracing::info!("stopped");
        result
    }
}

/// The whole HTTP application for `state`: every route, the OpenAPI document,
/// `/docs`, the fallback and the middleware. Each domain router runs inside
/// its own resilience stack (`[services.<domain>]`), registered in
/// `state.registry`; that fails only on a duplicate name (building twice
/// into one registry).
pub fn app(state: AppState) -> anyhow::Result<Router> {
    let settings = &state.settings;
    let registry = &state.registry;
    let (routes, mut api) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .merge(organizations::router().layer(DomainLayer::new(
            "organizations",
            settings,
            registry,
        )?))
        .merge(users::router().layer(DomainLayer::new("users", settings, registry)?))
        .merge(users::search_router().layer(DomainLayer::new("users_search", settings, registry)?))
        .merge(jobs::router().layer(DomainLayer::new("jobs", settings, registry)?))
        .merge(crate::assets::router().layer(DomainLayer::new("assets", settings, registry)?))
        .merge(crate::assets::files_router().layer(DomainLayer::new("files", settings, registry)?))
        .merge(notifications::router().layer(DomainLayer::new(
            "notifications",
            settings,
            registry,
        )?))
        .routes(routes!(openapi::openapi_json))
        .split_for_parts();
    openapi::finish(&mut api);
    let mut router = routes
        .layer(Extension(openapi::Document::new(&api)))
        .merge(SwaggerUi::new("/docs").config(Config::from("/openapi.json")));
    if state.settings.debug.routes {
        router = router
            .merge(ops::debug::router().layer(DomainLayer::new("debug", settings, registry)?));
    }
    let router = router.fallback(middleware::fallback);
    Ok(middleware::apply(router, &state.settings).with_state(state))
}
