//! Organizations and memberships as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::Role, error::ApiError, pagination::Pagination, validation};

/// An organization (a board's tenant).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Unique URL-safe name.
    pub slug: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/organizations` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewOrganization {
    /// Display name, 1–200 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub name: String,
    /// Unique URL-safe name: lowercase letters, digits, single dashes; 2–63 characters.
    #[schema(min_length = 2, max_length = 63, pattern = "^[a-z0-9]+(-[a-z0-9]+)*$")]
    pub slug: String,
}

impl NewOrganization {
    /// Field rules (`422` naming the field).
    pub fn validate(&self) -> Result<(), ApiError> {
        validation::text("name", &self.name, 200)?;
        validation::slug("slug", &self.slug)
    }
}

/// A user's role in an organization.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// The organization.
    pub organization_id: Uuid,
    /// The user (the token's `sub`).
    pub user_id: Uuid,
    /// Their role.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// When they joined.
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/organizations/{id}/members` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewMembership {
    /// The identity to add (a token's `sub`; it need not have a profile yet).
    pub user_id: Uuid,
    /// The role to grant (replaces a previous one).
    pub role: Role,
}

/// A member with their profile, for member lists.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The user.
    pub user_id: Uuid,
    /// Their role.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// When they joined.
    pub created_at: DateTime<Utc>,
    /// Email, when the user has a profile.
    pub email: Option<String>,
    /// First name, when the user has a profile.
    pub first_name: Option<String>,
    /// Last name, when the user has a profile.
    pub last_name: Option<String>,
}

/// `GET /v1/organizations/{id}/members` result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    /// This page of members, oldest first.
    pub members: Vec<Member>,
    /// Where the page sits.
    pub pagination: Pagination,
}
