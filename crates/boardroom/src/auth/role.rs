//! Organization roles and what each allows.
//!
//! ```
//! use boardroom::auth::Role;
//! assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
//! assert_eq!(Role::Viewer.as_str(), "viewer");
//! ```

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member's role in an organization, from least to most powerful.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the organization and its members.
    Viewer,
    /// Reads, and writes their own user record.
    Member,
    /// Manages members and users of the organization.
    Admin,
    /// Everything an admin does, and grants or removes ownership.
    Owner,
}

impl Role {
    /// The name stored in the database and used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    /// Admins and owners add members and manage users.
    pub fn manages_members(self) -> bool {
        self >= Self::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of `owner|admin|member|viewer`.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; expected owner, admin, member or viewer")]
pub struct UnknownRole(String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "member" => Ok(Self::Member),
            "admin" => Ok(Self::Admin),
            "owner" => Ok(Self::Owner),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

impl TryFrom<String> for Role {
    type Error = UnknownRole;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}
