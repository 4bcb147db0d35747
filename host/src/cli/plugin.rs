//! `berth plugin …` and `berth allocator use`.

use std::path::PathBuf;

use anyhow::Context as _;
use berth_proto::v1 as pb;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, status};
use super::output;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Upload a plugin (a WebAssembly component) and make it active.
    Load {
        /// `allocator` or `framework`.
        #[arg(long)]
        kind: String,
        /// The plugin's name.
        name: String,
        /// The component (`.wasm`).
        file: PathBuf,
        #[command(flatten)]
        options: LoadOptions,
    },
    /// Upload a new version of a plugin and switch to it (a hot swap).
    Swap {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        options: LoadOptions,
    },
    /// List plugins, their versions and call figures.
    Ls,
    /// Make an uploaded version active again.
    Activate { name: String, version: u32 },
    /// Go back to the version that was active before the current one.
    Rollback { name: String },
    /// Remove a plugin that nothing uses.
    Rm { name: String },
    /// Create a plugin project (Rust, Python or C) that builds and loads as it is.
    New(super::new::Args),
}

#[derive(clap::Args, Debug)]
pub struct LoadOptions {
    /// Configuration for `init` (allocators): the text, or `@FILE`.
    #[arg(long)]
    config: Option<String>,
    /// Memory budget per instance (all its memories and tables), MiB [default: the master's].
    #[arg(long)]
    memory_mib: Option<u64>,
    /// Deadline per call, milliseconds [default: the master's].
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Upload without activating.
    #[arg(long)]
    inactive: bool,
}

#[derive(clap::Subcommand, Debug)]
pub enum AllocatorCommand {
    /// Make this allocator plugin decide allocation from the next cycle on.
    Use { name: String },
}

fn version_row(v: &pb::PluginVersion) -> Value {
    let stats = v.stats.unwrap_or_default();
    json!({
        "name": v.name, "kind": v.kind, "version": v.version, "active": v.active,
        "sha256": v.sha256.get(..12).unwrap_or(&v.sha256), "size": v.size,
        "compile_ms": v.compile_us as f64 / 1000.0, "from_cache": v.from_cache,
        "calls": stats.calls, "traps": stats.traps, "deadline_exceeded": stats.deadline_exceeded,
        "memory_exceeded": stats.memory_exceeded, "limits_exceeded": stats.limits_exceeded,
        "violations": stats.traps + stats.deadline_exceeded + stats.memory_exceeded + stats.limits_exceeded,
        "p50_us": stats.p50_us, "p99_us": stats.p99_us,
        "peak_memory_mib": stats.peak_memory_bytes as f64 / (1024.0 * 1024.0),
        "rolled_back": v.rolled_back,
    })
}

async fn upload(
    client: &mut Client,
    name: String,
    kind: String,
    file: PathBuf,
    options: LoadOptions,
) -> anyhow::Result<pb::PluginVersion> {
    let component = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let config = match &options.config {
        Some(c) => super::text_or_file(c)?,
        None => String::new(),
    };
    let request = pb::UploadPluginRequest {
        name,
        kind,
        component,
        config,
        limits: Some(pb::PluginLimits {
            memory_mib: options.memory_mib.unwrap_or(0),
            deadline_ms: options.deadline_ms.unwrap_or(0),
        }),
        inactive: options.inactive,
    };
    Ok(client.plugins.upload(request).await.map_err(status)?.into_inner())
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let command = match command {
        Command::New(new) => return super::new::run(new),
        other => other,
    };
    let mut client = Client::connect(args).await?;
    let columns: &[output::Column] = &[
        ("NAME", "name"),
        ("KIND", "kind"),
        ("VERSION", "version"),
        ("ACTIVE", "active"),
        ("SHA256", "sha256"),
        ("SIZE", "size"),
        ("CALLS", "calls"),
        ("TRAPS", "traps"),
        ("DEADLINE", "deadline_exceeded"),
        ("MEMORY", "memory_exceeded"),
        ("LIMITS", "limits_exceeded"),
        ("P50_US", "p50_us"),
        ("P99_US", "p99_us"),
        ("PEAK_MIB", "peak_memory_mib"),
        ("ROLLED_BACK", "rolled_back"),
    ];
    match command {
        Command::Load { kind, name, file, options } => {
            let v = upload(&mut client, name, kind, file, options).await?;
            output::print_one(args.json, &version_row(&v));
        }
        Command::Swap { name, file, options } => {
            let list = client.plugins.list(pb::ListPluginsRequest {}).await.map_err(status)?.into_inner();
            let kind =
                list.plugins.iter().find(|p| p.name == name).map(|p| p.kind.clone()).with_context(|| {
                    format!("no plugin named `{name}` to swap; use `berth plugin load` for a new one")
                })?;
            let v = upload(&mut client, name, kind, file, options).await?;
            output::print_one(args.json, &version_row(&v));
        }
        Command::Ls => {
            let list = client.plugins.list(pb::ListPluginsRequest {}).await.map_err(status)?.into_inner();
            let rows: Vec<Value> =
                list.plugins.iter().flat_map(|p| p.versions.iter().map(version_row)).collect();
            output::print(args.json, columns, &rows);
        }
        Command::Activate { name, version } => {
            let v = client
                .plugins
                .activate(pb::ActivatePluginRequest { name, version })
                .await
                .map_err(status)?
                .into_inner();
            output::print_one(args.json, &version_row(&v));
        }
        Command::Rollback { name } => {
            let v = client
                .plugins
                .rollback(pb::RollbackPluginRequest { name })
                .await
                .map_err(status)?
                .into_inner();
            output::print_one(args.json, &version_row(&v));
        }
        Command::Rm { name } => {
            client.plugins.remove(pb::RemovePluginRequest { name: name.clone() }).await.map_err(status)?;
            output::print_one(args.json, &json!({ "removed": name }));
        }
        Command::New(_) => unreachable!("handled above"),
    }
    Ok(())
}

pub async fn run_allocator(command: AllocatorCommand, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args).await?;
    match command {
        AllocatorCommand::Use { name } => {
            let r = client
                .plugins
                .use_allocator(pb::UseAllocatorRequest { name: name.clone() })
                .await
                .map_err(status)?;
            output::print_one(args.json, &json!({ "allocator": name, "previous": r.into_inner().previous }));
        }
    }
    Ok(())
}
