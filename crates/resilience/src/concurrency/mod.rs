//! concurrency layer (under construction).
