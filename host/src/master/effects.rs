//! What the master's work causes outside it, held back until it is durable: the store writes of a loop
//! iteration (one [`Batch`]), the messages to agents and the API replies that depend on them, handed to the
//! store writer together, and the events published to watchers.
//!
//! The rule it keeps: nothing leaves before the writes made before it are committed (`writer.rs`).

use std::sync::Arc;

use berth_proto::v1 as pb;

use super::metrics::Metrics;
use super::types::{Event, Events, ToAgent};
use super::writer::{Outgoing, Progress, Reply, Writer};
use crate::store::{Batch, Store};

/// The writes being collected, what waits on them, and where events go.
pub struct Effects {
    /// The store writes of this loop iteration.
    pub batch: Batch,
    outbox: Vec<Outgoing>,
    replies: Vec<Reply>,
    /// `None` once stopped.
    writer: Option<Writer>,
    progress: Arc<Progress>,
    events: Events,
}

impl Effects {
    /// Starts the store writer for `store`.
    pub fn start(store: Arc<Store>, events: Events, metrics: Arc<Metrics>) -> std::io::Result<Effects> {
        let writer = Writer::start(store, metrics)?;
        let progress = writer.progress().clone();
        Ok(Effects {
            batch: Batch::default(),
            outbox: Vec::new(),
            replies: Vec::new(),
            writer: Some(writer),
            progress,
            events,
        })
    }

    /// How far the writer has got (framework data is read back from the store once committed).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Where events are published.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Queues a message to an agent; it is sent after the next commit.
    pub fn send(&mut self, tx: ToAgent, message: pb::master_message::Message) {
        self.outbox.push((tx, Box::new(pb::MasterMessage { message: Some(message) })));
    }

    /// Runs `reply` once the writes made so far are committed.
    pub fn after_commit(&mut self, reply: Reply) {
        self.replies.push(reply);
    }

    /// Publishes an event to watchers; it is not even built when nobody watches (statuses are the
    /// master's hottest path).
    pub fn publish(&self, event: impl FnOnce() -> Event) {
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(Arc::new(event()));
        }
    }

    /// Hands the iteration's writes to the writer thread, which commits them and then sends what depended
    /// on them.
    pub fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let outbox = std::mem::take(&mut self.outbox);
        let replies = std::mem::take(&mut self.replies);
        if let Some(writer) = &self.writer {
            writer.submit(batch, outbox, replies);
        }
    }

    /// Flushes, then waits for the writer to commit everything handed over and stops it.
    pub fn stop(&mut self) {
        self.flush();
        drop(self.writer.take());
    }
}
