//! metrics layer (under construction).
