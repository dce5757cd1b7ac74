//! Users (board members): `POST /v1/users`, `GET /v1/users` (search with
//! facets, [`search`]), `GET|PATCH|DELETE /v1/users/{id}` (profiles served
//! from [`cache`]), `POST|GET /v1/users/{id}/activity` ([`activity`]),
//! `POST /v1/users/bulk-update` (a job, see [`bulk`]).
//!
//! A user is visible to operators, to themself and to members of an
//! organization they belong to; anyone else gets a `404`. Members change
//! their own profile; admins and owners of a shared organization manage the
//! user (only owners manage owners); operators manage everyone.
//!
//! ```
//! let (_router, api) = boardroom::users::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/v1/users/{id}"));
//! let (_router, api) = boardroom::users::search_router().split_for_parts();
//! assert!(api.paths.paths["/v1/users"].get.is_some());
//! ```

pub mod activity;
pub mod bulk;
pub mod cache;
pub mod handlers;
pub mod model;
pub mod repository;
pub mod search;

use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::ApiError,
    state::AppState,
};

/// The user routes but the search (see [`search_router`]).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create_user))
        .routes(routes!(bulk::bulk_update))
        .routes(routes!(
            handlers::get_user,
            handlers::update_user,
            handlers::delete_user
        ))
        .routes(routes!(handlers::post_activity, handlers::list_activity))
}

/// `GET /v1/users`, the search: the one expensive users route (≈ 8–10 ms of
/// PostgreSQL per call, two pooled connections at once), so it runs in a
/// stack of its own, `[services.users_search]`, whose concurrency limit is
/// sized to the database rather than to the cheap cached reads of the rest
/// of the domain (which a search overload must not starve).
pub fn search_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(handlers::search_users))
}

/// What the caller may do with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserAccess {
    /// The caller is the user.
    pub is_self: bool,
    /// The caller is an operator, or an admin/owner of an organization the
    /// user belongs to (an owner, when the user is an owner there).
    pub manages: bool,
}

impl UserAccess {
    /// Resolves the caller's rights over `target`; `404` when the caller may not
    /// even see the user.
    pub async fn resolve(
        state: &AppState,
        principal: Principal,
        target: Uuid,
    ) -> Result<Self, ApiError> {
        let is_self = principal.user_id == target;
        if principal.operator {
            return Ok(Self {
                is_self,
                manages: true,
            });
        }
        let shared = state
            .db
            .run(repository::shared_roles(
                &state.db.pool,
                principal.user_id,
                target,
            ))
            .await?;
        if shared.is_empty() && !is_self {
            return Err(ApiError::not_found("user"));
        }
        let manages = shared.iter().any(|&(caller, target_role)| {
            caller.manages_members() && (caller == Role::Owner || target_role != Role::Owner)
        });
        Ok(Self { is_self, manages })
    }
}
