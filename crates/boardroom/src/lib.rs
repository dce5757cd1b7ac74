//! Boardroom: the board-governance REST service (axum on PostgreSQL).
//!
//! Layout: one folder per domain ([`organizations`], [`users`],
//! [`assets`], [`notifications`]), each owning
//! its `router()`, handlers, model and repository; [`auth`] (bearer tokens,
//! roles), [`ops`] (health, metrics, the admin API, the dashboard and budget
//! alerts), [`jobs`] (durable bulk jobs shared by the domains), and the
//! plumbing: [`config`],
//! [`error`] (the one place errors become HTTP), [`envelope`], [`extract`],
//! [`middleware`], [`openapi`], [`state`], [`database`], [`stacks`] (the
//! resilience stack of each domain and dependency), [`telemetry`],
//! [`startup`] (building and running the app) and [`cli`] (the binary).
//!
//! ```
//! let settings = boardroom::config::Settings::defaults();
//! assert_eq!(settings.database.max_connections, 10);
//! ```
#![forbid(unsafe_code)]

pub mod assets;
pub mod auth;
pub mod cli;
pub mod config;
pub mod database;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod middleware;
pub mod notifications;
pub mod openapi;
pub mod ops;
pub mod organizations;
pub mod pagination;
pub mod shared_cache;
pub mod stacks;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod users;
pub mod validation;
