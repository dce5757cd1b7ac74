//! Registry of named layer handles (under construction).
