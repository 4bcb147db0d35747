//! `berth framework …`.

use berth_proto::v1 as pb;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, status};
use super::output;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Add a framework: an instance of a framework plugin with its own role, weight and data.
    Add {
        name: String,
        /// The framework plugin to run.
        #[arg(long)]
        plugin: String,
        #[arg(long, default_value = "*")]
        role: String,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        /// Configuration for the plugin's `init`: the text, or `@FILE`.
        #[arg(long)]
        config: Option<String>,
    },
    /// List frameworks with their shares.
    Ls,
    /// Change a framework's weight.
    Weight { name: String, weight: f64 },
    /// Stop offers to a framework.
    Suppress { name: String },
    /// Resume offers to a framework (and clear its decline filters).
    Revive { name: String },
    /// Remove a framework: its tasks are killed and its data deleted.
    Rm { name: String },
}

fn row(f: &pb::Framework) -> Value {
    json!({
        "name": f.name, "plugin": format!("{}@v{}", f.plugin, f.plugin_version), "role": f.role, "weight": f.weight,
        "suppressed": f.suppressed, "tasks": f.active_tasks, "allocated": output::resources(f.allocated.as_ref()),
        "share": format!("{:.3}", f.share),
    })
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args).await?;
    let c = &mut client.frameworks;
    let one = match command {
        Command::Add { name, plugin, role, weight, config } => {
            let config = match config {
                Some(c) => super::text_or_file(&c)?,
                None => String::new(),
            };
            c.add(pb::AddFrameworkRequest { name, plugin, role, weight, config })
                .await
                .map_err(status)?
                .into_inner()
        }
        Command::Ls => {
            let list = c.list(pb::ListFrameworksRequest {}).await.map_err(status)?.into_inner();
            let rows: Vec<Value> = list.frameworks.iter().map(row).collect();
            output::print(
                args.json,
                &[
                    ("NAME", "name"),
                    ("PLUGIN", "plugin"),
                    ("ROLE", "role"),
                    ("WEIGHT", "weight"),
                    ("SUPPRESSED", "suppressed"),
                    ("TASKS", "tasks"),
                    ("ALLOCATED", "allocated"),
                    ("SHARE", "share"),
                ],
                &rows,
            );
            return Ok(());
        }
        Command::Weight { name, weight } => {
            c.set_weight(pb::SetWeightRequest { name, weight }).await.map_err(status)?.into_inner()
        }
        Command::Suppress { name } => {
            c.suppress(pb::FrameworkRequest { name }).await.map_err(status)?.into_inner()
        }
        Command::Revive { name } => {
            c.revive(pb::FrameworkRequest { name }).await.map_err(status)?.into_inner()
        }
        Command::Rm { name } => {
            let r = c.remove(pb::FrameworkRequest { name: name.clone() }).await.map_err(status)?.into_inner();
            output::print_one(args.json, &json!({ "removed": name, "killed_tasks": r.killed_tasks }));
            return Ok(());
        }
    };
    output::print_one(args.json, &row(&one));
    Ok(())
}
