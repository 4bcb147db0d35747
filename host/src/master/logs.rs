//! Task output: the master relays a client's request to the agent that runs (or ran) the task and the
//! agent's chunks back, so agents need no inbound port.

use berth_proto::v1 as pb;
use pb::master_message::Message as ToAgent;
use tokio::sync::mpsc;

use super::core::Master;
use super::types::{ApiError, TaskKey};

impl Master {
    /// Finds a task by id: within `framework` when given, else in every framework (an id two frameworks
    /// share must be qualified).
    pub(super) fn resolve_task(&self, framework: &str, task_id: &str) -> Result<TaskKey, ApiError> {
        if !framework.is_empty() {
            let id = self.frameworks.find(framework)?;
            let key = (id, task_id.to_string());
            return self.tasks.contains_key(&key).then_some(key).ok_or_else(|| {
                ApiError::NotFound(format!("framework `{framework}` has no task `{task_id}`"))
            });
        }
        let matches: Vec<TaskKey> = self.tasks.keys().filter(|(_, t)| t == task_id).cloned().collect();
        match matches.len() {
            0 => Err(ApiError::NotFound(format!("no task `{task_id}`"))),
            1 => Ok(matches.into_iter().next().expect("one")),
            _ => Err(ApiError::InvalidArgument(format!(
                "several frameworks have a task `{task_id}`: name the framework"
            ))),
        }
    }

    /// Opens a stream of a task's output.
    pub(super) fn open_logs(
        &mut self,
        framework: &str,
        task_id: &str,
        follow: bool,
        tail: u32,
    ) -> Result<mpsc::Receiver<pb::LogChunk>, ApiError> {
        let key = self.resolve_task(framework, task_id)?;
        let node = self.tasks[&key].node;
        if self.nodes.get(node).is_none_or(|n| n.connection.is_none()) {
            return Err(ApiError::Unavailable(format!("the agent of task `{task_id}` is not connected")));
        }
        let (tx, rx) = mpsc::channel(super::streams::CHUNKS_BUFFERED);
        let request_id = self.logs.open(node, tx).ok_or_else(|| {
            ApiError::Unavailable(format!(
                "{} log streams are open, the most there may be: try again when one ends",
                super::streams::MAX_STREAMS
            ))
        })?;
        let framework = self.frameworks.name(key.0).to_string();
        self.send_to_node(
            node,
            ToAgent::Logs(pb::LogsRequest { request_id, framework, task_id: key.1, follow, tail }),
        );
        Ok(rx)
    }

    /// A chunk from the agent on `node`.
    pub(super) fn log_chunk(&mut self, node: u32, message: pb::AgentLogChunk) {
        let id = message.request_id;
        let Some(chunk) = message.chunk else { return };
        let eof = chunk.eof;
        if self.logs.deliver(id, chunk) == super::streams::Delivery::Closed && !eof {
            // The client went away or did not keep up: the agent stops reading the output.
            self.send_to_node(node, ToAgent::CancelLogs(pb::CancelLogs { request_id: id }));
        }
    }
}
