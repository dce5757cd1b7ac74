//! Users (board members) as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::Role, error::ApiError, validation};

/// A user's profile, with the memberships the caller may see.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id (use it as `sub` in this user's tokens).
    pub id: Uuid,
    /// Email, unique regardless of case.
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Board title, e.g. "Chair".
    pub designation: Option<String>,
    /// Whether the account is active.
    pub is_active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last recorded activity.
    pub last_active_at: Option<DateTime<Utc>>,
    /// Memberships in organizations the caller belongs to.
    #[sqlx(skip)]
    pub memberships: Vec<UserMembership>,
}

/// One of a user's memberships.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct UserMembership {
    /// The organization.
    pub organization_id: Uuid,
    /// The role there.
    #[sqlx(try_from = "String")]
    pub role: Role,
}

/// `POST /v1/users` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewUser {
    /// The user's id: their identity's `sub` (so an organization's founder can
    /// create their own profile); generated when absent.
    pub id: Option<Uuid>,
    /// Email, unique regardless of case.
    #[schema(format = "email", max_length = 254)]
    pub email: String,
    /// First name, 1–100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub first_name: String,
    /// Last name, 1–100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub last_name: String,
    /// Board title, at most 100 characters.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub designation: Option<String>,
    /// The organization the user joins.
    pub organization_id: Uuid,
    /// Their role there.
    pub role: Role,
}

impl NewUser {
    /// Field rules (`422` naming the field).
    pub fn validate(&self) -> Result<(), ApiError> {
        validation::email("email", &self.email)?;
        validation::text("firstName", &self.first_name, 100)?;
        validation::text("lastName", &self.last_name, 100)?;
        if let Some(designation) = &self.designation {
            validation::text("designation", designation, 100)?;
        }
        Ok(())
    }
}

/// `PATCH /v1/users/{id}` body: only the fields present change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdate {
    /// New email.
    #[schema(format = "email", max_length = 254)]
    pub email: Option<String>,
    /// New first name.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub first_name: Option<String>,
    /// New last name.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"
    )]
    pub last_name: Option<String>,
    /// New designation; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 100, pattern = "^[^\\x00]*[^\\s\\x00][^\\x00]*$")]
    pub designation: Option<Option<String>>,
    /// Activate or deactivate (admins and owners only).
    pub is_active: Option<bool>,
}

impl UserUpdate {
    /// Field rules (`422` naming the field).
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(email) = &self.email {
            validation::email("email", email)?;
        }
        if let Some(first_name) = &self.first_name {
            validation::text("firstName", first_name, 100)?;
        }
        if let Some(last_name) = &self.last_name {
            validation::text("lastName", last_name, 100)?;
        }
        if let Some(Some(designation)) = &self.designation {
            validation::text("designation", designation, 100)?;
        }
        Ok(())
    }
}

/// Tells "absent" (outer `None`, via `default`) from "null" (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}
