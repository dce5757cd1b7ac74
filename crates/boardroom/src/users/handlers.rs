//! HTTP handlers for users.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{
    UserAccess,
    model::{NewUser, User, UserUpdate},
    repository,
};
use crate::{
    auth::{Principal, Role},
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path},
    organizations,
    state::AppState,
};

/// Create a user in an organization (admins and owners of it).
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = NewUser,
    security(("bearer" = [])),
    responses((status = 201, description = "Created", body = Envelope<User>))
)]
pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<NewUser>,
) -> Result<Response, ApiError> {
    body.validate()?;
    if body.id.is_some_and(|id| id != principal.user_id) && !principal.operator {
        return Err(ApiError::forbidden(
            "`id` may only be your own identity (operators may set any)",
        ));
    }
    let role = organizations::caller_role(&state, principal, body.organization_id).await?;
    if !role.manages_members() {
        return Err(ApiError::forbidden(
            "only admins and owners of the organization create users",
        ));
    }
    if body.role == Role::Owner && role != Role::Owner {
        return Err(ApiError::forbidden("only owners grant ownership"));
    }
    let mut user = state
        .db
        .run(repository::create(&state.db.pool, &body))
        .await?;
    user.memberships = state
        .db
        .run(repository::visible_memberships(
            &state.db.pool,
            user.id,
            None,
        ))
        .await?;
    tracing::info!(user_id = %user.id, organization_id = %body.organization_id, "user created");
    Ok(envelope::created(user))
}

/// Read a user who shares an organization with the caller (or the caller).
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The user", body = Envelope<User>))
)]
pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    UserAccess::resolve(&state, principal, id).await?;
    Ok(envelope::ok(load(&state, principal, id).await?))
}

/// Change a user: the user themself (profile fields), or admins and owners of
/// an organization they belong to (also `isActive`).
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UserUpdate,
    security(("bearer" = [])),
    responses((status = 200, description = "The changed user", body = Envelope<User>))
)]
pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<UserUpdate>,
) -> Result<Response, ApiError> {
    let access = UserAccess::resolve(&state, principal, id).await?;
    if !(access.manages || access.is_self) {
        return Err(ApiError::forbidden(
            "members change only their own record; admins and owners manage users",
        ));
    }
    if body.is_active.is_some() && !access.manages {
        return Err(ApiError::forbidden(
            "only admins and owners activate or deactivate users",
        ));
    }
    body.validate()?;
    state
        .db
        .run(repository::update(&state.db.pool, id, &body))
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(envelope::ok(load(&state, principal, id).await?))
}

/// Delete a user and their memberships (admins and owners of an organization
/// they belong to; only owners delete owners).
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"))
)]
pub async fn delete_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let access = UserAccess::resolve(&state, principal, id).await?;
    if !access.manages {
        return Err(ApiError::forbidden("only admins and owners delete users"));
    }
    if !state.db.run(repository::delete(&state.db.pool, id)).await? {
        return Err(ApiError::not_found("user"));
    }
    tracing::info!(user_id = %id, by = %principal.user_id, "user deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn load(state: &AppState, principal: Principal, id: Uuid) -> Result<User, ApiError> {
    let mut user = state
        .db
        .run(repository::find(&state.db.pool, id))
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let viewer = (!principal.operator).then_some(principal.user_id);
    user.memberships = state
        .db
        .run(repository::visible_memberships(&state.db.pool, id, viewer))
        .await?;
    Ok(user)
}
