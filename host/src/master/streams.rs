//! Open log streams: which client waits for which agent's chunks, each through a bounded buffer. The
//! relaying is in `logs.rs`.
//!
//! The master never waits for a client: a chunk that does not fit the client's buffer ends the stream (the
//! client did not keep up), so a client that asks for `--follow` and never reads holds a few hundred
//! chunks of the master's memory, not the task's whole output.

use std::collections::HashMap;

use berth_proto::v1 as pb;
use tokio::sync::mpsc;

/// Chunks buffered for one client.
pub const CHUNKS_BUFFERED: usize = 256;
/// Log streams open at once, at most.
pub const MAX_STREAMS: usize = 64;

/// Where a stream's chunks go.
pub type ChunkSender = mpsc::Sender<pb::LogChunk>;

/// What happened to a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// The client went away, or did not keep up: the stream is closed.
    Closed,
}

/// Log streams by request id.
#[derive(Default)]
pub struct LogStreams {
    /// Request id to the node serving it and the client's channel.
    open: HashMap<u64, (u32, ChunkSender)>,
    next: u64,
}

impl LogStreams {
    /// Opens a stream served by `node`; returns its request id, or `None` when [`MAX_STREAMS`] are open.
    pub fn open(&mut self, node: u32, tx: ChunkSender) -> Option<u64> {
        self.open.retain(|_, (_, tx)| !tx.is_closed());
        if self.open.len() >= MAX_STREAMS {
            return None;
        }
        self.next += 1;
        self.open.insert(self.next, (node, tx));
        Some(self.next)
    }

    /// Hands a chunk to its client without waiting. The stream is closed at its end, when the client has
    /// gone, or when its buffer is full (the client gets a last chunk saying why, if there is room).
    pub fn deliver(&mut self, id: u64, chunk: pb::LogChunk) -> Delivery {
        let eof = chunk.eof;
        let Some((_, tx)) = self.open.get(&id) else { return Delivery::Closed };
        let outcome = match tx.try_send(chunk) {
            Ok(()) => Delivery::Delivered,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(target: "berth.master", stream = id, buffered = CHUNKS_BUFFERED,
                    "a log stream's client is not reading; the stream is closed");
                Delivery::Closed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Delivery::Closed,
        };
        if eof || outcome == Delivery::Closed {
            self.open.remove(&id);
        }
        outcome
    }

    /// Ends the streams `node` was serving, telling each client `why`.
    pub fn close_node(&mut self, node: u32, why: &str) {
        self.open.retain(|_, (n, tx)| {
            if *n == node {
                let _ = tx.try_send(pb::LogChunk { eof: true, error: why.to_string(), ..Default::default() });
                false
            } else {
                true
            }
        });
    }
}
