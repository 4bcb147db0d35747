//! The store on etcd (v3 API), for several masters sharing one state: `[store] backend = "etcd"`.
//!
//! Every record of the redb store becomes one etcd key under the configured prefix
//! (`<prefix>/state/<table>/<key>`), and a [`Batch`] becomes one etcd transaction that succeeds only while
//! this master holds the leader key it won ([`Fence`]): a deposed leader (paused, partitioned, its lease
//! expired) can never write again, and since nothing is launched or acknowledged before its batch is
//! committed, it cannot launch either. Plugin components are stored in chunks under
//! `<prefix>/components/<sha256>/` (content-addressed: written once, verified when read) and cached in the
//! local data directory.
//!
//! A batch larger than `max_txn_ops` writes (etcd's `--max-txn-ops`, 128 by default) is committed as
//! several transactions, in order, each fenced; nothing that depends on it is acknowledged before the last
//! one. Run etcd with a larger `--max-txn-ops` (and set `max_txn_ops` to match) to keep every batch atomic:
//! the README's example uses 10,000.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use berth_proto::etcd as pb;
use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint};

mod mirror;
mod state;

use super::StoreError;

/// `[store.etcd]` in `berth serve`'s configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdSettings {
    /// Client URLs of the etcd members, e.g. `["http://10.0.0.1:2379", "http://10.0.0.2:2379"]`.
    pub endpoints: Vec<String>,
    /// Every key berth writes starts with this; several berth clusters may share one etcd under
    /// different prefixes.
    pub prefix: String,
    /// The leader lease's time to live, seconds: how long a dead leader keeps the role before a standby
    /// takes over (etcd rounds it up to its minimum, 2 s with its default election timeout).
    pub lease_ttl_s: u64,
    /// How often the leader compacts etcd's history, seconds (0: never, when etcd compacts itself): each
    /// time up to the revision it saw the time before, so a standby's watch has that long to keep up.
    pub compact_interval_s: u64,
    /// The most writes in one etcd transaction: etcd's `--max-txn-ops` (128 unless etcd is told otherwise).
    pub max_txn_ops: usize,
    /// The most bytes in one etcd request, less headroom: etcd's `--max-request-bytes` (1.5 MiB by default).
    pub max_request_bytes: usize,
    /// The CA that issued the members' certificates, for `https://` endpoints [default: the system's roots].
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) to present to etcd; needs `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key: Option<PathBuf>,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        EtcdSettings {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/berth".into(),
            lease_ttl_s: 3,
            compact_interval_s: 300,
            max_txn_ops: 128,
            max_request_bytes: 1_400_000,
            ca: None,
            cert: None,
            key: None,
        }
    }
}

impl EtcdSettings {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.endpoints.is_empty(), "store.etcd.endpoints is empty");
        anyhow::ensure!(
            self.prefix.starts_with('/') && !self.prefix.ends_with('/'),
            "store.etcd.prefix must start with `/` and not end with one (got `{}`)",
            self.prefix
        );
        anyhow::ensure!((1..=60).contains(&self.lease_ttl_s), "store.etcd.lease_ttl_s must be 1 to 60");
        anyhow::ensure!(self.max_txn_ops >= 8, "store.etcd.max_txn_ops must be at least 8");
        anyhow::ensure!(
            self.max_request_bytes >= 64 * 1024,
            "store.etcd.max_request_bytes must be at least 65536"
        );
        anyhow::ensure!(
            self.cert.is_some() == self.key.is_some(),
            "store.etcd.cert and store.etcd.key go together"
        );
        Ok(())
    }
}

/// How a master that lost the leadership exits: at once, before it can act on anything it decided as
/// leader. Like a Mesos master that loses its ZooKeeper session, it does not try to become a standby in
/// the same process (its in-memory state is a deposed leader's): a supervisor (systemd, a container
/// runtime) restarts it, and it joins as a standby.
pub const EXIT_DEPOSED: i32 = 75;

/// Exits the process with [`EXIT_DEPOSED`], saying why.
pub fn abdicate(why: &str) -> ! {
    tracing::error!(target: "berth.master", why, "this master is no longer the leader; exiting so that it does nothing more as leader");
    eprintln!("berth: this master is no longer the leader ({why}); exiting");
    std::process::exit(EXIT_DEPOSED)
}

/// The leader key this master won, by its creation revision: every write compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The leader key's `create_revision` when this master created it.
    pub create_revision: i64,
}

/// A connection to etcd: clients, the key layout, and the fence once this master leads.
pub struct Etcd {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    /// For the lease keep-alive stream only: no per-request timeout.
    stream: LeaseClient<Channel>,
    /// For the standby's watch of the state (no per-request timeout either).
    watch: pb::watch_client::WatchClient<Channel>,
    /// A standby's copy of the state (`mirror.rs`).
    mirror: Mutex<mirror::Mirror>,
    prefix: String,
    settings: EtcdSettings,
    fence: Mutex<Option<Fence>>,
    /// Until when this master's lease is certainly alive: the send time of the last keep-alive etcd
    /// answered, plus the lease's TTL. Past it, etcd may have expired the lease and elected another leader.
    lease_valid_until: Mutex<Option<std::time::Instant>>,
    runtime: tokio::runtime::Handle,
    /// The id of the etcd cluster, from its first reply (0 until then).
    cluster: std::sync::atomic::AtomicU64,
    /// Every framework's data as committed, by framework and key: loaded with the state and kept by
    /// [`Etcd::commit`]. Plugins read their data back during their calls, inside their deadline, and a
    /// round trip to etcd per read would not fit; only the leader writes, so this is what etcd holds.
    /// Its size is bounded by the frameworks' data quotas.
    data: std::sync::RwLock<HashMap<String, HashMap<String, Vec<u8>>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.settings.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The largest reply accepted from etcd (a page of a range).
const MAX_REPLY: usize = 64 << 20;
/// Keys read per range request when loading.
const PAGE: i64 = 1000;
/// Bytes per stored chunk of a plugin component.
const CHUNK: usize = 512 * 1024;

/// Escapes `/` and `%` in one part of a key, so that parts never run into each other.
fn part(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn unpart(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

/// The key that follows every key starting with `prefix` (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn unavailable(context: &str, status: tonic::Status) -> StoreError {
    StoreError::Etcd(format!("{context}: {}", status.message()))
}

/// What one commit writes, each key once, in the order of its last write.
enum Write {
    Put(Vec<u8>),
    Delete,
}

impl Etcd {
    /// Connects to the members (lazily: an unreachable etcd fails the first request, not this).
    pub fn connect(settings: &EtcdSettings) -> anyhow::Result<Etcd> {
        let tls = crate::api::tls::ClientTls {
            ca: settings.ca.clone(),
            identity: settings.cert.clone().zip(settings.key.clone()),
        };
        let endpoints = |timeout: Option<Duration>| -> anyhow::Result<Vec<Endpoint>> {
            settings
                .endpoints
                .iter()
                .map(|url| {
                    let endpoint = Endpoint::from_shared(url.clone())
                        .map_err(|e| anyhow::anyhow!("invalid etcd endpoint `{url}`: {e}"))?;
                    let endpoint = tls
                        .apply(url, endpoint)?
                        .connect_timeout(Duration::from_secs(1))
                        .http2_keep_alive_interval(Duration::from_secs(1))
                        .keep_alive_timeout(Duration::from_secs(2));
                    Ok(match timeout {
                        Some(t) => endpoint.timeout(t),
                        None => endpoint,
                    })
                })
                .collect()
        };
        let unary = Channel::balance_list(endpoints(Some(Duration::from_secs(3)))?.into_iter());
        let streaming = Channel::balance_list(endpoints(None)?.into_iter());
        Ok(Etcd {
            kv: KvClient::new(unary.clone()).max_decoding_message_size(MAX_REPLY),
            lease: LeaseClient::new(unary),
            stream: LeaseClient::new(streaming.clone()),
            watch: pb::watch_client::WatchClient::new(streaming).max_decoding_message_size(MAX_REPLY),
            mirror: Mutex::new(mirror::Mirror::default()),
            prefix: settings.prefix.clone(),
            settings: settings.clone(),
            fence: Mutex::new(None),
            lease_valid_until: Mutex::new(None),
            data: std::sync::RwLock::new(HashMap::new()),
            cluster: Default::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The settings this connection was made with.
    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// Runs `future` to completion from a thread outside the async runtime (the store's callers are
    /// plain threads: the store writer, the master, plugin workers).
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        self.runtime.block_on(future)
    }

    /// The key of the leader campaign.
    pub fn leader_key(&self) -> Vec<u8> {
        format!("{}/leader", self.prefix).into_bytes()
    }

    /// The prefix of the masters' registrations.
    pub fn masters_prefix(&self) -> Vec<u8> {
        format!("{}/masters/", self.prefix).into_bytes()
    }

    fn state_key(&self, table: &str, parts: &[&str]) -> Vec<u8> {
        let mut key = format!("{}/state/{table}/", self.prefix);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(&part(p));
        }
        key.into_bytes()
    }

    /// From now on, writes succeed only while the leader key is the one created at `fence`.
    pub fn set_fence(&self, fence: Fence) {
        *self.fence.lock().expect("fence lock") = Some(fence);
    }

    /// The lease is certainly alive until `until` (a keep-alive sent at `until - TTL` was answered).
    pub fn lease_alive_until(&self, until: std::time::Instant) {
        let mut valid = self.lease_valid_until.lock().expect("lease lock");
        *valid = Some(valid.map_or(until, |v| v.max(until)));
    }

    /// Whether this master holds the leader key and its lease is certainly alive now: checked before
    /// anything leaves the master (a launch, a kill, an acknowledgement), so that a leader paused past its
    /// lease never acts on what it decided before.
    pub fn leading(&self) -> bool {
        let fenced = self.fence.lock().expect("fence lock").is_some();
        let alive =
            self.lease_valid_until.lock().expect("lease lock").is_some_and(|v| std::time::Instant::now() < v);
        fenced && alive
    }

    fn fence_compare(&self) -> Result<pb::Compare, StoreError> {
        let fence = (*self.fence.lock().expect("fence lock")).ok_or(StoreError::NotLeader)?;
        Ok(pb::Compare {
            result: pb::compare::CompareResult::Equal as i32,
            target: pb::compare::CompareTarget::Create as i32,
            key: self.leader_key(),
            target_union: Some(pb::compare::TargetUnion::CreateRevision(fence.create_revision)),
        })
    }

    /// Reads every key starting with `prefix` (in pages, at one revision), as (key, value) pairs.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<Vec<pb::KeyValue>, tonic::Status> {
        Ok(self.range_prefix_at(prefix).await?.0)
    }

    /// Like [`Etcd::range_prefix`], with the revision read at.
    pub async fn range_prefix_at(&self, prefix: &[u8]) -> Result<(Vec<pb::KeyValue>, i64), tonic::Status> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut from = prefix.to_vec();
        let mut revision = 0;
        loop {
            let reply = self
                .kv
                .clone()
                .range(pb::RangeRequest {
                    key: from.clone(),
                    range_end: end.clone(),
                    limit: PAGE,
                    revision,
                    ..Default::default()
                })
                .await?
                .into_inner();
            self.same_cluster(reply.header.as_ref())?;
            if revision == 0 {
                revision = reply.header.as_ref().map_or(0, |h| h.revision);
            }
            let more = reply.more;
            if let Some(last) = reply.kvs.last() {
                from = last.key.clone();
                from.push(0);
            }
            out.extend(reply.kvs);
            if !more {
                return Ok((out, revision));
            }
        }
    }

    /// Reads one key.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<pb::KeyValue>, tonic::Status> {
        let reply = self.kv.clone().range(pb::RangeRequest { key, ..Default::default() }).await?.into_inner();
        self.same_cluster(reply.header.as_ref())?;
        Ok(reply.kvs.into_iter().next())
    }

    /// Runs a transaction.
    pub async fn txn(&self, request: pb::TxnRequest) -> Result<pb::TxnResponse, tonic::Status> {
        let reply = self.kv.clone().txn(request).await?.into_inner();
        self.same_cluster(reply.header.as_ref())?;
        Ok(reply)
    }

    /// Checks that a reply comes from the cluster the first reply came from: an endpoint that now
    /// belongs to another etcd cluster (an address reused, a member replaced by a stranger) must not
    /// answer for this one.
    pub fn same_cluster(&self, header: Option<&pb::ResponseHeader>) -> Result<(), tonic::Status> {
        let Some(id) = header.map(|h| h.cluster_id).filter(|id| *id != 0) else { return Ok(()) };
        match self.cluster.compare_exchange(
            0,
            id,
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
        ) {
            Ok(_) => Ok(()),
            Err(known) if known == id => Ok(()),
            Err(known) => Err(tonic::Status::failed_precondition(format!(
                "an etcd endpoint answered for cluster {id:x}, not for cluster {known:x} the masters share"
            ))),
        }
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, tonic::Status> {
        let reply = self
            .kv
            .clone()
            .range(pb::RangeRequest { key: self.leader_key(), count_only: true, ..Default::default() })
            .await?
            .into_inner();
        self.same_cluster(reply.header.as_ref())?;
        Ok(reply.header.map_or(0, |h| h.revision))
    }

    /// Compacts etcd's history up to `revision` (older versions of keys are dropped; current values stay).
    pub async fn compact(&self, revision: i64) -> Result<(), tonic::Status> {
        self.kv.clone().compact(pb::CompactionRequest { revision, physical: false }).await?;
        Ok(())
    }

    /// Grants a lease of `ttl_s` seconds; returns its id and the TTL etcd chose.
    pub async fn grant(&self, ttl_s: u64) -> Result<(i64, i64), tonic::Status> {
        let reply = self
            .lease
            .clone()
            .lease_grant(pb::LeaseGrantRequest { ttl: ttl_s as i64, id: 0 })
            .await?
            .into_inner();
        self.same_cluster(reply.header.as_ref())?;
        if !reply.error.is_empty() {
            return Err(tonic::Status::unavailable(reply.error));
        }
        Ok((reply.id, reply.ttl))
    }

    /// Revokes a lease (and deletes the keys attached to it).
    pub async fn revoke(&self, id: i64) -> Result<(), tonic::Status> {
        self.lease.clone().lease_revoke(pb::LeaseRevokeRequest { id }).await?;
        Ok(())
    }

    /// Opens a keep-alive stream that renews `first` at once: send lease ids into the returned sender,
    /// read the replies. (etcd answers the call only with its first reply, so the first request must be
    /// in the stream before the call is awaited.)
    pub async fn keep_alive_stream(
        &self,
        first: i64,
    ) -> Result<
        (tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>, tonic::Streaming<pb::LeaseKeepAliveResponse>),
        tonic::Status,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(pb::LeaseKeepAliveRequest { id: first }).expect("an empty channel has room");
        let replies =
            self.stream.clone().lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
        Ok((tx, replies.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_never_run_into_each_other() {
        for s in ["a/b", "a%2Fb", "%", "/", "plain", "x%25/y"] {
            assert_eq!(unpart(&part(s)), s);
            assert!(!part(s).contains('/'));
        }
        assert_ne!(part("a/b"), part("a%2Fb"));
    }

    #[test]
    fn a_prefix_end_follows_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/berth/"), b"/berth0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
