//! SQL for organizations and memberships (runtime-checked queries).

use sqlx::PgPool;
use uuid::Uuid;

use super::model::{Member, Membership, NewOrganization, Organization};
use crate::{
    auth::Role,
    error::{ApiError, is_unique_violation},
    pagination::Page,
};

/// Creates the organization with `owner` as its owner, in one transaction.
pub async fn create(
    pool: &PgPool,
    owner: Uuid,
    new: &NewOrganization,
) -> Result<Organization, ApiError> {
    let mut tx = pool.begin().await?;
    let organization = sqlx::query_as::<_, Organization>(
        "INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)
         RETURNING id, name, slug, created_at, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(new.name.trim())
    .bind(&new.slug)
    .fetch_one(&mut *tx)
    .await
    .map_err(|error| {
        if is_unique_violation(&error, "organizations_slug_key") {
            ApiError::Conflict(format!("the slug {:?} is already taken", new.slug))
        } else {
            error.into()
        }
    })?;
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, 'owner')",
    )
    .bind(organization.id)
    .bind(owner)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(organization)
}

/// The organization, if it exists.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Organization>, ApiError> {
    Ok(sqlx::query_as::<_, Organization>(
        "SELECT id, name, slug, created_at, updated_at FROM organizations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// `user_id`'s role in `organization_id`, if a member.
pub async fn member_role(
    pool: &PgPool,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<Option<Role>, ApiError> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
    )
    .bind(organization_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    role.map(|r| {
        r.parse::<Role>()
            .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))
    })
    .transpose()
}

/// Grants `role` to `user_id` (replacing any previous role).
pub async fn upsert_member(
    pool: &PgPool,
    organization_id: Uuid,
    user_id: Uuid,
    role: Role,
) -> Result<Membership, ApiError> {
    Ok(sqlx::query_as::<_, Membership>(
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (organization_id, user_id) DO UPDATE SET role = EXCLUDED.role
         RETURNING organization_id, user_id, role, created_at",
    )
    .bind(organization_id)
    .bind(user_id)
    .bind(role.as_str())
    .fetch_one(pool)
    .await?)
}

/// One page of members (oldest first) and the total.
pub async fn list_members(
    pool: &PgPool,
    organization_id: Uuid,
    page: Page,
) -> Result<(Vec<Member>, i64), ApiError> {
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM memberships WHERE organization_id = $1")
            .bind(organization_id)
            .fetch_one(pool)
            .await?;
    let members = sqlx::query_as::<_, Member>(
        "SELECT m.user_id, m.role, m.created_at, u.email, u.first_name, u.last_name
         FROM memberships m LEFT JOIN users u ON u.id = m.user_id
         WHERE m.organization_id = $1
         ORDER BY m.created_at, m.user_id
         LIMIT $2 OFFSET $3",
    )
    .bind(organization_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    Ok((members, total))
}
