//! The `berth` command line: one module per command. Errors end the process with one line on stderr and
//! exit code 1.

mod agent;
mod app;
mod client;
mod doctor;
mod framework;
mod new;
mod node;
mod output;
mod plugin;
mod sdk;
mod serve;
mod task;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "A cluster scheduler with WebAssembly policy plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: ClientArgs,
}

/// How client commands reach the master.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The master's API address; with several masters, any of them, or several comma-separated (the
    /// first that answers is used).
    #[arg(long, global = true, env = "BERTH_MASTER", default_value = "http://127.0.0.1:8080")]
    master: String,
    /// The operator token [default: the token file of the default data directory].
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// The CA that issued an `https://` master's certificate (PEM) [default: the system's roots].
    #[arg(long, global = true, env = "BERTH_CA")]
    ca: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master with a local agent and the bundled plugins (no configuration needed).
    Serve(serve::Args),
    /// Run an agent that joins a master.
    Agent(agent::Args),
    /// Check whether this machine is ready to run `berth serve` and to build plugins.
    Doctor(doctor::Args),
    /// Upload, list, swap and roll back plugins.
    #[command(subcommand)]
    Plugin(plugin::Command),
    /// Choose the allocator.
    #[command(subcommand)]
    Allocator(plugin::AllocatorCommand),
    /// Add, list, weigh and remove frameworks.
    #[command(subcommand)]
    Framework(framework::Command),
    /// List and drain nodes.
    #[command(subcommand)]
    Node(node::Command),
    /// List, kill and watch tasks.
    #[command(subcommand)]
    Task(task::Command),
    /// Deploy, list, scale and remove Marathon apps (the default framework).
    #[command(subcommand)]
    App(app::Command),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Doctor(args) => doctor::run(args, cli.client.json).await,
            Command::Plugin(command) => plugin::run(command, &cli.client).await,
            Command::Allocator(command) => plugin::run_allocator(command, &cli.client).await,
            Command::Framework(command) => framework::run(command, &cli.client).await,
            Command::Node(command) => node::run(command, &cli.client).await,
            Command::Task(command) => task::run(command, &cli.client).await,
            Command::App(command) => app::run(command, &cli.client).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging for the long-running commands: `$BERTH_LOG` (an `EnvFilter`, default `info`) to
/// stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Reads `--config`-style text: the literal, or the contents of the file after `@`.
pub fn text_or_file(value: &str) -> anyhow::Result<String> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}")),
        None => Ok(value.to_string()),
    }
}
