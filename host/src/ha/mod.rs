//! Several masters on etcd: leader election, the leader's lease, and what a standby does.
//!
//! Each master holds a lease (`[store.etcd] lease_ttl_s`) that it keeps alive, registers itself under
//! `<prefix>/masters/<id>` with it, and campaigns for `<prefix>/leader`: a transaction that creates the key,
//! attached to its lease, only if it does not exist. The one that creates it leads; its writes are fenced
//! by the key's creation revision ([`Fence`]). When a leader dies its lease expires, etcd deletes the key,
//! and a standby's next campaign wins. A leader that cannot renew its lease before the lease could have
//! expired, or whose write etcd refuses, exits ([`crate::store::etcd::abdicate`]) before acting again.
//!
//! Standbys answer the API by proxying to the leader ([`proxy`]), and show the masters at `/v1/masters`.

pub mod proxy;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_proto::etcd as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::Store;
use crate::store::etcd::{Etcd, Fence, abdicate};

/// A master as it registers itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterInfo {
    /// Chosen at start, random.
    pub id: String,
    /// Where clients and other masters reach its API.
    pub address: String,
    /// When it started, ms since the epoch.
    pub started_ms: u64,
}

/// The value of the leader key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leading master's id.
    pub id: String,
    /// Its API address.
    pub address: String,
    /// When it won, ms since the epoch.
    pub since_ms: u64,
}

/// What this master knows of the election.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The leader, as last read (this master itself once it won).
    pub leader: Option<LeaderInfo>,
    /// Set once this master won.
    pub won: Option<Fence>,
    /// Why etcd cannot be reached, while it cannot (a standby shows it at `/health`).
    pub etcd_error: Option<String>,
}

/// This master's part in the election.
pub struct Election {
    store: Arc<Store>,
    me: MasterInfo,
    lease: AtomicI64,
    view: watch::Sender<View>,
    /// Set by [`Election::resign`]: the lease ends on purpose, and nothing abdicates over it.
    resigning: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election").field("me", &self.me).finish_non_exhaustive()
    }
}

/// How often a standby reads the leader key while another master leads.
const POLL: Duration = Duration::from_millis(200);

impl Election {
    /// Takes a lease, registers this master and starts campaigning. `store` must be on etcd.
    pub async fn start(store: Arc<Store>, address: String) -> anyhow::Result<Arc<Election>> {
        store.etcd().context("the election needs the etcd store")?;
        let id = {
            let mut bytes = [0u8; 6];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("random id: {e}"))?;
            hex::encode(bytes)
        };
        let me = MasterInfo { id, address, started_ms: crate::model::unix_ms() };
        let election = Arc::new(Election {
            store: store.clone(),
            me,
            lease: AtomicI64::new(0),
            view: watch::channel(View::default()).0,
            resigning: Default::default(),
        });
        // In the background: while etcd cannot be reached, the master serves as a standby that says so.
        let started = election.clone();
        tokio::spawn(async move {
            let lease = started.grant().await;
            started.lease.store(lease, Ordering::Release);
            started.register().await;
            tokio::spawn(started.clone().keep_alive());
            tokio::spawn(started.clone().campaign());
            tokio::spawn(started.clone().watchdog());
            tokio::spawn(started.clone().compact());
            started.etcd().follow_state().await;
        });
        Ok(election)
    }

    fn etcd(&self) -> &Etcd {
        self.store.etcd().expect("checked at start")
    }

    /// This master.
    pub fn me(&self) -> &MasterInfo {
        &self.me
    }

    /// What this master knows of the election now.
    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// Waits until this master leads.
    pub async fn won(&self) -> Fence {
        let mut rx = self.view.subscribe();
        let view = rx.wait_for(|v| v.won.is_some()).await.expect("the sender lives in self");
        view.won.expect("waited for it")
    }

    /// Registers this master under its current lease (again after a new lease).
    async fn register(&self) {
        let key = [self.etcd().masters_prefix(), self.me.id.clone().into_bytes()].concat();
        let value = serde_json::to_vec(&self.me).expect("serializes");
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key,
                value,
                lease: self.lease.load(Ordering::Acquire),
            })),
        };
        let request = pb::TxnRequest { compare: Vec::new(), success: vec![put], failure: Vec::new() };
        if let Err(e) = self.etcd().txn(request).await {
            tracing::warn!(target: "berth.ha", error = %e.message(), "cannot register this master in etcd (retried with the next lease)");
        }
    }

    /// Creates the leader key if it does not exist; else reads who leads. Returns until this master wins.
    async fn campaign(self: Arc<Self>) {
        let key = self.etcd().leader_key();
        loop {
            let since_ms = crate::model::unix_ms();
            let mine = LeaderInfo { id: self.me.id.clone(), address: self.me.address.clone(), since_ms };
            let request = pb::TxnRequest {
                compare: vec![pb::Compare {
                    result: pb::compare::CompareResult::Equal as i32,
                    target: pb::compare::CompareTarget::Create as i32,
                    key: key.clone(),
                    target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                }],
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: key.clone(),
                        value: serde_json::to_vec(&mine).expect("serializes"),
                        lease: self.lease.load(Ordering::Acquire),
                    })),
                }],
                failure: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                }],
            };
            let result = self.etcd().txn(request).await;
            let error = result.as_ref().err().map(|e| e.message().to_string());
            self.view.send_if_modified(|v| {
                let changed = v.etcd_error != error;
                v.etcd_error = error;
                changed
            });
            match result {
                Ok(reply) if reply.succeeded => {
                    // The key was created by this transaction: its creation revision is the revision
                    // the transaction produced.
                    let revision = reply.header.map_or(0, |h| h.revision);
                    let fence = Fence { create_revision: revision };
                    self.etcd().set_fence(fence);
                    tracing::info!(target: "berth.ha", id = %self.me.id, revision, "this master is the leader");
                    self.view.send_modify(|v| {
                        v.leader = Some(mine);
                        v.won = Some(fence);
                    });
                    return;
                }
                Ok(reply) => {
                    let key = reply.responses.into_iter().find_map(|r| match r.response {
                        Some(pb::response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                        _ => None,
                    });
                    let leader =
                        key.as_ref().and_then(|kv| serde_json::from_slice::<LeaderInfo>(&kv.value).ok());
                    // A campaign whose answer was lost (a timeout while etcd applied it) finds its own key:
                    // this master won then, and leads now with the key as it was created.
                    if let (Some(kv), Some(info)) = (&key, &leader)
                        && info.id == self.me.id
                        && kv.lease == self.lease.load(Ordering::Acquire)
                    {
                        let fence = Fence { create_revision: kv.create_revision };
                        self.etcd().set_fence(fence);
                        tracing::info!(target: "berth.ha", id = %self.me.id, revision = kv.create_revision,
                            "this master is the leader (its campaign's answer was lost)");
                        let info = info.clone();
                        self.view.send_modify(|v| {
                            v.leader = Some(info);
                            v.won = Some(fence);
                        });
                        return;
                    }
                    self.view.send_if_modified(|v| {
                        let changed = v.leader != leader;
                        if changed {
                            tracing::info!(target: "berth.ha", leader = ?leader.as_ref().map(|l| &l.address), "standing by");
                        }
                        v.leader = leader;
                        changed
                    });
                }
                Err(e) => {
                    tracing::warn!(target: "berth.ha", error = %e.message(), "cannot reach etcd to campaign; retrying")
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Keeps the lease alive, and records until when it certainly is. A leader that loses its lease
    /// exits; a standby takes a new one.
    async fn keep_alive(self: Arc<Self>) {
        let etcd = self.etcd();
        let ttl = etcd.settings().lease_ttl_s;
        let every = Duration::from_millis(ttl * 1000 / 6).max(Duration::from_millis(100));
        loop {
            let mut sent = Instant::now();
            let opened = tokio::time::timeout(
                Duration::from_secs(2),
                etcd.keep_alive_stream(self.lease.load(Ordering::Acquire)),
            );
            let (tx, mut replies) = match opened.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(target: "berth.ha", error = %e.message(), "cannot reach etcd to renew the lease; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(_) => {
                    tracing::warn!(target: "berth.ha", "etcd did not answer a lease renewal in 2 s; retrying");
                    continue;
                }
            };
            loop {
                match tokio::time::timeout(Duration::from_secs(1), replies.message()).await {
                    Ok(Ok(Some(reply))) if etcd.same_cluster(reply.header.as_ref()).is_err() => {
                        tracing::warn!(target: "berth.ha", "a lease renewal was answered by another etcd cluster; reconnecting");
                        break;
                    }
                    Ok(Ok(Some(reply))) if reply.ttl > 0 => {
                        etcd.lease_alive_until(sent + Duration::from_secs(reply.ttl as u64));
                    }
                    Ok(Ok(Some(_))) => {
                        if self.resigning.load(Ordering::Acquire) {
                            return;
                        }
                        if self.view.borrow().won.is_some() {
                            abdicate("the leader lease expired");
                        }
                        tracing::warn!(target: "berth.ha", "this standby's lease expired; taking a new one");
                        self.lease.store(self.grant().await, Ordering::Release);
                        self.register().await;
                        break;
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        tracing::warn!(target: "berth.ha", "the lease keep-alive stream broke; reopening it");
                        break;
                    }
                }
                tokio::time::sleep(every).await;
                sent = Instant::now();
                if tx
                    .send(pb::LeaseKeepAliveRequest { id: self.lease.load(Ordering::Acquire) })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }

    /// While this master leads: every `compact_interval_s`, compacts etcd's history up to the revision it
    /// read the time before. Every write makes a revision (each status update of each task), and etcd
    /// keeps every old version until it is compacted: without this its database only grows, until etcd
    /// refuses writes at its quota.
    async fn compact(self: Arc<Self>) {
        let every = self.etcd().settings().compact_interval_s;
        if every == 0 {
            return;
        }
        let mut view = self.view.subscribe();
        let _ = view.wait_for(|v| v.won.is_some()).await;
        let mut previous = None;
        loop {
            tokio::time::sleep(Duration::from_secs(every)).await;
            let current = match self.etcd().revision().await {
                Ok(revision) => revision,
                Err(e) => {
                    tracing::warn!(target: "berth.ha", error = %e.message(), "cannot read etcd's revision to compact");
                    continue;
                }
            };
            if let Some(revision) = previous.filter(|r| *r > 0) {
                match self.etcd().compact(revision).await {
                    Ok(()) => tracing::info!(target: "berth.ha", revision, "etcd's history compacted"),
                    Err(e) if e.message().contains("compacted") => {}
                    Err(e) => {
                        tracing::warn!(target: "berth.ha", revision, error = %e.message(), "cannot compact etcd's history")
                    }
                }
            }
            previous = Some(current);
        }
    }

    /// A leader whose lease may have expired exits, even when it has nothing to write: its view of
    /// the cluster is no longer the truth.
    async fn watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if self.resigning.load(Ordering::Acquire) {
                return;
            }
            if self.view.borrow().won.is_some() && !self.store.leading() {
                abdicate("the leader lease could not be renewed in time");
            }
        }
    }

    /// Gives up the lease (at a clean shutdown): the leader key goes with it, and a standby takes over at
    /// once instead of after the lease's TTL.
    pub async fn resign(&self) {
        self.resigning.store(true, Ordering::Release);
        let lease = self.lease.load(Ordering::Acquire);
        if lease == 0 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(2), self.etcd().revoke(lease)).await {
            Ok(Ok(())) => {
                tracing::info!(target: "berth.ha", "lease revoked: another master may lead at once")
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "berth.ha", error = %e.message(), "cannot revoke the lease; it expires on its own")
            }
            Err(_) => {
                tracing::warn!(target: "berth.ha", "etcd did not answer the revocation; the lease expires on its own")
            }
        }
    }

    /// Every registered master, the leader marked, as `/v1/masters` shows them.
    pub async fn masters(&self) -> Result<serde_json::Value, tonic::Status> {
        let etcd = self.etcd();
        let registered = etcd.range_prefix(&etcd.masters_prefix()).await?;
        let leader = etcd
            .get(etcd.leader_key())
            .await?
            .and_then(|kv| serde_json::from_slice::<LeaderInfo>(&kv.value).ok());
        let masters: Vec<serde_json::Value> = registered
            .iter()
            .filter_map(|kv| serde_json::from_slice::<MasterInfo>(&kv.value).ok())
            .map(|m| {
                let leading = leader.as_ref().filter(|l| l.id == m.id);
                serde_json::json!({
                    "id": m.id,
                    "address": m.address,
                    "startedMs": m.started_ms,
                    "leader": leading.is_some(),
                    "leaderSinceMs": leading.map(|l| l.since_ms),
                    "self": m.id == self.me.id,
                })
            })
            .collect();
        Ok(serde_json::json!({ "backend": "etcd", "leader": leader, "masters": masters }))
    }
}

/// While this master stands by, compiles every stored plugin version into the artifact cache (and caches
/// its component), every few seconds for versions loaded since: a standby that takes over then finds its
/// plugins compiled, and is serving in well under a second instead of after a compilation of each.
pub async fn warm_plugins(election: Arc<Election>, runtime: Arc<crate::runtime::Runtime>) {
    let mut done = std::collections::HashSet::new();
    loop {
        if election.view().won.is_some() {
            return;
        }
        match election.etcd().plugin_components().await {
            Ok(versions) => {
                for (record, label) in versions {
                    if !done.insert(record.sha256.clone()) {
                        continue;
                    }
                    let (store, runtime) = (election.store.clone(), runtime.clone());
                    let warmed = tokio::task::spawn_blocking(move || -> Result<bool, String> {
                        let bytes = store.component(&record.sha256).map_err(|e| e.to_string())?;
                        runtime.compile(record.kind, &bytes).map(|c| c.from_cache).map_err(|e| e.to_string())
                    })
                    .await;
                    match warmed {
                        Ok(Ok(from_cache)) => {
                            tracing::info!(target: "berth.ha", plugin = %label, from_cache, "plugin compiled ahead of a takeover")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(target: "berth.ha", plugin = %label, error = %e, "cannot compile a stored plugin ahead")
                        }
                        Err(_) => {}
                    }
                }
            }
            Err(e) => {
                tracing::debug!(target: "berth.ha", error = %e.message(), "cannot read the stored plugins")
            }
        }
        let mut view = election.view.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), view.wait_for(|v| v.won.is_some())).await;
    }
}

impl Election {
    /// Takes a lease, retrying until etcd grants one (meanwhile the view says why it cannot).
    async fn grant(&self) -> i64 {
        let etcd = self.etcd();
        let mut delay = Duration::from_millis(100);
        loop {
            let sent = Instant::now();
            match etcd.grant(etcd.settings().lease_ttl_s).await {
                Ok((id, ttl)) => {
                    tracing::info!(target: "berth.ha", lease = id, ttl_s = ttl, "lease granted");
                    etcd.lease_alive_until(sent + Duration::from_secs(ttl.max(0) as u64));
                    self.view.send_if_modified(|v| v.etcd_error.take().is_some());
                    return id;
                }
                Err(e) => {
                    tracing::warn!(target: "berth.ha", error = %e.message(), "cannot reach etcd for a lease; retrying");
                    let error = Some(e.message().to_string());
                    self.view.send_if_modified(|v| {
                        let changed = v.etcd_error != error;
                        v.etcd_error = error;
                        changed
                    });
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}
