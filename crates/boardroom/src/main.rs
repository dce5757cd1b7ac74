//! The `boardroom` binary: see [`boardroom::cli`].
//!
//! The global allocator is mimalloc: a cached read allocates and frees a
//! few dozen small blocks (headers, JSON, futures), and glibc's malloc and
//! free (with its chunk consolidation) were ≈ 12 % of that request's CPU in
//! perf; mimalloc's thread-local free lists make them a fraction of it.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    boardroom::cli::main()
}
