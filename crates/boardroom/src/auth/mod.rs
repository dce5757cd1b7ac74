//! Who is calling, and what their organization roles allow.
//!
//! [`Principal`] is an extractor: it reads `Authorization: Bearer <JWT>`,
//! verifies it with `auth.jwt_secret` and answers `401` in the envelope when the
//! token is missing, malformed, badly signed, expired or lacks `exp`/`sub`, and
//! `403` when the user's profile is deactivated (`isActive: false`).
//! Tenancy is enforced by the repositories, which scope every query to the
//! caller's organizations; [`Role`] says what each membership allows.
//!
//! ```
//! use boardroom::auth::Role;
//! assert!(Role::Admin.manages_members());
//! assert!(!Role::Viewer.manages_members());
//! assert!(Role::Owner > Role::Member);
//! ```

pub mod role;
pub mod token;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{header, request::Parts},
};
use uuid::Uuid;

pub use role::Role;
pub use token::JwtKeys;

use crate::{error::ApiError, state::AppState};

/// The authenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub user_id: Uuid,
    /// True for `"role": "service_role"` tokens: operators may do anything.
    pub operator: bool,
}

impl<S> FromRequestParts<S> for Principal
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into())
            })?;
        let principal = state
            .jwt
            .verify(token)
            .map_err(|error| ApiError::Unauthorized(error.to_string()))?;
        // A deactivated user's tokens stop working at once, not at expiry
        // (deactivation invalidates the cached caller).
        if !principal.operator {
            let viewer = state.users.viewer(&state, principal.user_id).await?;
            if viewer.active == Some(false) {
                return Err(ApiError::forbidden("this account is deactivated"));
            }
        }
        Ok(principal)
    }
}
