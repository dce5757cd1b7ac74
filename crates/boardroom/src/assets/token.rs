//! Download tokens: HMAC-SHA256-signed, expiring, bound to one asset and
//! one version of its bytes (a re-uploaded file invalidates old links).
//!
//! Layout (then base64url without padding): asset id (16 bytes) ‖ version
//! (4, big-endian) ‖ expiry in Unix seconds (8) ‖ user id (16; nil for
//! none) ‖ HMAC of all that (32). Verification is constant-time.
//!
//! ```
//! use boardroom::assets::token::{DownloadSigner, TokenError};
//! let signer = DownloadSigner::new(b"a-secret-of-sixteen+");
//! let asset = uuid::Uuid::new_v4();
//! let token = signer.sign(asset, 3, 2_000_000_000, None);
//! let claims = signer.verify(&token, 1_900_000_000).unwrap();
//! assert_eq!((claims.asset_id, claims.version), (asset, 3));
//! assert_eq!(signer.verify(&token, 2_000_000_001), Err(TokenError::Expired));
//! let mut tampered = token.clone().into_bytes();
//! tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
//! assert_eq!(signer.verify(std::str::from_utf8(&tampered).unwrap(), 0), Err(TokenError::Invalid));
//! ```

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

const PAYLOAD: usize = 16 + 4 + 8 + 16;
const MAC: usize = 32;

/// What a valid token grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    /// The asset.
    pub asset_id: Uuid,
    /// The version of its bytes.
    pub version: i32,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Who asked for the link.
    pub user_id: Option<Uuid>,
}

/// Why a token is refused (both are `403`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Malformed, or the signature does not match.
    #[error("the download link is invalid")]
    Invalid,
    /// Past its expiry.
    #[error("the download link has expired")]
    Expired,
}

/// Signs and verifies download tokens.
#[derive(Clone)]
pub struct DownloadSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for DownloadSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DownloadSigner(<hidden>)")
    }
}

impl DownloadSigner {
    /// A signer with `key`.
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }

    /// A token for `asset_id` at `version`, valid until `expires_at`.
    pub fn sign(
        &self,
        asset_id: Uuid,
        version: i32,
        expires_at: i64,
        user_id: Option<Uuid>,
    ) -> String {
        let mut bytes = Vec::with_capacity(PAYLOAD + MAC);
        bytes.extend_from_slice(asset_id.as_bytes());
        bytes.extend_from_slice(&version.to_be_bytes());
        bytes.extend_from_slice(&expires_at.to_be_bytes());
        bytes.extend_from_slice(user_id.unwrap_or_else(Uuid::nil).as_bytes());
        let mut mac = self.mac();
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The claims of `token` if it is genuine and not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Invalid)?;
        if bytes.len() != PAYLOAD + MAC {
            return Err(TokenError::Invalid);
        }
        let (payload, signature) = bytes.split_at(PAYLOAD);
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(signature)
            .map_err(|_| TokenError::Invalid)?;
        let asset_id = Uuid::from_slice(&payload[..16]).map_err(|_| TokenError::Invalid)?;
        let version = i32::from_be_bytes(
            payload[16..20]
                .try_into()
                .map_err(|_| TokenError::Invalid)?,
        );
        let expires_at = i64::from_be_bytes(
            payload[20..28]
                .try_into()
                .map_err(|_| TokenError::Invalid)?,
        );
        let user = Uuid::from_slice(&payload[28..44]).map_err(|_| TokenError::Invalid)?;
        if now > expires_at {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            asset_id,
            version,
            expires_at,
            user_id: (!user.is_nil()).then_some(user),
        })
    }
}
