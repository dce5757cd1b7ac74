//! The `boardroom` binary.
fn main() {}
