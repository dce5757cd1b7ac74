//! The `boardroom` binary: see [`boardroom::cli`].

fn main() -> std::process::ExitCode {
    boardroom::cli::main()
}
