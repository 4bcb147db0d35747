//! The state on etcd: a [`Batch`] as fenced transactions, everything read back, framework data mirrored,
//! plugin components in chunks.

use std::collections::{BTreeMap, HashMap};

use berth_proto::etcd as pb;
use sha2::Digest as _;

use super::{CHUNK, Etcd, Write, unavailable, unpart};
use crate::store::{Batch, Loaded, Op, PluginVersionRecord, StatusRecord, StoreError, TaskRecord, json};

impl Etcd {
    /// Commits a batch, fenced, as one transaction (or several, in order, when it is larger than etcd
    /// allows in one; see the module's documentation).
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let fence = self.fence_compare()?;
        let mut order: Vec<Vec<u8>> = Vec::new();
        let mut writes: HashMap<Vec<u8>, Write> = HashMap::new();
        let mut set = |key: Vec<u8>, write: Write, order: &mut Vec<Vec<u8>>| {
            if writes.insert(key.clone(), write).is_none() {
                order.push(key);
            }
        };
        for op in &batch.ops {
            let (key, value) = match op {
                Op::Meta(k, v) => (self.state_key("meta", &[k]), v.clone()),
                Op::Plugin(k, v) => (self.state_key("plugins", &[k]), v.clone()),
                Op::PluginVersion(k, n, v) => {
                    (self.state_key("plugin_versions", &[k, &format!("{n:010}")]), v.clone())
                }
                Op::Framework(k, v) => (self.state_key("frameworks", &[k]), v.clone()),
                Op::Task(f, t, v) => (self.state_key("tasks", &[f, t]), v.as_ref().map(json)),
                Op::Status(f, t, v) => (self.state_key("status", &[f, t]), v.as_ref().map(json)),
                Op::Kv(f, k, v) => (self.state_key("kv", &[f, k]), v.as_ref().map(|b| b.to_vec())),
                Op::Filter(f, a, v) => {
                    (self.state_key("filters", &[f, a]), v.map(|e| e.to_string().into_bytes()))
                }
                Op::Agent(k, v) => (self.state_key("agents", &[k]), v.clone()),
                Op::ClearKv(f) => {
                    // One delete per existing key, not a range delete: etcd refuses a transaction whose
                    // range delete overlaps a put, and the framework's data may be written again in the
                    // same batch.
                    let mirror = self.data.read().expect("data lock");
                    for key in mirror.get(f.as_str()).into_iter().flat_map(HashMap::keys) {
                        set(self.state_key("kv", &[f, key]), Write::Delete, &mut order);
                    }
                    continue;
                }
                Op::Replaced => continue,
            };
            set(key, value.map_or(Write::Delete, Write::Put), &mut order);
        }
        // Cut into transactions of at most `max_txn_ops` writes and `max_request_bytes` bytes.
        let mut txns: Vec<Vec<pb::RequestOp>> = vec![Vec::new()];
        let mut bytes = 0;
        for key in order {
            let size = key.len() + 16;
            let op = match writes.remove(&key).expect("every key in order has a write") {
                Write::Put(value) => {
                    let size = size + value.len();
                    if size > self.settings.max_request_bytes {
                        return Err(StoreError::Etcd(format!(
                            "a record of {size} bytes is larger than store.etcd.max_request_bytes"
                        )));
                    }
                    bytes += size;
                    pb::request_op::Request::RequestPut(pb::PutRequest { key, value, lease: 0 })
                }
                Write::Delete => {
                    bytes += size;
                    pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                        key,
                        range_end: Vec::new(),
                    })
                }
            };
            let current = txns.last_mut().expect("one transaction at least");
            if current.len() >= self.settings.max_txn_ops || bytes > self.settings.max_request_bytes {
                txns.push(Vec::new());
                bytes = size;
            }
            txns.last_mut().expect("just pushed").push(pb::RequestOp { request: Some(op) });
        }
        for success in txns {
            if success.is_empty() {
                continue;
            }
            let request = pb::TxnRequest { compare: vec![fence.clone()], success, failure: Vec::new() };
            let reply = self.block_on(self.txn(request)).map_err(|e| unavailable("committing to etcd", e))?;
            if !reply.succeeded {
                return Err(StoreError::Deposed);
            }
        }
        let mut mirror = self.data.write().expect("data lock");
        for op in &batch.ops {
            match op {
                Op::Kv(f, k, Some(v)) => {
                    drop(mirror.entry(f.clone()).or_default().insert(k.to_string(), v.to_vec()))
                }
                Op::Kv(f, k, None) => {
                    if let Some(data) = mirror.get_mut(f.as_str()) {
                        data.remove(&**k);
                    }
                }
                Op::ClearKv(f) => drop(mirror.remove(f.as_str())),
                _ => {}
            }
        }
        Ok(())
    }

    /// One value of a framework's data, as committed.
    pub fn kv_get(&self, framework: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.read().expect("data lock").get(framework).and_then(|data| data.get(key)).cloned())
    }

    /// Reads everything back.
    ///
    /// A master that just won the election takes the copy it kept current while it stood by
    /// (`mirror.rs`), once that copy has caught up with the revision of its own leader key (every write of
    /// the previous leader came before it); if it does not within two seconds, it reads etcd.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let base = format!("{}/state/", self.prefix);
        let all: Vec<(Vec<u8>, Vec<u8>)> = match self.take_mirror(std::time::Duration::from_secs(2)) {
            Some(entries) => entries.into_iter().collect(),
            None => self
                .block_on(self.range_prefix(base.as_bytes()))
                .map_err(|e| unavailable("loading state", e))?
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect(),
        };
        self.decode_state(&base, all)
    }

    fn decode_state(&self, base: &str, all: Vec<(Vec<u8>, Vec<u8>)>) -> Result<Loaded, StoreError> {
        let mut loaded = Loaded::default();
        let mut statuses: BTreeMap<(String, String), StatusRecord> = BTreeMap::new();
        let mut tasks: Vec<((String, String), TaskRecord)> = Vec::new();
        fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
            serde_json::from_slice(bytes)
                .map_err(|source| StoreError::Decode { key: key.to_string(), source })
        }
        for (key, value) in all {
            let Some(key) = key.strip_prefix(base.as_bytes()) else { continue };
            let key = String::from_utf8_lossy(key).into_owned();
            let (table, rest) = key.split_once('/').unwrap_or((&key, ""));
            let parts: Vec<String> = rest.splitn(2, '/').map(unpart).collect();
            let pair = || -> Result<(String, String), StoreError> {
                match &parts[..] {
                    [a, b] => Ok((a.clone(), b.clone())),
                    _ => Err(StoreError::Etcd(format!("malformed key `{key}` in etcd"))),
                }
            };
            match table {
                "meta" => {
                    drop(loaded.meta.insert(parts[0].clone(), String::from_utf8_lossy(&value).into_owned()))
                }
                "plugins" => drop(loaded.plugins.insert(parts[0].clone(), decode(&key, &value)?)),
                "plugin_versions" => {
                    let (name, n) = pair()?;
                    let n: u32 =
                        n.parse().map_err(|_| StoreError::Etcd(format!("malformed key `{key}` in etcd")))?;
                    loaded.plugin_versions.insert((name, n), decode(&key, &value)?);
                }
                "frameworks" => drop(loaded.frameworks.insert(parts[0].clone(), decode(&key, &value)?)),
                "tasks" => tasks.push((pair()?, decode(&key, &value)?)),
                "status" => drop(statuses.insert(pair()?, decode(&key, &value)?)),
                "kv" => {
                    let (f, k) = pair()?;
                    loaded.kv.entry(f).or_default().insert(k, value);
                }
                "filters" => {
                    let (f, a) = pair()?;
                    let expiry = String::from_utf8_lossy(&value)
                        .parse()
                        .map_err(|_| StoreError::Etcd(format!("malformed filter `{key}` in etcd")))?;
                    loaded.filters.push((f, a, expiry));
                }
                "agents" => drop(loaded.agents.insert(parts[0].clone(), decode(&key, &value)?)),
                _ => tracing::warn!(target: "berth.store", key, "an unknown key in etcd is ignored"),
            }
        }
        for (id, task) in tasks {
            let status = statuses.remove(&id);
            loaded.tasks.insert(id, (task, status));
        }
        *self.data.write().expect("data lock") = loaded
            .kv
            .iter()
            .map(|(framework, data)| {
                (framework.clone(), data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            })
            .collect();
        Ok(loaded)
    }

    /// Every stored plugin version's kind and component digest (for a standby to compile ahead).
    pub async fn plugin_components(&self) -> Result<Vec<(PluginVersionRecord, String)>, tonic::Status> {
        let prefix = format!("{}/state/plugin_versions/", self.prefix);
        let all = self.range_prefix(prefix.as_bytes()).await?;
        Ok(all
            .into_iter()
            .filter_map(|kv| {
                let record: PluginVersionRecord = serde_json::from_slice(&kv.value).ok()?;
                let key = String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned();
                let (name, number) = key.split_once('/')?;
                Some((record, format!("{}@v{}", unpart(name), number.parse::<u32>().ok()?)))
            })
            .collect())
    }

    /// Stores a plugin component under its sha256, in chunks, the manifest last (a no-op when there).
    pub fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let base = format!("{}/components/{sha256}/", self.prefix);
        let manifest = format!("{base}manifest").into_bytes();
        let present =
            self.block_on(self.get(manifest.clone())).map_err(|e| unavailable("reading etcd", e))?;
        if present.is_some() {
            return Ok(());
        }
        let chunks = bytes.chunks(CHUNK).collect::<Vec<_>>();
        for (i, chunk) in chunks.iter().enumerate() {
            let put = pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key: format!("{base}{i:06}").into_bytes(),
                    value: chunk.to_vec(),
                    lease: 0,
                })),
            };
            self.fenced_put(put)?;
        }
        let value = format!("{}:{}", chunks.len(), bytes.len()).into_bytes();
        self.fenced_put(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: manifest,
                value,
                lease: 0,
            })),
        })
    }

    fn fenced_put(&self, op: pb::RequestOp) -> Result<(), StoreError> {
        let request =
            pb::TxnRequest { compare: vec![self.fence_compare()?], success: vec![op], failure: Vec::new() };
        let reply =
            self.block_on(self.txn(request)).map_err(|e| unavailable("writing a plugin component", e))?;
        if reply.succeeded { Ok(()) } else { Err(StoreError::Deposed) }
    }

    /// Reads a plugin component by sha256 and checks it against its digest.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let base = format!("{}/components/{sha256}/", self.prefix);
        let all = self
            .block_on(self.range_prefix(base.as_bytes()))
            .map_err(|e| unavailable("reading a plugin component", e))?;
        let mut bytes = Vec::new();
        let mut manifest = None;
        for kv in all {
            if kv.key.ends_with(b"manifest") {
                manifest = Some(kv.value);
            } else {
                bytes.extend_from_slice(&kv.value);
            }
        }
        if manifest.is_none() {
            return Err(StoreError::Etcd(format!("plugin component {sha256} is not in etcd")));
        }
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        if digest != sha256 {
            return Err(StoreError::Etcd(format!("plugin component {sha256} in etcd has digest {digest}")));
        }
        Ok(bytes)
    }
}
