//! SQL for users (runtime-checked queries).

use sqlx::PgPool;
use uuid::Uuid;

use super::{
    cache::Viewer,
    model::{NewUser, User, UserMembership, UserUpdate},
};
use crate::{
    auth::Role,
    error::{ApiError, is_unique_violation},
};

const USER_COLUMNS: &str = "id, email, first_name, last_name, designation, is_active, \
                            created_at, updated_at, last_active_at";

fn email_conflict(error: sqlx::Error) -> ApiError {
    if is_unique_violation(&error, "users_email_lower_key") {
        ApiError::Conflict("a user with this email already exists".into())
    } else if is_unique_violation(&error, "users_pkey") {
        ApiError::Conflict("a user with this id already exists".into())
    } else {
        error.into()
    }
}

/// Creates the user and their membership (an existing membership of that
/// identity keeps its role), in one transaction.
pub async fn create(pool: &PgPool, new: &NewUser) -> Result<User, ApiError> {
    let mut tx = pool.begin().await?;
    let user = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, email, first_name, last_name, designation)
         VALUES ($1, $2, $3, $4, $5) RETURNING {USER_COLUMNS}"
    )))
    .bind(new.id.unwrap_or_else(Uuid::now_v7))
    .bind(new.email.trim())
    .bind(new.first_name.trim())
    .bind(new.last_name.trim())
    .bind(new.designation.as_deref().map(str::trim))
    .fetch_one(&mut *tx)
    .await
    .map_err(email_conflict)?;
    sqlx::query(
        "INSERT INTO memberships (organization_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (organization_id, user_id) DO NOTHING",
    )
    .bind(new.organization_id)
    .bind(user.id)
    .bind(new.role.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// What a request needs to know about its caller: whether their profile is
/// active, and their organizations.
pub async fn viewer(pool: &PgPool, user_id: Uuid) -> Result<Viewer, ApiError> {
    let (active, organizations): (Option<bool>, Vec<Uuid>) = sqlx::query_as(
        "SELECT (SELECT is_active FROM users WHERE id = $1),
                COALESCE((SELECT array_agg(organization_id ORDER BY organization_id)
                          FROM memberships WHERE user_id = $1), '{}')",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?;
    Ok(Viewer {
        active,
        organizations: organizations.into(),
    })
}

/// The user, if it exists.
pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<User>, ApiError> {
    Ok(sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The user's memberships in organizations `viewer` belongs to (all of them
/// when `viewer` is `None`, for operators).
pub async fn visible_memberships(
    pool: &PgPool,
    user_id: Uuid,
    viewer: Option<Uuid>,
) -> Result<Vec<UserMembership>, ApiError> {
    Ok(sqlx::query_as::<_, UserMembership>(
        "SELECT t.organization_id, t.role FROM memberships t
         WHERE t.user_id = $1
           AND ($2::uuid IS NULL OR EXISTS (
                 SELECT 1 FROM memberships c
                 WHERE c.organization_id = t.organization_id AND c.user_id = $2))
         ORDER BY t.created_at, t.organization_id",
    )
    .bind(user_id)
    .bind(viewer)
    .fetch_all(pool)
    .await?)
}

/// For each organization both belong to: (the caller's role, the target's role).
pub async fn shared_roles(
    pool: &PgPool,
    caller: Uuid,
    target: Uuid,
) -> Result<Vec<(Role, Role)>, ApiError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.role, t.role FROM memberships c
         JOIN memberships t ON t.organization_id = c.organization_id
         WHERE c.user_id = $1 AND t.user_id = $2",
    )
    .bind(caller)
    .bind(target)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(c, t)| {
            Ok((
                c.parse()
                    .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?,
                t.parse()
                    .map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?,
            ))
        })
        .collect()
}

/// The `SET` list applying a [`UserUpdate`]: `$2`–`$7` are its values, bound
/// by [`bind_update!`](crate::bind_update); `$1` is the caller's (an id, or
/// the ids of a bulk batch). One statement text for `PATCH` and bulk jobs.
pub const APPLY_UPDATE: &str = "email = COALESCE($2, email),
            first_name = COALESCE($3, first_name),
            last_name = COALESCE($4, last_name),
            designation = CASE WHEN $5 THEN $6 ELSE designation END,
            is_active = COALESCE($7, is_active),
            updated_at = now()";

/// Binds a [`UserUpdate`]'s values (trimmed) as `$2`–`$7` of
/// [`APPLY_UPDATE`], after the caller bound `$1`. A macro because sqlx's
/// query kinds (`query`, `query_as`, `query_scalar`) share no bind trait.
#[macro_export]
macro_rules! bind_update {
    ($query:expr, $update:expr) => {{
        let update: &$crate::users::model::UserUpdate = $update;
        $query
            .bind(update.email.as_deref().map(str::trim))
            .bind(update.first_name.as_deref().map(str::trim))
            .bind(update.last_name.as_deref().map(str::trim))
            .bind(update.designation.is_some())
            .bind(
                update
                    .designation
                    .clone()
                    .flatten()
                    .map(|d| d.trim().to_owned()),
            )
            .bind(update.is_active)
    }};
}

/// Applies the fields present in `update`.
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    update: &UserUpdate,
) -> Result<Option<User>, ApiError> {
    let query = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET {APPLY_UPDATE}
         WHERE id = $1
         RETURNING {USER_COLUMNS}"
    )))
    .bind(id);
    crate::bind_update!(query, update)
        .fetch_optional(pool)
        .await
        .map_err(email_conflict)
}

/// Deletes the user and their memberships; false when there was no such user.
pub async fn delete(pool: &PgPool, id: Uuid) -> Result<bool, ApiError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM memberships WHERE user_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deleted = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(deleted > 0)
}
