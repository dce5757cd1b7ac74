//! retry layer (under construction).
