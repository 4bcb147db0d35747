//! berth's benchmark suite: every figure of DESIGN.md's performance budget, measured against the real parts
//! and printed as one table with its target and its anchor (what the peers measured), then written to
//! `bench-results.md` at the workspace root (a run of some parts only: `bench-results-<parts>.md`).
//!
//! `cargo bench -p berth-tests --bench suite [-- PART...]` where PART is `allocation`, `hotswap`,
//! `placement` or `docker` (default: all; `docker` needs the engine). It builds the release `berth` first,
//! so one command measures the current source. `BENCHMARKS.md` explains each part and holds the latest run.

#![allow(unsafe_code)]

use std::fmt::Write as _;
use std::time::Duration;

use berth_tests::bench::allocation::{self, Matrix};
use berth_tests::bench::docker::{self, Launches};
use berth_tests::bench::ha;
use berth_tests::bench::hotswap::{self, HotSwap};
use berth_tests::bench::placement::{self, Placement};
use berth_tests::bench::{ms, quantile};

/// The allocator the `berth` binary uses (see `host/src/main.rs`), so that the allocation part measures the
/// master's call to the allocator plugin, and the native policy beside it, with the same `malloc`.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARTS: [&str; 5] = ["allocation", "hotswap", "placement", "docker", "ha"];

/// One line of the results table.
struct Row {
    figure: String,
    value: String,
    target: &'static str,
    /// Whether the target holds (None: a figure without a target of its own).
    met: Option<bool>,
    anchor: &'static str,
}

fn row(figure: impl Into<String>, value: impl Into<String>, target: &'static str, met: Option<bool>) -> Row {
    Row { figure: figure.into(), value: value.into(), target, met, anchor: "" }
}

impl Row {
    fn anchor(mut self, anchor: &'static str) -> Row {
        self.anchor = anchor;
        self
    }
}

fn main() {
    let mut parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if let Some(unknown) = parts.iter().find(|p| !PARTS.contains(&p.as_str())) {
        eprintln!("error: unknown part `{unknown}`; the parts are {}", PARTS.join(", "));
        std::process::exit(2);
    }
    if parts.is_empty() {
        parts = PARTS.iter().map(|p| p.to_string()).collect();
    }
    let wants = |part: &str| parts.iter().any(|p| p == part);
    // Read before the run, which can take minutes: the tree may change meanwhile.
    let source = source_revision();
    build_berth();

    let mut rows = Vec::new();
    if wants("allocation") {
        rows.extend(allocation_rows());
    }
    if wants("hotswap") {
        rows.extend(hotswap_rows());
    }
    if wants("placement") {
        rows.extend(placement_rows());
    }
    if wants("docker") {
        rows.extend(docker_rows());
    }
    if wants("ha") {
        rows.extend(ha_rows());
    }

    // A run of some parts writes a file of its own, so that it never replaces a full run's table.
    let full = PARTS.iter().all(|p| wants(p));
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}", machine());
    let _ = writeln!(out, "Source: {source}");
    let _ = writeln!(out, "Command: `cargo bench -p berth-tests --bench suite -- {}`", parts.join(" "));
    if !full {
        let _ =
            writeln!(out, "\nA partial run: only {}. A full run has no `--` arguments.", parts.join(", "));
    }
    out.push('\n');
    let _ = writeln!(out, "| figure | berth | target | met | anchor |");
    let _ = writeln!(out, "|---|---:|---|:-:|---|");
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let _ = writeln!(out, "| {} | {} | {} | {met} | {} |", r.figure, r.value, r.target, r.anchor);
    }
    println!("\n{out}");
    let file =
        if full { "bench-results.md".to_string() } else { format!("bench-results-{}.md", parts.join("-")) };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
    match std::fs::write(&path, &out) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn ha_rows() -> Vec<Row> {
    let setup = Placement { nodes: 1_000, apps: 20, instances: 1_000, clients: 4 };
    eprintln!("== ha: placement on redb and on a 3-member etcd, {setup:?}");
    let (redb, etcd) = ha::placement_side_by_side(setup);
    eprintln!("redb: {redb:?}\netcd: {etcd:?}");
    let what =
        format!("{}k simulated nodes, {} apps × {} tasks", setup.nodes / 1000, setup.apps, setup.instances);
    let kills = 20;
    eprintln!("== ha: {kills} kills of the leader, 3 masters on a 3-member etcd");
    let mut f = ha::failovers(kills);
    let (e50, e99) = (ms(quantile(&mut f.elected, 0.5)), ms(quantile(&mut f.elected, 0.99)));
    let (s50, s99) = (ms(quantile(&mut f.serving, 0.5)), ms(quantile(&mut f.serving, 0.99)));
    vec![
        row(
            format!("tasks placed per second, store on etcd / on redb ({what}; ratio etcd:redb)"),
            format!(
                "{:.0} / {:.0}/s ({:.2})",
                etcd.tasks_per_s,
                redb.tasks_per_s,
                etcd.tasks_per_s / redb.tasks_per_s
            ),
            "",
            None,
        ),
        row(
            format!("offer cycle p99 during placement, etcd / redb ({what})"),
            format!("{:.1} / {:.1} ms", etcd.cycle_p99_ms, redb.cycle_p99_ms),
            "≤ 50 ms",
            Some(etcd.cycle_p99_ms <= 50.0),
        ),
        row(
            format!(
                "failover: kill -9 of the leader → a new leader, p50 / p99 over {kills} kills (lease 3 s)"
            ),
            format!("{e50:.0} / {e99:.0} ms"),
            "≤ 5 s",
            Some(e99 <= 5000.0),
        )
        .anchor("Mesos documents 4-8 s (ZooKeeper session timeout)"),
        row(
            format!("failover: kill -9 → the new leader serving, agents back, p50 / p99 over {kills} kills"),
            format!("{s50:.0} / {s99:.0} ms"),
            "",
            None,
        ),
    ]
}

fn allocation_rows() -> Vec<Row> {
    eprintln!("== allocation: proportional, native vs wasm");
    let registry = allocation::registry();
    let mut rows = Vec::new();
    for nodes in [1_000, 5_000, 10_000] {
        for frameworks in [100, 1_000] {
            let rounds = if nodes * frameworks >= 5_000_000 { 15 } else { 31 };
            let c = allocation::run(&registry, Matrix { nodes, frameworks, rounds });
            eprintln!("{c:?}");
            let setup = format!("{}k nodes × {frameworks} frameworks", nodes / 1000);
            let anchor = if nodes == 10_000 && frameworks == 1_000 {
                "Mesos 1.8 allocator: ~1.1 s per cycle at 10k agents × 1k frameworks"
            } else {
                ""
            };
            rows.push(
                row(
                    format!(
                        "allocation cycle, wasm, {setup} ({} tasks of demand, {} grants, {} nodes changed \
                         per cycle; whole view every cycle: {:.1} ms)",
                        c.demand,
                        c.grants,
                        c.delta_nodes,
                        ms(c.wasm_whole)
                    ),
                    format!("{:.1} ms", ms(c.wasm)),
                    "≤ 50 ms",
                    Some(c.wasm <= Duration::from_millis(50)),
                )
                .anchor(anchor),
            );
            rows.push(row(
                format!("wasm / native, {setup} (native {:.1} ms)", ms(c.native)),
                format!("{:.2}×", c.ratio()),
                "≤ 1.3×",
                Some(c.ratio() <= 1.3),
            ));
        }
    }
    rows
}

fn hotswap_rows() -> Vec<Row> {
    eprintln!("== hot swap of the allocator under load");
    let s =
        hotswap::run(HotSwap { nodes: 1_000, frameworks: 100, phase: Duration::from_secs(10), swaps: 20 });
    eprintln!("{s:?}");
    let setup = format!("1k nodes × 100 frameworks, {} swaps", s.swaps);
    vec![
        row(
            format!(
                "extra cycle p99 while swapping ({setup}; p99 {:.2} → {:.2} ms, p50 {:.2} → {:.2} ms)",
                ms(s.baseline_p99),
                ms(s.swapping_p99),
                ms(s.baseline_p50),
                ms(s.swapping_p50)
            ),
            format!("{:.2} ms", ms(s.extra_p99())),
            "",
            None,
        ),
        row(
            format!("swap pause, p99 ({setup}; slowest {:.3} ms)", ms(s.pause_max)),
            format!("{:.3} ms", ms(s.pause_p99)),
            "≤ 1 ms",
            Some(s.pause_p99 <= Duration::from_millis(1)),
        ),
        row(
            format!(
                "failed allocation calls while swapping ({} + {} calls, {} versions answered)",
                s.baseline_cycles, s.swapping_cycles, s.versions_seen
            ),
            s.failed_calls.to_string(),
            "0",
            Some(s.failed_calls == 0),
        ),
    ]
}

fn placement_rows() -> Vec<Row> {
    let setup = Placement { nodes: 10_000, apps: 100, instances: 1_000, clients: 4 };
    eprintln!("== placement: {setup:?}");
    let master = placement::master(setup.nodes);
    let p = placement::run(&master, setup);
    eprintln!("{p:?}");
    let (master_ms, process_ms) = p.cpu_ms_per_1000();
    let what = format!(
        "{}k simulated nodes, {} apps × {} tasks, marathon + proportional",
        setup.nodes / 1000,
        setup.apps,
        setup.instances
    );
    vec![
        row(
            format!(
                "tasks placed per second ({what}; {} tasks in {:.1} s)",
                p.tasks,
                p.elapsed.as_secs_f64()
            ),
            format!("{:.0}/s", p.tasks_per_s),
            "≥ 20,000/s",
            Some(p.tasks_per_s >= 20_000.0),
        )
        .anchor("kube-scheduler scheduler_perf floor: 810 pods/s at 5k nodes; Nomad C1M: 3,750 containers/s"),
        row(
            format!("submit → RUNNING p50 / p99 ({what})"),
            format!("{} / {} ms", p.p50_ms, p.p99_ms),
            "",
            None,
        ),
        row(
            format!("offer cycle p50 / p99 during placement ({} cycles that placed)", p.cycles),
            format!("{:.1} / {:.1} ms", p.cycle_p50_ms, p.cycle_p99_ms),
            "≤ 50 ms",
            Some(p.cycle_p99_ms <= 50.0),
        ),
        row(
            format!(
                "CPU per 1,000 tasks placed: the master's thread / the whole process (store writer, API and \
                 simulated agents included; {:.1} / {:.1} s in all)",
                p.master_cpu.as_secs_f64(),
                p.process_cpu.as_secs_f64()
            ),
            format!("{:.0} / {:.0} ms", master_ms, process_ms),
            "",
            None,
        ),
        row(
            format!(
                "master RSS with {}k nodes + {} tasks (idle with the nodes: {:.0} MiB, peak {:.0} MiB)",
                setup.nodes / 1000,
                p.tasks,
                p.idle_rss_mib,
                p.peak_rss_mib
            ),
            format!("{:.0} MiB", p.rss_mib),
            "≤ 300 MB",
            Some(p.rss_mib * 1.048_576 <= 300.0),
        ),
    ]
}

fn docker_rows() -> Vec<Row> {
    eprintln!("== docker: submit → RUNNING vs raw create+start");
    let mut bench = docker::Bench::start();
    let mut rows = Vec::new();
    // Five rounds of fifty: with three, the ratio swung 0.88×-1.14× between runs on one machine.
    for (n, rounds) in [(1, 15), (50, 5)] {
        let l: Launches = bench.run(n, rounds);
        eprintln!("{l:?}");
        rows.push(row(
            format!(
                "Docker submit → RUNNING vs raw create+start, {n} at once, p50, both to the engine's start event ({:.0} vs {:.0} ms; raw to the start call's reply {:.0} ms; slowest {:.2}×)",
                l.berth_p50,
                l.raw_p50,
                l.raw_reply_p50,
                l.slowest_ratio()
            ),
            format!("{:.2}×", l.p50_ratio()),
            "≤ 1.10×",
            Some(l.p50_ratio() <= 1.10),
        ));
        rows.push(row(
            format!(
                "Docker, berth's share before the engine: submit → STARTING (the launch reaching the agent), {n} at once, p50 (slowest {:.0} ms)",
                l.berth_dispatch_slowest
            ),
            format!("{:.0} ms", l.berth_dispatch_p50),
            "",
            None,
        ));
    }
    rows
}

/// CPU model and count, memory, kernel, toolchain and engine, as the table's first line.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split(':').nth(1)))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let output =
        |cmd: &str, args: &[&str]| stdout_of(cmd, args).unwrap_or_else(|| format!("{cmd}: unavailable"));
    format!(
        "{cpus} × {model}, {mem_gib:.0} GiB, Linux {}, {}, Docker Engine {}",
        output("uname", &["-r"]),
        output("rustc", &["--version"]),
        output("docker", &["version", "--format", "{{.Server.Version}}"]),
    )
}

/// What a command printed, trimmed; None if it could not run, failed or printed nothing.
fn stdout_of(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The commit measured, `-modified` if tracked files differ from it, and the binary if `BERTH_BIN` named
/// one (which need not be built from that source).
fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let tree = stdout_of("git", &["-C", dir, "describe", "--always", "--dirty=-modified"])
        .map_or("unknown (not a git checkout)".to_string(), |c| format!("commit {c}"));
    match std::env::var("BERTH_BIN") {
        Ok(binary) => format!("{tree}; berth: BERTH_BIN={binary}"),
        Err(_) => tree,
    }
}

/// Builds the release `berth` and points the harness at it, so one command measures the current source.
/// `BERTH_BIN` set beforehand skips this and measures that binary (a profiling build, say).
fn build_berth() {
    if std::env::var_os("BERTH_BIN").is_some() {
        return;
    }
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "--release", "-p", "berth-host", "--bin", "berth"]);
    // Run by `cargo bench`, rustup has chosen the toolchain for everything below. Run on its own (a suite
    // binary copied aside to compare builds), the `rustc` that cargo starts would pick the toolchain of each
    // dependency's directory, and some pin one (redb: 1.90, not installed here). Build with the toolchain
    // that built the suite.
    if std::env::var_os("RUSTUP_TOOLCHAIN").is_none()
        && let Some(toolchain) = option_env!("RUSTUP_TOOLCHAIN")
    {
        cargo.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    let status = cargo.status().expect("running cargo");
    assert!(status.success(), "building the release berth binary failed");
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(std::path::Path::parent).unwrap().join("berth");
    // SAFETY: single-threaded here, before any other thread starts.
    unsafe { std::env::set_var("BERTH_BIN", bin) };
}
