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
    /// Set what a node lets tasks do. Only the operator decides this: agents cannot claim it for themselves.
    Allow {
        /// A node id, agent id or hostname.
        node: String,
        /// Privileged containers.
        #[arg(long, value_name = "BOOL")]
        privileged: Option<bool>,
        /// Host paths mounted into containers.
        #[arg(long, value_name = "BOOL")]
        host_mounts: Option<bool>,
        /// The `host` network (Marathon's default; `container:` networks are refused everywhere).
        #[arg(long, value_name = "BOOL")]
        host_network: Option<bool>,
    },
}

fn row(n: &pb::Node) -> Value {
    json!({
        "id": n.id, "hostname": n.hostname, "agent_id": n.agent_id, "state": n.state, "backend": n.backend,
        "total": output::resources(n.total.as_ref()), "available": output::resources(n.available.as_ref()),
        "tasks": n.active_tasks, "agent_running": n.agent_running_tasks,
        "attributes": n.attributes.iter().map(|a| format!("{}={}", a.name, a.value)).collect::<Vec<_>>(),
        "allow": allowed(n),
    })
}

fn allowed(n: &pb::Node) -> String {
    let granted = [
        (n.allow_privileged, "privileged"),
        (n.allow_host_mounts, "host-mounts"),
        (n.allow_host_network, "host-network"),
    ];
    let names: Vec<&str> = granted.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
    if names.is_empty() { "-".into() } else { names.join(",") }
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args).await?;
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
                    ("ALLOW", "allow"),
                ],
                &rows,
            );
        }
        Command::Drain { node } => {
            let n = client.nodes.drain(pb::DrainNodeRequest { node }).await.map_err(status)?.into_inner();
            output::print_one(args.json, &row(&n));
        }
        Command::Allow { node, privileged, host_mounts, host_network } => {
            if privileged.is_none() && host_mounts.is_none() && host_network.is_none() {
                anyhow::bail!(
                    "nothing to change: give --privileged, --host-mounts or --host-network (true or false)"
                );
            }
            let request = pb::SetNodePolicyRequest {
                node,
                allow_privileged: privileged,
                allow_host_mounts: host_mounts,
                allow_host_network: host_network,
            };
            let n = client.nodes.set_policy(request).await.map_err(status)?.into_inner();
            output::print_one(args.json, &row(&n));
        }
    }
    Ok(())
}
