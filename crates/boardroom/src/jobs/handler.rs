//! What a domain implements to run its bulk work as a job: a [`JobHandler`]
//! registered under its `kind` in [`Handlers`].
//!
//! The worker owns the mechanics (claiming, leases, batching, progress,
//! events, callbacks); a handler only applies one batch of items inside the
//! transaction it is given. Because the worker advances the job's cursor in
//! that same transaction, a handler that does all its writes through `tx`
//! gets exactly-once application for free: a batch either commits with the
//! cursor or not at all.

use std::{collections::HashMap, future::Future, pin::Pin, sync::Arc};

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// A boxed, sendable future (handlers are stored as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The outcome of one item: applied, or the message recorded for it.
pub type ItemOutcome = Result<(), String>;

/// What a handler knows about the job whose batch it applies.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// The job.
    pub id: Uuid,
    /// Its kind.
    pub kind: String,
    /// Its organization, if it has one.
    pub organization_id: Option<Uuid>,
    /// Who created it: the handler applies items with this caller's rights.
    pub created_by: Uuid,
    /// The creator was an operator.
    pub created_by_operator: bool,
    /// The handler's parameters, as given at creation.
    pub params: Value,
}

/// A domain's processor for jobs of one kind.
pub trait JobHandler: Send + Sync + 'static {
    /// The kind it processes, e.g. `users.bulk_update`.
    fn kind(&self) -> &'static str;

    /// Applies `items` (consecutive items of the job) using `tx` for every
    /// write, and returns one outcome per item, in order. An `Err` of the
    /// whole call rolls the batch back; the worker retries it with backoff
    /// and fails the job after `jobs.max_attempts` tries.
    fn apply_batch<'a>(
        &'a self,
        state: &'a AppState,
        job: &'a JobSpec,
        items: &'a [Value],
        tx: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Vec<ItemOutcome>, ApiError>>;

    /// Called after a batch committed (caches to invalidate, …); `items`
    /// and `outcomes` are those of the batch. Nothing by default.
    fn after_commit<'a>(
        &'a self,
        state: &'a AppState,
        job: &'a JobSpec,
        items: &'a [Value],
        outcomes: &'a [ItemOutcome],
    ) -> BoxFuture<'a, ()> {
        let _ = (state, job, items, outcomes);
        Box::pin(async {})
    }
}

/// The handlers of this process, by kind. Workers only claim jobs whose kind
/// is registered here.
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_kind.keys()).finish()
    }
}

impl Handlers {
    /// No handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `handler` under its kind (replacing one of the same kind).
    #[must_use]
    pub fn with(mut self, handler: impl JobHandler) -> Self {
        self.by_kind.insert(handler.kind(), Arc::new(handler));
        self
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.by_kind.get(kind).cloned()
    }

    /// Every registered kind.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.by_kind.keys().map(|k| (*k).to_owned()).collect();
        kinds.sort();
        kinds
    }
}

/// How an item is named in `errors[].item`: a JSON string as itself, anything
/// else as its JSON text.
pub fn item_label(item: &Value) -> String {
    match item {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
