//! Per-service stack composition (under construction).
