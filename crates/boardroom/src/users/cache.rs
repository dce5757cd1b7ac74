//! Cached profiles and callers, on the resilience crate's tagged cache.
//!
//! Two caches, both registered (so `/admin/stats`, `/metrics` and
//! `POST /admin/cache/invalidate` see them) and both configured by
//! `[services.users.cache]`:
//!
//! - **`users.viewers`**: per caller (a token's `sub`), whether the profile is
//!   active and which organizations the caller belongs to. Every
//!   authenticated request needs this; caching it saves a query per request.
//!   Tagged `user:{id}`.
//! - **`users`**: `GET /v1/users/{id}` as one caller sees it — the profile
//!   with the memberships the caller may see, or "not visible" (a `404`).
//!   The key is (caller, user): one tenant can never be served an entry
//!   filled for another, because the caller is part of the key, and what a
//!   caller may see depends only on their own and the target's memberships.
//!   Tagged `user:{target}`, `user:{caller}` and `org:{o}` for each of the
//!   caller's organizations.
//!
//! Every mutation path invalidates before its response is sent: `PATCH` and
//! `DELETE` of a user, bulk updates (`user:{id}` per item) and membership
//! changes (`user:{id}` and `org:{id}`). A load racing an invalidation is
//! never stored as fresh (the cache's per-tag generations), so a `GET` after
//! a `PATCH` shows the change. Hot profiles are refreshed ahead of expiry
//! (`refresh_threshold`).
//!
//! With several instances, both caches are [`TieredCache`]s: an L1 miss
//! asks the shared Redis level (when `cache.redis_url` is set) before the
//! database, and every invalidation goes through [`SharedCache`], which
//! clears L2, this instance's L1 and — over PostgreSQL `NOTIFY` — every other
//! instance's L1 (see [`crate::shared_cache`]).

use std::sync::Arc;

use resilience::cache::{Cache, CacheConfig, LoadError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{model::User, repository};
use crate::{
    error::ApiError,
    shared_cache::{SharedCache, TieredCache},
    state::AppState,
};

/// What every request needs to know about its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// `Some(false)` when the caller's profile is deactivated; `None` when
    /// the identity has no profile (yet).
    pub active: Option<bool>,
    /// The organizations the caller belongs to.
    pub organizations: Arc<[Uuid]>,
}

/// `None` for operators, who see everyone alike.
type Scope = Option<Uuid>;

/// The users domain's caches (cheap to clone).
#[derive(Clone, Debug)]
pub struct UserCaches {
    viewers: TieredCache<Uuid, Arc<Viewer>>,
    profiles: TieredCache<(Scope, Uuid), Option<Arc<User>>>,
    shared: SharedCache,
}

/// The tag of everything cached about user `id`.
pub fn user_tag(id: Uuid) -> String {
    format!("user:{id}")
}

/// The tag of everything cached through organization `id`.
pub fn org_tag(id: Uuid) -> String {
    format!("org:{id}")
}

impl UserCaches {
    /// Builds both caches from `config`, registers them in `registry` and
    /// puts them behind `shared`'s second level.
    pub fn new(
        config: Option<CacheConfig>,
        registry: &resilience::registry::Registry,
        shared: &SharedCache,
    ) -> anyhow::Result<Self> {
        let config = config.unwrap_or_default();
        let ttl = config.ttl;
        let viewers = Cache::new("users.viewers", config.clone())?;
        let profiles = Cache::new("users", config)?;
        registry.register_cache(viewers.handle())?;
        registry.register_cache(profiles.handle())?;
        Ok(Self {
            viewers: TieredCache::new(viewers, shared, ttl),
            profiles: TieredCache::new(profiles, shared, ttl),
            shared: shared.clone(),
        })
    }

    /// The caller `user_id` (cached).
    pub async fn viewer(&self, state: &AppState, user_id: Uuid) -> Result<Arc<Viewer>, ApiError> {
        let tags = vec![user_tag(user_id)];
        let state = state.clone();
        self.viewers
            .get_or_load(user_id, tags, move || async move {
                let viewer = state
                    .db
                    .run(repository::viewer(&state.db.pool, user_id))
                    .await?;
                Ok::<_, ApiError>(Arc::new(viewer))
            })
            .await
            .map_err(from_load)
    }

    /// `target` as the caller sees it (cached): `None` when the caller may
    /// not see the user, or there is no such user.
    pub async fn profile(
        &self,
        state: &AppState,
        scope: Option<&Viewer>,
        caller: Uuid,
        target: Uuid,
    ) -> Result<Option<Arc<User>>, ApiError> {
        let viewer = scope.map(|_| caller);
        let mut tags = vec![user_tag(target)];
        if let Some(scope) = scope {
            tags.push(user_tag(caller));
            tags.extend(scope.organizations.iter().map(|&o| org_tag(o)));
        }
        let state = state.clone();
        self.profiles
            .get_or_load((viewer, target), tags, move || async move {
                load_visible(&state, viewer, target).await
            })
            .await
            .map_err(from_load)
    }

    /// Drops everything cached about each of `users` (as target and caller),
    /// in both levels and on every instance.
    pub async fn invalidate_users(&self, users: &[Uuid]) {
        let tags: Vec<String> = users.iter().map(|&id| user_tag(id)).collect();
        self.shared.invalidate_tags(&tags).await;
    }

    /// Drops every profile cached through organization `id`, in both levels
    /// and on every instance.
    pub async fn invalidate_organization(&self, id: Uuid) {
        self.shared.invalidate_tags(&[org_tag(id)]).await;
    }
}

/// The user with the memberships `viewer` may see; `None` unless the viewer
/// is an operator (`None`), the user themself, or shares an organization.
async fn load_visible(
    state: &AppState,
    viewer: Option<Uuid>,
    target: Uuid,
) -> Result<Option<Arc<User>>, ApiError> {
    let db = &state.db;
    let Some(mut user) = db.run(repository::find(&db.pool, target)).await? else {
        return Ok(None);
    };
    user.memberships = db
        .run(repository::visible_memberships(&db.pool, target, viewer))
        .await?;
    let visible = match viewer {
        None => true,
        Some(viewer) => viewer == target || !user.memberships.is_empty(),
    };
    Ok(visible.then(|| Arc::new(user)))
}

/// A failed load shared by every waiter becomes the error it stands for:
/// an unavailable database stays a `503`; anything else is internal.
pub(crate) fn from_load(error: LoadError) -> ApiError {
    match error.find::<ApiError>() {
        Some(ApiError::Unavailable {
            message,
            retry_after,
        }) => ApiError::Unavailable {
            message: message.clone(),
            retry_after: *retry_after,
        },
        _ => ApiError::Internal(anyhow::Error::new(error)),
    }
}
