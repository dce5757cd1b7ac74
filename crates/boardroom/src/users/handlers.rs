//! HTTP handlers for users.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::{
    UserAccess,
    activity::{self, ActivityAccepted, ActivityList, ActivityPost},
    model::{NewUser, User, UserUpdate},
    repository,
    search::{Search, SearchParams, UserList},
};
use crate::{
    auth::{Principal, Role},
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path, Query},
    organizations,
    pagination::PageParams,
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
    // The identity may have been cached as a caller without a profile.
    state.users.invalidate_users(&[user.id]).await;
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
    let viewer = if principal.operator {
        None
    } else {
        Some(state.users.viewer(&state, principal.user_id).await?)
    };
    let user = state
        .users
        .profile(&state, viewer.as_deref(), principal.user_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if !principal.operator && principal.user_id != id {
        state.activity.record_view(principal.user_id, id);
    }
    Ok(envelope::ok(&*user))
}

/// Search the users the caller can see: filters, sort, offset or cursor
/// pages, and facets (see [`super::search`]).
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    params(SearchParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of users with facets", body = Envelope<UserList>))
)]
pub async fn search_users(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, ApiError> {
    let viewer = (!principal.operator).then_some(principal.user_id);
    let search = Search::new(params, viewer)?;
    if let (Some(organization), Some(_)) = (search.organization_id(), viewer) {
        let caller = state.users.viewer(&state, principal.user_id).await?;
        if !caller.organizations.contains(&organization) {
            return Err(ApiError::not_found("organization"));
        }
    }
    let list = state.db.run(search.run(&state.db.pool)).await?;
    Ok(envelope::ok(list))
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
    let updated = state
        .db
        .run(repository::update(&state.db.pool, id, &body))
        .await;
    // Invalidate even when the update failed part-way: never serve what
    // may no longer be true.
    state.users.invalidate_users(&[id]).await;
    updated?.ok_or_else(|| ApiError::not_found("user"))?;
    state.activity.record_update(principal.user_id, id);
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
    let deleted = state.db.run(repository::delete(&state.db.pool, id)).await;
    state.users.invalidate_users(&[id]).await;
    if !deleted? {
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

/// Record an activity event for a user (the user themself, their admins and
/// owners, or operators). Buffered: written within `activity.flush_interval`;
/// `503` with `Retry-After` when the buffer stays full.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/activity",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = ActivityPost,
    security(("bearer" = [])),
    responses((status = 202, description = "Queued", body = Envelope<ActivityAccepted>))
)]
pub async fn post_activity(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(&body).map_err(|e| ApiError::Internal(e.into()))?;
    let events = ActivityPost::parse(&bytes)?;
    if events.len() > state.activity.max_batch() {
        return Err(ApiError::validation(
            "events",
            format!("at most {} events per post", state.activity.max_batch()),
        ));
    }
    // The common case, a user reporting their own activity, needs no query.
    if principal.user_id != id {
        let access = UserAccess::resolve(&state, principal, id).await?;
        if !access.manages {
            return Err(ApiError::forbidden(
                "members record only their own activity; admins and owners record anyone's",
            ));
        }
    }
    let accepted = events.len();
    state.activity.post(id, events).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(Envelope::new(ActivityAccepted { accepted })),
    )
        .into_response())
}

/// A user's recorded activity, newest first (anyone who can see the user).
/// Events still in the buffer appear once written.
#[utoipa::path(
    get,
    path = "/v1/users/{id}/activity",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id"), PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "The activity", body = Envelope<ActivityList>))
)]
pub async fn list_activity(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> Result<Response, ApiError> {
    let page = page.validate()?;
    UserAccess::resolve(&state, principal, id).await?;
    let list = state
        .db
        .run(activity::list(&state.db.pool, id, page))
        .await?;
    Ok(envelope::ok(list))
}
