//! Resilience layers for `tower` services.
