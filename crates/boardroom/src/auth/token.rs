//! HS256 bearer tokens: minting (for `boardroom token`) and verification.
//!
//! Tokens carry `sub` (the user id, as Supabase issues them), `exp` (required)
//! and optionally `"role": "service_role"`, which makes the caller an operator.
//!
//! Verification is cached: checking a token (base64, HMAC-SHA256, two JSON
//! parses) costs microseconds, a large share of a cached read's budget, and
//! a client sends the same token on every request. A verified token is kept
//! (the whole token, compared byte for byte on a hit, under a hash of it)
//! until its own `exp` (plus the leeway) or at most [`VERIFIED_TTL`], in a
//! bounded moka cache of [`VERIFIED_MAX`] tokens. Only tokens that passed
//! verification are kept, so a flood of bad tokens cannot fill it, and a hit
//! re-checks expiry. What a token *means* (is the user still active?) is
//! still checked on every request by the caller's extractor.
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

/// How long a verified token is remembered at most.
pub const VERIFIED_TTL: Duration = Duration::from_secs(300);

/// How many verified tokens are remembered at most.
pub const VERIFIED_MAX: u64 = 100_000;

/// The leeway on `exp`, in seconds (clock skew between issuer and us).
const LEEWAY_SECS: u64 = 5;

/// A token that passed verification, and what it said.
struct Verified {
    token: Box<str>,
    principal: Principal,
    exp: u64,
}

/// The keys derived from `auth.jwt_secret`.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Recently verified tokens, keyed by a hash of the token.
    verified: moka::sync::Cache<u64, std::sync::Arc<Verified>>,
    hasher: foldhash::fast::RandomState,
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
        validation.leeway = LEEWAY_SECS;
        let invalid = |e: jsonwebtoken::errors::Error| TokenError::Sign(e.to_string());
        Ok(Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(invalid)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(invalid)?,
            validation,
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_MAX)
                .time_to_live(VERIFIED_TTL)
                .build(),
            hasher: foldhash::fast::RandomState::default(),
        })
    }

    /// A token for `user_id`, an operator's when `service`, valid for `ttl`.
    pub fn mint(&self, user_id: Uuid, service: bool, ttl: Duration) -> Result<String, TokenError> {
        let now = unix_now();
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

    /// Verifies a token and returns who it speaks for (from the cache of
    /// verified tokens when this very token passed recently and has not
    /// expired since).
    pub fn verify(&self, token: &str) -> Result<Principal, TokenError> {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one(token);
        let now = unix_now();
        if let Some(hit) = self.verified.get(&key)
            && *hit.token == *token
        {
            return if hit.exp.saturating_add(LEEWAY_SECS) >= now {
                Ok(hit.principal)
            } else {
                Err(TokenError::Expired)
            };
        }
        let (principal, exp) = self.verify_uncached(token)?;
        self.verified.insert(
            key,
            std::sync::Arc::new(Verified {
                token: token.into(),
                principal,
                exp,
            }),
        );
        Ok(principal)
    }

    /// The full check: signature, algorithm, claims, expiry.
    fn verify_uncached(&self, token: &str) -> Result<(Principal, u64), TokenError> {
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
        let principal = Principal {
            user_id,
            operator: data.claims.role.as_deref() == Some(SERVICE_ROLE),
        };
        Ok((principal, data.claims.exp))
    }
}

/// Seconds since the epoch, as `exp` counts them.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new("a-secret-of-sixteen-chars").unwrap()
    }

    #[test]
    fn a_cached_token_is_served_until_it_expires() {
        let keys = keys();
        let user = Uuid::new_v4();
        let token = keys.mint(user, false, Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().user_id, user);
        assert_eq!(keys.verify(&token).unwrap().user_id, user, "from the cache");
        // Age the cached entry past its expiry (and the leeway).
        let key = std::hash::BuildHasher::hash_one(&keys.hasher, token.as_str());
        let cached = keys.verified.get(&key).expect("the token was cached");
        keys.verified.insert(
            key,
            std::sync::Arc::new(Verified {
                token: cached.token.clone(),
                principal: cached.principal,
                exp: unix_now() - LEEWAY_SECS - 1,
            }),
        );
        assert!(matches!(keys.verify(&token), Err(TokenError::Expired)));
    }

    #[test]
    fn a_tampered_copy_of_a_cached_token_is_refused() {
        let keys = keys();
        let token = keys
            .mint(Uuid::new_v4(), false, Duration::from_secs(60))
            .unwrap();
        keys.verify(&token).unwrap();
        // Change one character well inside the signature (the last one
        // also carries padding bits a decoder may ignore).
        let at = token.len() - 10;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
        assert!(matches!(
            keys.verify(&tampered),
            Err(TokenError::Invalid(_))
        ));
        let other = JwtKeys::new("another-secret-of-sixteen").unwrap();
        assert!(other.verify(&token).is_err(), "another key never trusts it");
    }

    #[test]
    fn bad_tokens_are_not_cached() {
        let keys = keys();
        for _ in 0..3 {
            assert!(keys.verify("not.a.jwt").is_err());
        }
        keys.verified.run_pending_tasks();
        assert_eq!(keys.verified.entry_count(), 0);
    }
}
