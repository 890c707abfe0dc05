//! The `medialink` binary: everything lives in the library; see `cli`.
fn main() -> std::process::ExitCode {
    medialink::cli::main()
}
