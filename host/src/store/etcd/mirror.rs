//! A standby's copy of the state, kept current by watching etcd, so that a takeover starts from memory
//! instead of reading every key.
//!
//! The copy is made from one range read at a revision, then every event after it, in revision order.
//! The watch covers the whole prefix, the leader key included: when this master wins at revision `R` (the
//! creation of its leader key), the event of that creation arrives after every write of the previous
//! leader (which etcd refuses from `R` on), so a copy that has applied revision `R` holds exactly what
//! the new leader must start from.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_proto::etcd as pb;

use super::{Etcd, prefix_end};

/// The copy: state keys and values, and the revision up to which every event is applied.
#[derive(Debug, Default)]
pub(super) struct Mirror {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    applied: i64,
    /// Set once the copy was taken for a takeover: it is no longer kept.
    taken: bool,
}

impl Etcd {
    /// Keeps the copy current until this master wins and its takeover has taken the copy (or found it
    /// behind). Reconnects and starts over (one range read) when the watch breaks or falls behind a
    /// compaction.
    pub async fn follow_state(&self) {
        let state = format!("{}/state/", self.prefix).into_bytes();
        let all = format!("{}/", self.prefix).into_bytes();
        loop {
            if self.mirror.lock().expect("mirror lock").taken {
                return;
            }
            let (kvs, revision) = match self.range_prefix_at(&state).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(target: "berth.ha", error = %e.message(), "cannot read the state to follow it; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            {
                let mut mirror = self.mirror.lock().expect("mirror lock");
                if mirror.taken {
                    return;
                }
                mirror.entries = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                mirror.applied = revision;
            }
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let create = pb::WatchCreateRequest {
                key: all.clone(),
                range_end: prefix_end(&all),
                start_revision: revision + 1,
                progress_notify: false,
            };
            let request = pb::WatchRequest {
                request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
            };
            tx.try_send(request).expect("an empty channel has room");
            let opened = tokio::time::timeout(
                Duration::from_secs(2),
                self.watch.clone().watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
            .await;
            let mut events = match opened {
                Ok(Ok(stream)) => stream.into_inner(),
                _ => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            loop {
                let reply = match events.message().await {
                    Ok(Some(reply)) => reply,
                    _ => break,
                };
                if self.same_cluster(reply.header.as_ref()).is_err()
                    || reply.canceled
                    || reply.compact_revision > 0
                {
                    tracing::debug!(target: "berth.ha", reason = %reply.cancel_reason, "the state watch ended; reading the state again");
                    break;
                }
                let mut mirror = self.mirror.lock().expect("mirror lock");
                if mirror.taken {
                    return;
                }
                for event in reply.events {
                    let Some(kv) = event.kv else { continue };
                    if kv.key.starts_with(&state) {
                        if event.r#type == pb::event::EventType::Delete as i32 {
                            mirror.entries.remove(&kv.key);
                        } else {
                            mirror.entries.insert(kv.key, kv.value);
                        }
                    }
                    mirror.applied = mirror.applied.max(kv.mod_revision);
                }
            }
            drop(tx);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// For a takeover: the copy, once it has applied this master's leader key, waiting up to `wait`; `None`
    /// (read etcd instead) when this master does not lead, the copy is behind, or no copy was kept.
    pub(super) fn take_mirror(&self, wait: Duration) -> Option<BTreeMap<Vec<u8>, Vec<u8>>> {
        let fence = (*self.fence.lock().expect("fence lock"))?;
        let deadline = Instant::now() + wait;
        loop {
            {
                let mut mirror = self.mirror.lock().expect("mirror lock");
                if mirror.applied >= fence.create_revision {
                    mirror.taken = true;
                    tracing::info!(target: "berth.ha", keys = mirror.entries.len(), revision = mirror.applied,
                        "taking over with the state followed while standing by");
                    return Some(std::mem::take(&mut mirror.entries));
                }
                if Instant::now() >= deadline {
                    mirror.taken = true;
                    mirror.entries.clear();
                    tracing::warn!(target: "berth.ha", applied = mirror.applied, needed = fence.create_revision,
                        "the state followed while standing by is behind; reading it from etcd");
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
