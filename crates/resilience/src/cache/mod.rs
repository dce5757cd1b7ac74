//! cache layer (under construction).
