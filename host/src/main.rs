//! The `berth` binary: parse the command line, run the command (see `berth_host::cli`).

/// jemalloc: the master allocates and frees per task across threads (plugin calls, store writes, agent
/// messages), where glibc's allocator took half of the master thread's time under load and held more
/// memory (measured side by side in BENCHMARKS.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    berth_host::cli::main()
}
