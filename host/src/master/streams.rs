//! Open log streams: which client waits for which agent's chunks. The relaying is in `logs.rs`.

use std::collections::HashMap;

use berth_proto::v1 as pb;
use tokio::sync::mpsc;

/// Where a stream's chunks go.
pub type ChunkSender = mpsc::UnboundedSender<pb::LogChunk>;

/// Log streams by request id.
#[derive(Default)]
pub struct LogStreams {
    /// Request id to the node serving it and the client's channel.
    open: HashMap<u64, (u32, ChunkSender)>,
    next: u64,
}

impl LogStreams {
    /// Opens a stream served by `node`; returns its request id.
    pub fn open(&mut self, node: u32, tx: ChunkSender) -> u64 {
        self.next += 1;
        self.open.insert(self.next, (node, tx));
        self.next
    }

    /// Hands a chunk to its client; returns whether the client still listens. The stream is closed at
    /// its end, or when the client has gone.
    pub fn deliver(&mut self, id: u64, chunk: pb::LogChunk) -> bool {
        let eof = chunk.eof;
        let delivered = self.open.get(&id).is_some_and(|(_, tx)| tx.send(chunk).is_ok());
        if eof || !delivered {
            self.open.remove(&id);
        }
        delivered
    }

    /// Ends the streams `node` was serving, telling each client `why`.
    pub fn close_node(&mut self, node: u32, why: &str) {
        self.open.retain(|_, (n, tx)| {
            if *n == node {
                let _ = tx.send(pb::LogChunk { eof: true, error: why.to_string(), ..Default::default() });
                false
            } else {
                true
            }
        });
    }
}
