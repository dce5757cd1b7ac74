//! Organizations (tenants) and memberships.
//!
//! `POST /v1/organizations` (the caller becomes owner), `GET /v1/organizations/{id}`,
//! `POST /v1/organizations/{id}/members`, `GET /v1/organizations/{id}/members`.
//! An organization the caller does not belong to is a `404`, as if it did not exist.
//!
//! ```
//! let (_router, api) = boardroom::organizations::router().split_for_parts();
//! assert!(api.paths.paths.contains_key("/v1/organizations/{id}/members"));
//! ```

pub mod handlers;
pub mod model;
pub mod repository;

use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::{Principal, Role},
    error::ApiError,
    state::AppState,
};

/// The organization routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(handlers::create_organization))
        .routes(routes!(handlers::get_organization))
        .routes(routes!(handlers::add_member, handlers::list_members))
}

/// The caller's effective role in `organization_id` (operators act as owners),
/// or `404` when the caller does not belong to it or it does not exist.
pub async fn caller_role(
    state: &AppState,
    principal: Principal,
    organization_id: Uuid,
) -> Result<Role, ApiError> {
    if principal.operator {
        return match state
            .db
            .run(repository::find(&state.db.pool, organization_id))
            .await?
        {
            Some(_) => Ok(Role::Owner),
            None => Err(ApiError::not_found("organization")),
        };
    }
    state
        .db
        .run(repository::member_role(
            &state.db.pool,
            organization_id,
            principal.user_id,
        ))
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))
}
