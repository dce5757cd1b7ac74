//! HS256 bearer tokens: minting (for `boardroom token`) and verification.
//!
//! Tokens carry `sub` (the user id, as Supabase issues them), `exp` (required)
//! and optionally `"role": "service_role"`, which makes the caller an operator.
//!
//! ```
//! use std::time::Duration;
//! use boardroom::auth::token::JwtKeys;
//! let keys = JwtKeys::new("a-secret-of-sixteen-chars").unwrap();
//! let user = uuid::Uuid::new_v4();
//! let token = keys.mint(user, false, Duration::from_secs(60)).unwrap();
//! let principal = keys.verify(&token).unwrap();
//! assert_eq!(principal.user_id, user);
//! assert!(!principal.operator);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Principal;

/// The role claim that makes a token an operator's.
pub const SERVICE_ROLE: &str = "service_role";

/// The claims Boardroom reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// `service_role` for operators; Supabase sets `authenticated` for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Why a token was refused; each becomes a `401`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token has expired.
    #[error("the bearer token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, missing claims or not a JWT.
    #[error("the bearer token is invalid: {0}")]
    Invalid(String),
    /// The key is unusable or signing failed.
    #[error("could not sign the token: {0}")]
    Sign(String),
}

/// The keys derived from `auth.jwt_secret`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(<hidden>)")
    }
}

impl JwtKeys {
    /// Keys for `secret` (an empty secret is refused).
    pub fn new(secret: &str) -> Result<Self, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Supabase tokens carry `aud: authenticated`; the audience is not checked.
        validation.validate_aud = false;
        validation.leeway = 5;
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Sign(e.to_string());
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(invalid)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(invalid)?,
            validation,
        })
    }

    /// A token for `user_id`, an operator's when `service`, valid for `ttl`.
    pub fn mint(&self, user_id: Uuid, service: bool, ttl: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: user_id.to_string(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            role: Some(
                if service {
                    SERVICE_ROLE
                } else {
                    "authenticated"
                }
                .to_owned(),
            ),
        };
        self.sign(&claims)
    }

    /// Signs any claims (tests use it for odd tokens).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Verifies a token and returns who it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Invalid(format!("missing required claim `{claim}`"))
                }
                // Claims that do not fit (e.g. no `exp`): serde names the field.
                jsonwebtoken::errors::ErrorKind::Json(error) => {
                    TokenError::Invalid(format!("bad claims: {error}"))
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenError::Invalid("bad signature".into())
                }
                _ => TokenError::Invalid("not a valid HS256 JWT".into()),
            })?;
        let user_id = Uuid::parse_str(&data.claims.sub)
            .map_err(|_| TokenError::Invalid("`sub` is not a UUID".into()))?;
        Ok(Principal {
            user_id,
            operator: data.claims.role.as_deref() == Some(SERVICE_ROLE),
        })
    }
}
