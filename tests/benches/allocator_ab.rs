//! Compares builds of the `proportional` allocator component side by side, in one process, with the native
//! policy beside them:
//!
//! ```sh
//! cargo bench -p berth-tests --bench allocator_ab -- [--nodes N] [--frameworks F] [--calls C] [--rounds R] \
//!     before.wasm after.wasm
//! ```
//!
//! Build a variant with `cargo build --profile plugin --target wasm32-wasip2 -p berth-plugin-proportional`
//! and copy `target/wasm32-wasip2/plugin/berth_plugin_proportional.wasm` aside before the next change.
//! With no component given, it measures the one `berth` embeds. `BENCHMARKS.md` says why this, rather than
//! two runs of the suite, is how a change to the policy is judged.

use std::time::Duration;

use berth_tests::bench::allocation::{self, Matrix};
use berth_tests::bench::ms;

/// The allocator the `berth` binary uses, as in the suite.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const USAGE: &str =
    "usage: allocator_ab [--nodes N] [--frameworks F] [--calls C] [--rounds R] [COMPONENT.wasm...]";

fn main() {
    let (mut nodes, mut frameworks, mut calls, mut rounds) = (1_000, 1_000, 20, 15);
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--nodes" => &mut nodes,
            "--frameworks" => &mut frameworks,
            "--calls" => &mut calls,
            "--rounds" => &mut rounds,
            // `cargo bench` passes this to every bench target.
            "--bench" => continue,
            other if other.starts_with('-') => fail(&format!("unknown option {other}")),
            file => {
                files.push(file.to_string());
                continue;
            }
        };
        *target = match args.next().map(|v| v.parse::<u32>()) {
            Some(Ok(n)) if n > 0 => n,
            _ => fail(&format!("{arg} takes a positive number")),
        };
    }
    let builds: Vec<(String, Vec<u8>)> = if files.is_empty() {
        vec![("embedded".to_string(), berth_host::bundled::PROPORTIONAL.to_vec())]
    } else {
        files
            .iter()
            .map(|f| match std::fs::read(f) {
                Ok(bytes) => (f.clone(), bytes),
                Err(e) => fail(&format!("reading {f}: {e}")),
            })
            .collect()
    };

    eprintln!("{nodes} nodes × {frameworks} frameworks, {rounds} rounds of {calls} calls per build");
    let results = allocation::compare(Matrix { nodes, frameworks, rounds }, calls, &builds);
    let native = results[0].fastest;
    let ratio = |d: Duration| d.as_secs_f64() / native.as_secs_f64();
    println!("| build | fastest round, per call | median round | fastest / native fastest |");
    println!("|---|---:|---:|---:|");
    for build in &results {
        println!(
            "| {} | {:.3} ms | {:.3} ms | {:.2}× |",
            build.label,
            ms(build.fastest),
            ms(build.median),
            ratio(build.fastest)
        );
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}\n{USAGE}");
    std::process::exit(2);
}
