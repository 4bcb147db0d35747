//! The `berth` binary: parse the command line, run the command (see `berth_host::cli`).

fn main() -> std::process::ExitCode {
    berth_host::cli::main()
}
