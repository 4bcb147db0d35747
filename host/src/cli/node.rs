//! `berth node …`.

use berth_proto::v1 as pb;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, status};
use super::output;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List nodes.
    Ls,
    /// Stop offering a node and move its tasks elsewhere.
    Drain {
        /// A node id, agent id or hostname.
        node: String,
    },
}

fn row(n: &pb::Node) -> Value {
    json!({
        "id": n.id, "hostname": n.hostname, "agent_id": n.agent_id, "state": n.state, "backend": n.backend,
        "total": output::resources(n.total.as_ref()), "available": output::resources(n.available.as_ref()),
        "tasks": n.active_tasks, "agent_running": n.agent_running_tasks,
        "attributes": n.attributes.iter().map(|a| format!("{}={}", a.name, a.value)).collect::<Vec<_>>(),
    })
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(&args.master, args.token.clone()).await?;
    match command {
        Command::Ls => {
            let list = client.nodes.list(pb::ListNodesRequest {}).await.map_err(status)?.into_inner();
            let rows: Vec<Value> = list.nodes.iter().map(row).collect();
            output::print(
                args.json,
                &[
                    ("ID", "id"),
                    ("HOSTNAME", "hostname"),
                    ("STATE", "state"),
                    ("BACKEND", "backend"),
                    ("TOTAL", "total"),
                    ("AVAILABLE", "available"),
                    ("TASKS", "tasks"),
                    ("AGENT_RUNNING", "agent_running"),
                    ("ATTRIBUTES", "attributes"),
                ],
                &rows,
            );
        }
        Command::Drain { node } => {
            let n = client.nodes.drain(pb::DrainNodeRequest { node }).await.map_err(status)?.into_inner();
            output::print_one(args.json, &row(&n));
        }
    }
    Ok(())
}
