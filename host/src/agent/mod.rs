//! The agent: joins a master, registers its node and the tasks it runs, sends heartbeats, relays launches
//! and kills to its backend, and forwards the backend's status updates until the master acknowledges
//! them (resending after a reconnect or a timeout).
//!
//! It does not decide anything: the master places tasks, the backend runs them.

mod assemble;
mod backend;
pub mod container;
pub mod docker;
mod health;
pub mod simulated;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_proto::v1 as pb;
use futures::StreamExt;
use pb::agent_message::Message as ToMaster;
use pb::master_message::Message as FromMaster;
use tokio::sync::{mpsc, watch};

pub use assemble::{
    AgentSettings, Assembled, BackendKind, agent_id, assemble, machine_hostname, offered_memory,
};
pub use backend::{Backend, StatusSender};

use crate::master::{AgentConnection, MasterHandle};

/// Unacknowledged status updates are sent again after this long.
const RESEND_AFTER: Duration = Duration::from_secs(5);
/// How long to wait for `Registered` after `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// What a backend logs when asked to launch a task it already runs (and ignores the launch).
pub const DUPLICATE_LAUNCH: &str = "a launch of a task this node already runs was ignored";

/// Who the agent is and what its node offers.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Stable across restarts (kept in the agent's work directory).
    pub agent_id: String,
    pub hostname: String,
    pub resources: pb::Resources,
    pub attributes: Vec<pb::Attribute>,
    pub allow_privileged: bool,
    pub allow_host_mounts: bool,
    pub allow_host_network: bool,
    /// Where the credential the master issues at the first registration is kept (`None`: in memory only).
    pub credential_file: Option<std::path::PathBuf>,
}

/// How the agent reaches its master.
#[derive(Clone, Debug)]
pub enum Transport {
    /// The master in this process (`berth serve`).
    Local(MasterHandle),
    /// A master over gRPC, with the agent token.
    Remote {
        /// e.g. `http://10.0.0.1:8080`; with several masters, all of them (any one will do: standbys
        /// proxy to the leader), tried in turn.
        endpoints: Vec<String>,
        /// Sent as `authorization: Bearer <token>`.
        token: Option<String>,
        /// For an `https://` master: the CA to verify it with, and a client certificate to present.
        tls: crate::api::tls::ClientTls,
    },
}

/// One connection to the master.
enum Link {
    Local(AgentConnection),
    Remote { tx: mpsc::UnboundedSender<pb::AgentMessage>, rx: tonic::Streaming<pb::MasterMessage> },
}

impl Link {
    /// Opens a link to the master; `attempt` picks which of several addresses.
    async fn open(transport: &Transport, attempt: usize) -> anyhow::Result<Link> {
        match transport {
            Transport::Local(handle) => Ok(Link::Local(handle.connect_local_agent()?)),
            Transport::Remote { endpoints, token, tls } => {
                let endpoint =
                    endpoints.get(attempt % endpoints.len().max(1)).context("no master address")?;
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .with_context(|| format!("invalid master address `{endpoint}`"))?;
                let channel = tls
                    .apply(endpoint, channel)?
                    .connect_timeout(Duration::from_secs(5))
                    // A master that stops answering (frozen, or its machine gone without a reset) is left
                    // within 5 s, well inside the agent timeout, for the next address.
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(3))
                    .connect()
                    .await
                    .with_context(|| format!("connecting to the master at {endpoint}"))?;
                let (tx, outbound) = mpsc::unbounded_channel();
                let mut request =
                    tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(outbound));
                if let Some(token) = token {
                    request.metadata_mut().insert(
                        "authorization",
                        format!("Bearer {token}")
                            .parse()
                            .context("the agent token is not a valid header value")?,
                    );
                }
                let rx = pb::agent_service_client::AgentServiceClient::new(channel)
                    .join(request)
                    .await
                    .context("the master refused the agent")?
                    .into_inner();
                Ok(Link::Remote { tx, rx })
            }
        }
    }

    fn send(&self, message: ToMaster) -> bool {
        let message = pb::AgentMessage { message: Some(message) };
        match self {
            Link::Local(connection) => connection.sender.send(message).is_ok(),
            Link::Remote { tx, .. } => tx.send(message).is_ok(),
        }
    }

    async fn recv(&mut self) -> Option<FromMaster> {
        match self {
            Link::Local(connection) => connection.outbound.recv().await.and_then(|m| m.message),
            Link::Remote { rx, .. } => match rx.next().await {
                Some(Ok(m)) => m.message,
                Some(Err(status)) => {
                    tracing::warn!(target: "berth.agent", %status, "the master closed the connection");
                    None
                }
                None => None,
            },
        }
    }
}

/// Status updates sent and not yet acknowledged, in the order they happened.
#[derive(Default)]
struct Unacked {
    by_seq: BTreeMap<u64, (pb::StatusUpdate, Instant)>,
    seq_of: HashMap<String, u64>,
    next: u64,
}

impl Unacked {
    fn push(&mut self, update: pb::StatusUpdate) {
        self.seq_of.insert(update.uuid.clone(), self.next);
        self.by_seq.insert(self.next, (update, Instant::now()));
        self.next += 1;
    }

    fn ack(&mut self, uuid: &str) {
        if let Some(seq) = self.seq_of.remove(uuid) {
            self.by_seq.remove(&seq);
        }
    }

    /// Updates to send again: all of them (after a reconnect) or those older than [`RESEND_AFTER`].
    fn due(&mut self, all: bool) -> Vec<pb::StatusUpdate> {
        let now = Instant::now();
        self.by_seq
            .values_mut()
            .filter(|(_, sent)| all || now.duration_since(*sent) >= RESEND_AFTER)
            .map(|(update, sent)| {
                *sent = now;
                update.clone()
            })
            .collect()
    }
}

/// Runs the agent until `shutdown` turns true: connects (retrying with backoff), registers, and relays.
pub async fn run(
    config: AgentConfig,
    backend: Arc<dyn Backend>,
    mut events: mpsc::UnboundedReceiver<Box<pb::TaskStatus>>,
    transport: Transport,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let boot = format!("{:x}", crate::model::unix_ms());
    let mut credential = config
        .credential_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .map(|c| c.trim().to_string())
        .unwrap_or_default();
    let mut counter: u64 = 0;
    let mut unacked = Unacked::default();
    let mut backoff = Duration::from_millis(100);
    // Which master address to try (with several masters, the next after a failure), and the longest
    // wait between tries: short with several masters, where the next address is likely to answer.
    let mut attempt = 0usize;
    let max_backoff = match &transport {
        Transport::Remote { endpoints, .. } if endpoints.len() > 1 => Duration::from_secs(1),
        _ => Duration::from_secs(5),
    };
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        // Boxed: connecting is the largest state of this loop by far (the gRPC client's futures), and an
        // unboxed one would be carried by every agent's task for its whole life (thousands of simulated
        // agents share one process in scale tests).
        let mut link = match Box::pin(Link::open(&transport, attempt)).await {
            Ok(link) => link,
            Err(e) => {
                attempt += 1;
                tracing::warn!(target: "berth.agent", error = format!("{e:#}"), retry_in = ?backoff, "cannot reach the master");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        let register = pb::Register {
            agent_id: config.agent_id.clone(),
            hostname: config.hostname.clone(),
            resources: Some(config.resources.clone()),
            attributes: config.attributes.clone(),
            tasks: backend.tasks().await,
            allow_privileged: config.allow_privileged,
            allow_host_mounts: config.allow_host_mounts,
            allow_host_network: config.allow_host_network,
            version: env!("CARGO_PKG_VERSION").to_string(),
            backend: backend.name().to_string(),
            credential: credential.clone(),
        };
        link.send(ToMaster::Register(register));
        let heartbeat = match tokio::time::timeout(REGISTER_TIMEOUT, link.recv()).await {
            Ok(Some(FromMaster::Registered(r))) => {
                if !r.credential.is_empty() {
                    credential = r.credential.clone();
                    if let Some(file) = &config.credential_file
                        && let Err(e) = crate::config::write_private(file, &credential)
                    {
                        tracing::error!(target: "berth.agent", file = %file.display(), error = %e,
                            "cannot keep the credential the master issued; a restart of this agent will be refused");
                    }
                }
                Duration::from_millis(u64::from(r.heartbeat_interval_ms.max(100)))
            }
            Ok(Some(FromMaster::Refused(refused))) => {
                tracing::error!(target: "berth.agent", reason = %refused.reason,
                    "the master refused this agent's registration; retrying");
                attempt += 1;
                tokio::time::sleep(backoff.max(Duration::from_secs(1))).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
            other => {
                tracing::warn!(target: "berth.agent", answer = ?other.ok().flatten().map(|_| "not Registered"),
                    "the master did not accept the registration; retrying");
                attempt += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        tracing::info!(target: "berth.agent", agent = %config.agent_id, "registered with the master");
        for update in unacked.due(true) {
            link.send(ToMaster::Status(update));
        }
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Log streams run as their own tasks and hand their chunks to this loop, which owns the link. The
        // channel is made for the first stream: most agents never stream logs, and thousands of simulated
        // agents share one process in scale tests.
        let mut logs_out: Option<(LogsTx, mpsc::Receiver<Box<ToMaster>>)> = None;
        let mut log_streams: HashMap<u64, tokio::task::AbortHandle> = HashMap::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                message = link.recv() => match message {
                    Some(FromMaster::Launch(launch)) => match launch.task {
                        Some(task) => backend.launch(launch.framework, task),
                        None => tracing::warn!(target: "berth.agent", "a launch without a task"),
                    },
                    Some(FromMaster::Kill(kill)) => backend.kill(
                        &kill.framework,
                        &kill.task_id,
                        Duration::from_millis(u64::from(kill.grace_period_ms)),
                        kill.reason(),
                    ),
                    Some(FromMaster::Ack(ack)) => unacked.ack(&ack.uuid),
                    Some(FromMaster::Registered(_) | FromMaster::Refused(_)) => {}
                    Some(FromMaster::Logs(request)) => {
                        let id = request.request_id;
                        let stream = backend.logs(&request.framework, &request.task_id, request.follow, request.tail);
                        let (out_tx, _) = logs_out.get_or_insert_with(|| mpsc::channel(LOG_CHUNKS_BUFFERED));
                        let handle = tokio::spawn(forward_logs(id, stream, out_tx.clone()));
                        log_streams.retain(|_, h| !h.is_finished());
                        log_streams.insert(id, handle.abort_handle());
                    }
                    Some(FromMaster::CancelLogs(cancel)) => {
                        if let Some(handle) = log_streams.remove(&cancel.request_id) {
                            handle.abort();
                        }
                    }
                    None => {
                        tracing::warn!(target: "berth.agent", "lost the connection to the master; reconnecting");
                        attempt += 1;
                        for (_, handle) in log_streams.drain() {
                            handle.abort();
                        }
                        break;
                    }
                },
                Some(message) = recv_logs(&mut logs_out) => {
                    link.send(*message);
                }
                Some(status) = events.recv() => {
                    counter += 1;
                    let update = pb::StatusUpdate { uuid: format!("{}-{boot}-{counter}", config.agent_id), status: Some(*status) };
                    unacked.push(update.clone());
                    link.send(ToMaster::Status(update));
                }
                _ = ticker.tick() => {
                    if !link.send(ToMaster::Heartbeat(pb::Heartbeat { running_tasks: backend.running(), usage: backend.usage() })) {
                        break;
                    }
                    for update in unacked.due(false) {
                        link.send(ToMaster::Status(update));
                    }
                }
            }
        }
    }
}

/// Where log streams send their chunks.
type LogsTx = mpsc::Sender<Box<ToMaster>>;

/// Log chunks the agent buffers toward the master: a stream whose chunks are not taken waits (the task's
/// output is read no faster than it is sent), rather than growing the agent's memory.
const LOG_CHUNKS_BUFFERED: usize = 64;

/// The next log chunk to forward; pending while no stream was ever opened.
async fn recv_logs(logs: &mut Option<(LogsTx, mpsc::Receiver<Box<ToMaster>>)>) -> Option<Box<ToMaster>> {
    match logs {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Streams one task's output to the master, ending with an end-of-file chunk (carrying the error, if
/// the output could not be read).
async fn forward_logs(
    request_id: u64,
    mut stream: futures::stream::BoxStream<'static, Result<pb::LogChunk, String>>,
    out: LogsTx,
) {
    let wrap =
        |chunk: pb::LogChunk| Box::new(ToMaster::Logs(pb::AgentLogChunk { request_id, chunk: Some(chunk) }));
    let mut error = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                if out.send(wrap(chunk)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                error = e;
                break;
            }
        }
    }
    let _ = out.send(wrap(pb::LogChunk { eof: true, error, ..Default::default() })).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(uuid: &str) -> pb::StatusUpdate {
        pb::StatusUpdate { uuid: uuid.into(), status: None }
    }

    #[test]
    fn unacknowledged_updates_are_resent_in_order_until_acked() {
        let mut unacked = Unacked::default();
        unacked.push(update("a"));
        unacked.push(update("b"));
        unacked.push(update("c"));
        unacked.ack("b");
        let due: Vec<String> = unacked.due(true).into_iter().map(|u| u.uuid).collect();
        assert_eq!(due, vec!["a", "c"]);
        assert!(unacked.due(false).is_empty(), "just resent");
        unacked.ack("a");
        unacked.ack("c");
        assert!(unacked.due(true).is_empty());
    }
}
