//! `berth task …`.

use berth_proto::v1 as pb;
use futures::StreamExt;
use serde_json::{Value, json};

use super::ClientArgs;
use super::client::{Client, status};
use super::output;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List tasks.
    Ls {
        #[command(flatten)]
        filter: Filter,
    },
    /// Kill a task.
    Kill {
        task: String,
        /// The task's framework (needed only when several frameworks have a task of that id).
        #[arg(long)]
        framework: Option<String>,
        /// Time between SIGTERM and SIGKILL, milliseconds [default: the task's own].
        #[arg(long)]
        grace_ms: Option<u32>,
    },
    /// Print a task's stdout and stderr.
    Logs {
        task: String,
        /// The task's framework (needed only when several frameworks have a task of that id).
        #[arg(long)]
        framework: Option<String>,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
        /// Start with the last N lines.
        #[arg(long)]
        tail: Option<u32>,
    },
    /// Print status updates as they happen (after the current state of each task).
    Watch {
        #[command(flatten)]
        filter: Filter,
        /// Only new updates.
        #[arg(long)]
        updates_only: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct Filter {
    #[arg(long)]
    framework: Option<String>,
    /// A task state (`running`, `failed`, …); repeatable.
    #[arg(long = "state")]
    states: Vec<String>,
    /// A node id, agent id or hostname.
    #[arg(long)]
    node: Option<String>,
}

impl From<Filter> for pb::TaskFilter {
    fn from(f: Filter) -> pb::TaskFilter {
        pb::TaskFilter {
            framework: f.framework.unwrap_or_default(),
            states: f.states,
            node: f.node.unwrap_or_default(),
        }
    }
}

fn state(s: &pb::TaskStatus) -> String {
    s.state().as_str_name().trim_start_matches("TASK_STATE_").to_ascii_lowercase()
}

fn reason(s: &pb::TaskStatus) -> String {
    match s.reason() {
        pb::TaskReason::None => String::new(),
        r => r.as_str_name().trim_start_matches("TASK_REASON_").to_ascii_lowercase().replace('_', "-"),
    }
}

/// A task's sampled use next to its limits: `cpu 0.12/1 mem 34/256 MiB`, or `-` before the first sample.
fn usage(t: &pb::Task) -> String {
    let (Some(u), Some(r)) = (&t.usage, &t.resources) else { return "-".into() };
    format!(
        "cpu {:.2}/{} mem {:.0}/{} MiB",
        u.cpus,
        r.milli_cpus as f64 / 1000.0,
        u.mem_bytes as f64 / (1024.0 * 1024.0),
        r.mem_mib
    )
}

fn status_row(s: &pb::TaskStatus) -> Value {
    json!({
        "framework": s.framework, "task": s.task_id, "state": state(s), "reason": reason(s), "message": s.message,
        "healthy": s.healthy, "exit_code": s.exit_code, "hostname": s.hostname, "agent": s.agent_id,
        "ports": s.ports.iter().map(|p| if p.begin == p.end { p.begin.to_string() } else { format!("{}-{}", p.begin, p.end) }).collect::<Vec<_>>(),
        "timestamp_ms": s.timestamp_ms,
    })
}

pub async fn run(command: Command, args: &ClientArgs) -> anyhow::Result<()> {
    let mut client = Client::connect(args).await?;
    match command {
        Command::Ls { filter } => {
            let list = client
                .tasks
                .list(pb::ListTasksRequest { filter: Some(filter.into()) })
                .await
                .map_err(status)?
                .into_inner();
            let rows: Vec<Value> = list
                .tasks
                .iter()
                .map(|t| {
                    let mut row = status_row(t.status.as_ref().expect("tasks carry a status"));
                    row["name"] = json!(t.name);
                    row["image"] = json!(t.image);
                    row["resources"] = json!(output::resources(t.resources.as_ref()));
                    row["usage"] = json!(usage(t));
                    row["usage_sample"] = json!(t.usage.as_ref().map(|u| json!({
                        "cpus": u.cpus, "mem_bytes": u.mem_bytes, "timestamp_ms": u.timestamp_ms,
                    })));
                    row
                })
                .collect();
            output::print(
                args.json,
                &[
                    ("FRAMEWORK", "framework"),
                    ("TASK", "task"),
                    ("STATE", "state"),
                    ("REASON", "reason"),
                    ("HEALTHY", "healthy"),
                    ("HOST", "hostname"),
                    ("PORTS", "ports"),
                    ("RESOURCES", "resources"),
                    ("USAGE", "usage"),
                    ("IMAGE", "image"),
                ],
                &rows,
            );
        }
        Command::Kill { task, framework, grace_ms } => {
            client
                .tasks
                .kill(pb::KillTaskRequest {
                    framework: framework.unwrap_or_default(),
                    task_id: task.clone(),
                    grace_period_ms: grace_ms.unwrap_or(0),
                })
                .await
                .map_err(status)?;
            output::print_one(args.json, &json!({ "killing": task }));
        }
        Command::Logs { task, framework, follow, tail } => {
            use std::io::Write as _;
            let mut stream = client
                .tasks
                .logs(pb::TaskLogsRequest {
                    framework: framework.unwrap_or_default(),
                    task_id: task,
                    follow,
                    tail: tail.unwrap_or(0),
                })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(status)?;
                if chunk.eof {
                    if !chunk.error.is_empty() {
                        anyhow::bail!("{}", chunk.error);
                    }
                    break;
                }
                if chunk.stream() == pb::log_chunk::Stream::Stderr {
                    std::io::stderr().write_all(&chunk.data)?;
                } else {
                    std::io::stdout().write_all(&chunk.data)?;
                    std::io::stdout().flush()?;
                }
            }
        }
        Command::Watch { filter, updates_only } => {
            let mut stream = client
                .tasks
                .watch(pb::WatchTasksRequest { filter: Some(filter.into()), updates_only })
                .await
                .map_err(status)?
                .into_inner();
            while let Some(update) = stream.next().await {
                let update = update.map_err(status)?;
                let row = status_row(&update);
                if args.json {
                    println!("{}", serde_json::to_string(&row)?);
                } else {
                    println!(
                        "{} {}/{} {}{}{}",
                        update.timestamp_ms,
                        update.framework,
                        update.task_id,
                        state(&update),
                        if reason(&update).is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", reason(&update))
                        },
                        if update.message.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", update.message)
                        },
                    );
                }
            }
        }
    }
    Ok(())
}
