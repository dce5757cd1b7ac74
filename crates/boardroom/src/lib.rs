//! Boardroom service library.
