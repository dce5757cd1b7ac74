//! budget layer (under construction).
