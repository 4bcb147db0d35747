//! The `berth` binary: parse the command line, run the command (see `berth_host::cli`).

/// jemalloc: the master allocates and frees per task across threads (plugin calls, store writes, agent
/// messages), where glibc's allocator took half of the master thread's time under load and held more
/// memory (measured side by side in BENCHMARKS-HISTORY.md).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read by jemalloc itself at its first allocation: a daemon that launches in bursts
/// should hand freed pages back to the system within a second, from a background thread rather than on
/// the master's allocations. `$_RJEM_MALLOC_CONF` still overrides them.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer that jemalloc reads as `const char *malloc_conf`.
#[cfg(not(target_env = "msvc"))]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points to a string literal, which is immutable and lives for the whole program.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code)]
unsafe impl Sync for MallocConf {}

fn main() -> std::process::ExitCode {
    berth_host::cli::main()
}
