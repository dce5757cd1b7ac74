//! HTTP handlers for organizations and their members.

use axum::{extract::State, response::Response};
use uuid::Uuid;

use super::{
    caller_role,
    model::{MemberList, Membership, NewMembership, NewOrganization, Organization},
    repository,
};
use crate::{
    auth::{Principal, Role},
    envelope::{self, Envelope},
    error::ApiError,
    extract::{Json, Path, Query},
    pagination::{PageParams, Pagination},
    state::AppState,
};

/// Create an organization; the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/v1/organizations",
    tag = "organizations",
    request_body = NewOrganization,
    security(("bearer" = [])),
    responses((status = 201, description = "Created; the caller is its owner", body = Envelope<Organization>))
)]
pub async fn create_organization(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<NewOrganization>,
) -> Result<Response, ApiError> {
    body.validate()?;
    let organization = state
        .db
        .run(repository::create(&state.db.pool, principal.user_id, &body))
        .await?;
    // The founder now belongs to it: their cached organizations are stale.
    state.users.invalidate_users(&[principal.user_id]).await;
    tracing::info!(organization_id = %organization.id, owner = %principal.user_id, "organization created");
    Ok(envelope::created(organization))
}

/// Read an organization the caller belongs to.
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}",
    tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id")),
    security(("bearer" = [])),
    responses((status = 200, description = "The organization", body = Envelope<Organization>))
)]
pub async fn get_organization(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    caller_role(&state, principal, id).await?;
    let organization = state
        .db
        .run(repository::find(&state.db.pool, id))
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(envelope::ok(organization))
}

/// Add an identity to the organization, or change its role (admins and
/// owners). The identity need not have a user profile yet.
#[utoipa::path(
    post,
    path = "/v1/organizations/{id}/members",
    tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id")),
    request_body = NewMembership,
    security(("bearer" = [])),
    responses((status = 201, description = "The membership", body = Envelope<Membership>))
)]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Json(body): Json<NewMembership>,
) -> Result<Response, ApiError> {
    let role = caller_role(&state, principal, id).await?;
    if !role.manages_members() {
        return Err(ApiError::forbidden(
            "only admins and owners of the organization manage its members",
        ));
    }
    let current = state
        .db
        .run(repository::member_role(&state.db.pool, id, body.user_id))
        .await?;
    if (body.role == Role::Owner || current == Some(Role::Owner)) && role != Role::Owner {
        return Err(ApiError::forbidden("only owners grant or change ownership"));
    }
    let membership = state
        .db
        .run(repository::upsert_member(
            &state.db.pool,
            id,
            body.user_id,
            body.role,
        ))
        .await?;
    // The member's visible memberships and both sides' access changed.
    state.users.invalidate_users(&[body.user_id]).await;
    state.users.invalidate_organization(id).await;
    Ok(envelope::created(membership))
}

/// List the organization's members (any member may read).
#[utoipa::path(
    get,
    path = "/v1/organizations/{id}/members",
    tag = "organizations",
    params(("id" = Uuid, Path, description = "Organization id"), PageParams),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of members", body = Envelope<MemberList>))
)]
pub async fn list_members(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> Result<Response, ApiError> {
    let page = params.validate()?;
    caller_role(&state, principal, id).await?;
    let (members, total) = state
        .db
        .run(repository::list_members(&state.db.pool, id, page))
        .await?;
    Ok(envelope::ok(MemberList {
        members,
        pagination: Pagination::new(total, page),
    }))
}
