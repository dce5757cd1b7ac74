//! breaker layer (under construction).
