//! The store writer: commits the master's batches on a thread of its own, in order, and only then sends
//! what depended on each batch (messages to agents, API replies).
//!
//! The master thread hands over a batch at the end of each loop iteration and carries on with the next
//! one while the disk works, so a commit costs the master a channel send instead of a B-tree update and
//! an fsync. Nothing is acknowledged earlier than before: a reply or an agent message still leaves only
//! once every write made before it is durable, because batches are committed and released in the order
//! they were made. The channel holds few batches, so a slow disk slows the master down rather than
//! letting unacknowledged work pile up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_proto::v1 as pb;
use crossbeam_channel::{Sender, bounded};

use super::metrics::Metrics;
use super::types::ToAgent;
use crate::store::{Batch, Store, StoreError};

/// Batches handed over but not yet committed, at most, with the local store.
const QUEUED_BATCHES: usize = 2;
/// ... and with the store on etcd, where a commit is a round trip to a quorum that each fsync, not one
/// local fsync: the master keeps deciding while a commit is under way, and the batches that queue up
/// meanwhile go into the next transaction together (measured in BENCHMARKS.md).
const QUEUED_BATCHES_ETCD: usize = 16;

/// A message to an agent, sent once its batch is committed.
pub(crate) type Outgoing = (ToAgent, Box<pb::MasterMessage>);
/// Something to run once its batch is committed (an API reply).
pub(crate) type Reply = Box<dyn FnOnce() + Send>;

/// One loop iteration's writes and what waits on them.
struct Commit {
    batch: Batch,
    outbox: Vec<Outgoing>,
    replies: Vec<Reply>,
}

/// The writer thread. Dropping it commits what was handed over, then stops the thread.
pub(crate) struct Writer {
    tx: Option<Sender<Commit>>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

/// How many batches were handed to the writer and how many of them are committed, so that what was
/// written can be read back from the store once it is there (framework data, see `kv.rs`). Batches are
/// numbered from 1 in the order they are handed over, which is the order they are committed in.
#[derive(Debug, Default)]
pub struct Progress {
    handed_over: AtomicU64,
    committed: AtomicU64,
    /// While commits fail: the last error and when the first failed (ms since the epoch).
    failure: std::sync::Mutex<Option<(String, u64)>>,
}

impl Progress {
    /// The number the batch being built will carry when it is handed over.
    pub(crate) fn building(&self) -> u64 {
        self.handed_over.load(Ordering::Acquire) + 1
    }

    /// Batches up to this number are committed: a read transaction begun now sees them.
    pub(crate) fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    pub(crate) fn handed_over(&self) {
        self.handed_over.fetch_add(1, Ordering::AcqRel);
    }

    /// `count` more batches are committed.
    pub(crate) fn add_committed(&self, count: u64) {
        self.committed.fetch_add(count, Ordering::AcqRel);
    }

    /// Why the store cannot be written, and since when (ms since the epoch), while it cannot.
    pub fn failure(&self) -> Option<(String, u64)> {
        self.failure.lock().expect("failure lock").clone()
    }

    /// A commit failed with `error`; returns whether this began a run of failures.
    fn failed(&self, error: String) -> bool {
        let mut failure = self.failure.lock().expect("failure lock");
        let began = failure.is_none();
        let since = failure.as_ref().map_or_else(crate::model::unix_ms, |(_, since)| *since);
        *failure = Some((error, since));
        began
    }

    /// A commit succeeded; returns whether it ended a run of failures.
    fn succeeded(&self) -> bool {
        self.failure.lock().expect("failure lock").take().is_some()
    }

    /// Batches handed over and not yet committed.
    pub(crate) fn queued(&self) -> u64 {
        let committed = self.committed();
        self.handed_over.load(Ordering::Acquire).saturating_sub(committed)
    }
}

impl Writer {
    pub(crate) fn start(store: Arc<Store>, metrics: Arc<Metrics>) -> std::io::Result<Writer> {
        let depth = if store.etcd().is_some() { QUEUED_BATCHES_ETCD } else { QUEUED_BATCHES };
        let (tx, rx) = bounded::<Commit>(depth);
        let progress = Arc::new(Progress::default());
        let committed = progress.clone();
        let thread = std::thread::Builder::new().name("berth-store".into()).spawn(move || {
            for Commit { mut batch, mut outbox, mut replies } in &rx {
                // The batches that queued up while the last commit ran go into one transaction with this
                // one: one fsync and one rewrite of each B-tree's path for all of them, and a key written
                // in several (a task's STARTING, then its RUNNING) written once.
                let mut count = 1;
                for later in rx.try_iter() {
                    batch.append(later.batch);
                    outbox.extend(later.outbox);
                    replies.extend(later.replies);
                    count += 1;
                }
                {
                    let _span =
                        tracing::debug_span!("berth.store.commit", batches = count, writes = batch.len())
                            .entered();
                    let started = std::time::Instant::now();
                    commit(&store, &batch, &committed);
                    metrics.store_commit(started.elapsed());
                }
                committed.add_committed(count);
                // With several masters, this one may have lost the lease while it committed (a pause, a
                // partition): then another master may already lead, and nothing may leave this one.
                if !store.leading() {
                    crate::store::etcd::abdicate(
                        "the leader lease may have expired before what this batch decided was sent",
                    );
                }
                for (tx, message) in outbox {
                    let _ = tx.send(message);
                }
                for reply in replies {
                    reply();
                }
            }
        })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread), progress })
    }

    /// How far the writer has got.
    pub(crate) fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Hands over a batch and what waits on it. Blocks while the writer is [`QUEUED_BATCHES`] (or
    /// [`QUEUED_BATCHES_ETCD`]) behind.
    pub(crate) fn submit(&self, batch: Batch, outbox: Vec<Outgoing>, replies: Vec<Reply>) {
        if batch.is_empty() && outbox.is_empty() && replies.is_empty() {
            return;
        }
        let tx = self.tx.as_ref().expect("the writer runs until dropped");
        // Counted before the send, so that the batch being built never carries this one's number.
        self.progress.handed_over();
        if tx.send(Commit { batch, outbox, replies }).is_err() {
            // Only if the writer thread panicked, which `commit` never does on its own.
            tracing::error!(target: "berth.master", "the store writer is gone; writes are not persisted");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Commits `batch`, retrying with backoff for as long as the disk refuses: nothing after it may be
/// acknowledged before it is durable. Meanwhile `/health` says why (through `progress`), the master's
/// queues stop taking work (`handle.rs`), and the database is reopened before each retry, since redb
/// refuses everything after a failed write until it is.
fn commit(store: &Store, batch: &Batch, progress: &Progress) {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.commit(batch) {
            Ok(()) => {
                if progress.succeeded() {
                    tracing::warn!(target: "berth.master", "the store is writable again; acknowledging what waited");
                }
                return;
            }
            Err(StoreError::Deposed | StoreError::NotLeader) => {
                crate::store::etcd::abdicate("etcd refused a write: another master holds the leader key")
            }
            Err(e) => {
                if progress.failed(e.to_string()) {
                    let hint = match e {
                        StoreError::Etcd(_) => "is etcd reachable, with a quorum?",
                        _ => "is the disk full?",
                    };
                    tracing::error!(target: "berth.master", error = %e, writes = batch.len(), hint,
                        "cannot persist state: nothing is acknowledged until it can; retrying");
                } else {
                    tracing::warn!(target: "berth.master", error = %e, "the store still cannot be written; retrying");
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
                // etcd errors are the network's or the cluster's: only the local database needs reopening.
                if !matches!(e, StoreError::Etcd(_))
                    && let Err(e) = store.reopen()
                {
                    tracing::warn!(target: "berth.master", error = %e, "reopening the store failed; retrying");
                }
            }
        }
    }
}
