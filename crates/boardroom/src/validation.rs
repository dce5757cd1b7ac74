//! Field rules shared by the domains: each failure is a `422` naming the field.
//!
//! ```
//! use boardroom::validation;
//! assert!(validation::email("email", "Ada@Example.org").is_ok());
//! assert!(validation::email("email", "not-an-email").is_err());
//! assert!(validation::slug("slug", "acme-board").is_ok());
//! assert!(validation::slug("slug", "Acme Board").is_err());
//! ```

use crate::error::ApiError;

/// The slug pattern, also published in the OpenAPI schema.
pub const SLUG_PATTERN: &str = "^[a-z0-9]+(-[a-z0-9]+)*$";

/// The pattern of non-blank text without NUL (PostgreSQL cannot store NUL),
/// also published in the OpenAPI schema.
pub const TEXT_PATTERN: &str = "^[^\\x00]*[^\\s\\x00][^\\x00]*$";

/// A plausible email address: a non-empty local part, `@`, a non-empty
/// domain, no whitespace or control characters, at most 254 characters.
pub fn email(field: &str, value: &str) -> Result<(), ApiError> {
    let valid = value.chars().count() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value
            .rsplit_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            format!("`{field}` must be an email address like name@example.org"),
        ))
    }
}

/// Non-blank text of at most `max` characters, without NUL.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let length = value.chars().count();
    if value.trim().is_empty() || length > max || value.contains('\0') {
        return Err(ApiError::validation(
            field,
            format!("`{field}` must be 1 to {max} characters, not blank, without NUL"),
        ));
    }
    Ok(())
}

/// Lowercase letters and digits in dash-separated groups, 2 to 63 characters.
pub fn slug(field: &str, value: &str) -> Result<(), ApiError> {
    let groups_ok = value.split('-').all(|group| {
        !group.is_empty()
            && group
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    if groups_ok && (2..=63).contains(&value.len()) {
        Ok(())
    } else {
        Err(ApiError::validation(
            field,
            format!(
                "`{field}` must be 2-63 lowercase letters, digits and single dashes \
                 (pattern {SLUG_PATTERN})"
            ),
        ))
    }
}
