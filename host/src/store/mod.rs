//! The durable store: everything that must survive `kill -9`, in one `redb` database
//! (`<data-dir>/state.redb`), plus plugin components as files under `<data-dir>/plugins/components`; or,
//! with `[store] backend = "etcd"` ([`etcd`]), the same records in etcd, shared by several masters, with
//! the local database keeping only what belongs to this machine.
//!
//! The master collects its writes for one loop iteration in a [`Batch`] and commits them in one
//! transaction before it acknowledges anything that depends on them (an API reply, a launch sent to an
//! agent, an acknowledgement of a status update). The store does not decide what to write.

mod batch;
pub mod etcd;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use batch::Batch;
use batch::{Op, json};
pub use records::{
    AgentRecord, FrameworkRecord, PluginRecord, PluginVersionRecord, StatusRecord, TaskRecord,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const PLUGINS: TableDefinition<&str, &[u8]> = TableDefinition::new("plugins");
const PLUGIN_VERSIONS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("plugin_versions");
const FRAMEWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("frameworks");
const TASKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tasks");
const TASK_STATUS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("task_status");
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
const FILTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("filters");
const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// The sha256 of each compiled artifact the daemon wrote to its artifact cache, by file name.
const ARTIFACTS: TableDefinition<&str, &str> = TableDefinition::new("artifacts");

/// Errors from the store. The master treats them as fatal for the write in question: nothing that
/// depended on it is acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] redb::Error),
    /// A file under the data directory failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: io::Error,
    },
    /// The database is being opened again after a failed write.
    #[error("the database is closed while it is opened again after a failed write")]
    Closed,
    /// etcd failed or could not be reached (the request is retried).
    #[error("etcd: {0}")]
    Etcd(String),
    /// Another master holds the leader key: this one was deposed and must not write again.
    #[error("this master is no longer the leader: another master holds the leader key")]
    Deposed,
    /// A write before this master won the election.
    #[error("this master is not the leader")]
    NotLeader,
    /// A record could not be decoded (written by an incompatible version, or corrupted).
    #[error("record {key}: {source}")]
    Decode {
        /// Which record.
        key: String,
        /// The error.
        source: serde_json::Error,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
db_err!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Everything read back at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Metadata values.
    pub meta: BTreeMap<String, String>,
    /// Plugins by name.
    pub plugins: BTreeMap<String, PluginRecord>,
    /// Plugin versions by (name, version).
    pub plugin_versions: BTreeMap<(String, u32), PluginVersionRecord>,
    /// Frameworks by name.
    pub frameworks: BTreeMap<String, FrameworkRecord>,
    /// Tasks by (framework, task id), with their latest status.
    pub tasks: BTreeMap<(String, String), (TaskRecord, Option<StatusRecord>)>,
    /// Key-value data by framework.
    pub kv: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Decline filters: (framework, agent) → expiry.
    pub filters: Vec<(String, String, u64)>,
    /// Agents by id.
    pub agents: BTreeMap<String, AgentRecord>,
}

/// redb's page cache. Its default (a gigabyte) is sized for databases that are read far more than written;
/// the master reads the store at start and for framework data its plugins read back, and otherwise only
/// writes, so a large cache is mostly dirty pages. 16 MiB keeps the B-trees' upper levels hot: placing
/// 100,000 tasks ran as fast as with 64 MiB (24,700 tasks/s) and the master's RSS fell by 68 MiB.
const CACHE_BYTES: usize = 16 << 20;

/// The open store.
pub struct Store {
    /// `None` while it is being opened again after a failed write (see [`Store::reopen`]).
    db: std::sync::RwLock<Option<Database>>,
    components: Dir,
    path: PathBuf,
    /// With `[store] backend = "etcd"`: the shared state is there, and the local database keeps only what
    /// belongs to this machine (its compiled-artifact ledger; components are cached as files).
    remote: Option<etcd::Etcd>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir.join("plugins/components"))
            .map_err(io(format!("creating {}", data_dir.display())))?;
        let path = data_dir.join("state.redb");
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(&path)?;
        let components =
            Dir::open_ambient_dir(data_dir.join("plugins/components"), cap_std::ambient_authority())
                .map_err(io("opening the plugin component directory"))?;
        // Create every table so reads of a fresh store find them.
        let txn = db.begin_write()?;
        txn.open_table(META)?;
        txn.open_table(PLUGINS)?;
        txn.open_table(PLUGIN_VERSIONS)?;
        txn.open_table(FRAMEWORKS)?;
        txn.open_table(TASKS)?;
        txn.open_table(TASK_STATUS)?;
        txn.open_table(KV)?;
        txn.open_table(FILTERS)?;
        txn.open_table(AGENTS)?;
        txn.open_table(ARTIFACTS)?;
        txn.commit()?;
        Ok(Store { db: std::sync::RwLock::new(Some(db)), components, path, remote: None })
    }

    /// Opens the local part of the store in `data_dir` and keeps the shared state in etcd.
    pub fn open_with_etcd(data_dir: &Path, etcd: etcd::Etcd) -> Result<Store, StoreError> {
        let mut store = Store::open(data_dir)?;
        store.remote = Some(etcd);
        Ok(store)
    }

    /// The etcd connection, with `[store] backend = "etcd"`.
    pub fn etcd(&self) -> Option<&etcd::Etcd> {
        self.remote.as_ref()
    }

    /// Whether this master may act now: always with the local store; with etcd, while it holds the leader
    /// key and its lease is certainly alive ([`etcd::Etcd::leading`]).
    pub fn leading(&self) -> bool {
        self.remote.as_ref().is_none_or(etcd::Etcd::leading)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let guard = self.db.read().expect("store lock");
        Ok(guard.as_ref().ok_or(StoreError::Closed)?.begin_write()?)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        let guard = self.db.read().expect("store lock");
        Ok(guard.as_ref().ok_or(StoreError::Closed)?.begin_read()?)
    }

    /// Closes the database and opens it again. After a write fails (a full disk, say), redb refuses every
    /// later operation until it is reopened, which checks the file and repairs what the failed commit left;
    /// committed data is untouched. Until this succeeds, every operation fails with [`StoreError::Closed`].
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.db.write().expect("store lock");
        drop(guard.take());
        *guard = Some(redb::Builder::new().set_cache_size(CACHE_BYTES).create(&self.path)?);
        Ok(())
    }

    /// Stores a plugin component under its sha256 (a no-op when already there).
    pub fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if let Some(etcd) = &self.remote {
            etcd.put_component(sha256, bytes)?;
        }
        self.put_component_file(sha256, bytes)
    }

    fn put_component_file(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let name = format!("{sha256}.wasm");
        if self.components.exists(&name) {
            return Ok(());
        }
        let temp = format!("{name}.{}.tmp", std::process::id());
        let mut file = self.components.create(&temp).map_err(io("writing a plugin component"))?;
        file.write_all(bytes).map_err(io("writing a plugin component"))?;
        file.sync_all().map_err(io("writing a plugin component"))?;
        drop(file);
        self.components.rename(&temp, &self.components, &name).map_err(io("writing a plugin component"))
    }

    /// Reads a plugin component by sha256.
    pub fn component(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        if let Some(etcd) = &self.remote {
            // The local copy is a cache: a component another master stored is fetched (and checked).
            if let Ok(bytes) = self.component_file(sha256) {
                return Ok(bytes);
            }
            let bytes = etcd.component(sha256)?;
            self.put_component_file(sha256, &bytes)?;
            return Ok(bytes);
        }
        self.component_file(sha256)
    }

    fn component_file(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        self.components
            .read(format!("{sha256}.wasm"))
            .map_err(io(format!("reading plugin component {sha256}")))
    }

    /// Commits a batch in one transaction; when this returns `Ok` the writes survive a crash.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(etcd) = &self.remote {
            return etcd.commit(batch);
        }
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let mut plugins = txn.open_table(PLUGINS)?;
            let mut versions = txn.open_table(PLUGIN_VERSIONS)?;
            let mut frameworks = txn.open_table(FRAMEWORKS)?;
            let mut tasks = txn.open_table(TASKS)?;
            let mut statuses = txn.open_table(TASK_STATUS)?;
            let mut kv = txn.open_table(KV)?;
            let mut filters = txn.open_table(FILTERS)?;
            let mut agents = txn.open_table(AGENTS)?;
            for op in &batch.ops {
                match op {
                    Op::Meta(k, Some(v)) => drop(meta.insert(k.as_str(), v.as_slice())?),
                    Op::Meta(k, None) => drop(meta.remove(k.as_str())?),
                    Op::Plugin(k, Some(v)) => drop(plugins.insert(k.as_str(), v.as_slice())?),
                    Op::Plugin(k, None) => drop(plugins.remove(k.as_str())?),
                    Op::PluginVersion(k, n, Some(v)) => {
                        drop(versions.insert((k.as_str(), *n), v.as_slice())?)
                    }
                    Op::PluginVersion(k, n, None) => drop(versions.remove((k.as_str(), *n))?),
                    Op::Framework(k, Some(v)) => drop(frameworks.insert(k.as_str(), v.as_slice())?),
                    Op::Framework(k, None) => drop(frameworks.remove(k.as_str())?),
                    Op::Task(f, t, Some(record)) => {
                        drop(tasks.insert((f.as_str(), t.as_str()), json(record).as_slice())?)
                    }
                    Op::Task(f, t, None) => drop(tasks.remove((f.as_str(), t.as_str()))?),
                    Op::Status(f, t, Some(record)) => {
                        drop(statuses.insert((f.as_str(), t.as_str()), json(record).as_slice())?)
                    }
                    Op::Status(f, t, None) => drop(statuses.remove((f.as_str(), t.as_str()))?),
                    Op::Kv(f, k, Some(v)) => drop(kv.insert((f.as_str(), &**k), &**v)?),
                    Op::Kv(f, k, None) => drop(kv.remove((f.as_str(), &**k))?),
                    Op::ClearKv(f) => {
                        let mut keys = Vec::new();
                        for entry in kv.range((f.as_str(), "")..)? {
                            let (k, _) = entry?;
                            let (framework, key) = k.value();
                            if framework != f.as_str() {
                                break;
                            }
                            keys.push(key.to_string());
                        }
                        for key in keys {
                            kv.remove((f.as_str(), key.as_str()))?;
                        }
                    }
                    Op::Filter(f, a, Some(e)) => drop(filters.insert((f.as_str(), a.as_str()), *e)?),
                    Op::Filter(f, a, None) => drop(filters.remove((f.as_str(), a.as_str()))?),
                    Op::Agent(k, Some(v)) => drop(agents.insert(k.as_str(), v.as_slice())?),
                    Op::Agent(k, None) => drop(agents.remove(k.as_str())?),
                    Op::Replaced => {}
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// One value of a framework's data, as committed.
    pub fn kv_get(&self, framework: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(etcd) = &self.remote {
            return etcd.kv_get(framework, key);
        }
        let txn = self.begin_read()?;
        let value = txn.open_table(KV)?.get((framework, key))?.map(|v| v.value().to_vec());
        Ok(value)
    }

    /// Reads everything back.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        fn decode<T: serde::de::DeserializeOwned>(
            key: impl std::fmt::Display,
            bytes: &[u8],
        ) -> Result<T, StoreError> {
            serde_json::from_slice(bytes)
                .map_err(|source| StoreError::Decode { key: key.to_string(), source })
        }
        if let Some(etcd) = &self.remote {
            return etcd.load();
        }
        let txn = self.begin_read()?;
        let mut loaded = Loaded::default();
        for entry in txn.open_table(META)?.iter()? {
            let (k, v) = entry?;
            loaded.meta.insert(k.value().to_string(), String::from_utf8_lossy(v.value()).into_owned());
        }
        for entry in txn.open_table(PLUGINS)?.iter()? {
            let (k, v) = entry?;
            loaded.plugins.insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        for entry in txn.open_table(PLUGIN_VERSIONS)?.iter()? {
            let (k, v) = entry?;
            let (name, n) = k.value();
            loaded.plugin_versions.insert((name.to_string(), n), decode(format!("{name}@v{n}"), v.value())?);
        }
        for entry in txn.open_table(FRAMEWORKS)?.iter()? {
            let (k, v) = entry?;
            loaded.frameworks.insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        let statuses = txn.open_table(TASK_STATUS)?;
        for entry in txn.open_table(TASKS)?.iter()? {
            let (k, v) = entry?;
            let (f, t) = k.value();
            let task: TaskRecord = decode(format!("task {f}/{t}"), v.value())?;
            let status = match statuses.get((f, t))? {
                Some(s) => Some(decode(format!("status {f}/{t}"), s.value())?),
                None => None,
            };
            loaded.tasks.insert((f.to_string(), t.to_string()), (task, status));
        }
        for entry in txn.open_table(KV)?.iter()? {
            let (k, v) = entry?;
            let (f, key) = k.value();
            loaded.kv.entry(f.to_string()).or_default().insert(key.to_string(), v.value().to_vec());
        }
        for entry in txn.open_table(FILTERS)?.iter()? {
            let (k, v) = entry?;
            let (f, a) = k.value();
            loaded.filters.push((f.to_string(), a.to_string(), v.value()));
        }
        for entry in txn.open_table(AGENTS)?.iter()? {
            let (k, v) = entry?;
            loaded.agents.insert(k.value().to_string(), decode(k.value(), v.value())?);
        }
        Ok(loaded)
    }
}

/// The artifact cache's record of what it wrote: kept in the daemon's own store, which nothing else
/// writes, so a file swapped into the cache directory is not mistaken for the daemon's (`runtime/cache.rs`).
impl crate::runtime::ArtifactLedger for Store {
    fn digest(&self, name: &str) -> io::Result<Option<String>> {
        let read = || -> Result<Option<String>, StoreError> {
            let txn = self.begin_read()?;
            Ok(txn.open_table(ARTIFACTS)?.get(name)?.map(|v| v.value().to_string()))
        };
        read().map_err(io::Error::other)
    }

    fn record(&self, name: &str, sha256: &str) -> io::Result<()> {
        let write = || -> Result<(), StoreError> {
            let txn = self.begin_write()?;
            txn.open_table(ARTIFACTS)?.insert(name, sha256)?;
            txn.commit()?;
            Ok(())
        };
        write().map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PluginKind, PluginLimits};
    use bytes::Bytes;

    #[test]
    fn a_committed_batch_is_read_back_and_deletes_take_effect() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut batch = Batch::default();
        batch.meta("allocator", Some("proportional"));
        batch.put_plugin("p", &PluginRecord { kind: PluginKind::Allocator, activations: vec![1, 2] });
        batch.put_plugin_version(
            "p",
            2,
            &PluginVersionRecord {
                kind: PluginKind::Allocator,
                sha256: "ab".into(),
                config: "{}".into(),
                limits: PluginLimits::default(),
                loaded_at_ms: 5,
                bundled: false,
                rolled_back: Some("rolled back to version 1".into()),
            },
        );
        batch.kv("fw", "a".into(), Some(Bytes::from_static(b"1")));
        batch.kv("fw", "b".into(), Some(Bytes::from_static(b"2")));
        batch.kv("other", "a".into(), Some(Bytes::from_static(b"3")));
        batch.filter("fw", "agent-1", Some(99));
        store.commit(&batch).unwrap();

        let mut batch = Batch::default();
        batch.kv("fw", "b".into(), None);
        batch.filter("fw", "agent-1", None);
        store.commit(&batch).unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.meta["allocator"], "proportional");
        assert_eq!(loaded.plugins["p"].activations, vec![1, 2]);
        assert_eq!(loaded.plugin_versions[&("p".to_string(), 2)].sha256, "ab");
        assert_eq!(
            loaded.plugin_versions[&("p".to_string(), 2)].rolled_back.as_deref(),
            Some("rolled back to version 1")
        );
        assert_eq!(loaded.kv["fw"].keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(loaded.filters.is_empty());

        let mut batch = Batch::default();
        batch.delete_framework("fw");
        store.commit(&batch).unwrap();
        let loaded = store.load().unwrap();
        assert!(!loaded.kv.contains_key("fw"), "a removed framework's data is gone");
        assert_eq!(loaded.kv["other"]["a"], b"3");
    }

    fn status(task_id: &str, state: crate::runtime::bindings::TaskState, delivered: bool) -> StatusRecord {
        StatusRecord {
            status: crate::runtime::bindings::TaskStatus {
                task_id: task_id.into(),
                state,
                reason: None,
                message: String::new(),
                healthy: None,
                exit_code: None,
                node: None,
                hostname: None,
                ports: vec![],
                timestamp_ms: 1,
            },
            delivered,
            update_uuid: String::new(),
        }
    }

    #[test]
    fn a_later_write_of_a_key_replaces_the_earlier_one_in_the_same_batch() {
        use crate::runtime::bindings::TaskState;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let spec = crate::master::validate::tests::task("t1", 100, vec![]);
        let record = |agent_id: &str, launched_at_ms| TaskRecord {
            spec: spec.clone(),
            agent_id: agent_id.into(),
            launched_at_ms,
        };
        let mut batch = Batch::default();
        batch.put_task("fw", "t1", record("agent-1", 7));
        batch.put_status("fw", "t1", status("t1", TaskState::Staging, true));
        batch.put_status("fw", "t1", status("t1", TaskState::Starting, false));
        batch.put_task("fw", "t2", record("agent-1", 7));
        batch.put_status("fw", "t2", status("t2", TaskState::Staging, true));
        batch.put_status("fw", "t1", status("t1", TaskState::Running, false));
        batch.put_status("fw", "t1", status("t1", TaskState::Running, true));
        batch.kv("fw", "k".into(), Some(Bytes::from_static(b"1")));
        batch.kv("fw", "k".into(), Some(Bytes::from_static(b"2")));
        // Cleared then written again: the write after the clear stays.
        batch.delete_framework("gone");
        batch.kv("gone", "k".into(), Some(Bytes::from_static(b"3")));
        batch.delete_framework("gone");
        batch.kv("gone", "k".into(), Some(Bytes::from_static(b"4")));
        // t1's four statuses, fw/k's two values and gone/k's two values each became one write: two
        // tasks, two statuses, two values, and the two clears of `gone` (two writes each).
        assert_eq!(batch.len(), 10);
        store.commit(&batch).unwrap();

        let loaded = store.load().unwrap();
        let (task, latest) = &loaded.tasks[&("fw".to_string(), "t1".to_string())];
        assert_eq!(task.agent_id, "agent-1");
        assert_eq!(task.launched_at_ms, 7);
        assert_eq!(task.spec, spec);
        let latest = latest.as_ref().unwrap();
        assert_eq!((latest.status.state, latest.delivered), (TaskState::Running, true));
        let (_, t2) = &loaded.tasks[&("fw".to_string(), "t2".to_string())];
        assert_eq!(t2.as_ref().unwrap().status.state, TaskState::Staging);
        assert_eq!(loaded.kv["fw"]["k"], b"2");
        assert_eq!(loaded.kv["gone"]["k"], b"4");

        // A delete after a write in the same batch wins, and a write after a delete wins.
        let mut batch = Batch::default();
        batch.put_status("fw", "t2", status("t2", TaskState::Running, true));
        batch.delete_task("fw", "t2");
        batch.delete_task("fw", "t1");
        batch.put_task("fw", "t1", record("agent-2", 8));
        store.commit(&batch).unwrap();
        let loaded = store.load().unwrap();
        assert!(!loaded.tasks.contains_key(&("fw".to_string(), "t2".to_string())));
        let (task, latest) = &loaded.tasks[&("fw".to_string(), "t1".to_string())];
        assert_eq!((task.agent_id.as_str(), latest.is_none()), ("agent-2", true));
    }

    #[test]
    fn batches_appended_commit_as_the_same_batches_one_after_the_other() {
        use crate::runtime::bindings::TaskState;
        let spec = crate::master::validate::tests::task("t1", 100, vec![]);
        let record =
            |agent_id: &str| TaskRecord { spec: spec.clone(), agent_id: agent_id.into(), launched_at_ms: 1 };
        // Three batches as three master loop iterations might make them: a task launched, its later
        // statuses, framework data written, cleared with its framework and written again.
        let batches = || {
            let mut first = Batch::default();
            first.put_task("fw", "t1", record("agent-1"));
            first.put_status("fw", "t1", status("t1", TaskState::Staging, true));
            first.put_task("fw", "t2", record("agent-1"));
            first.kv("fw", "k".into(), Some(Bytes::from_static(b"1")));
            first.kv("gone", "a".into(), Some(Bytes::from_static(b"1")));
            first.filter("fw", "agent-1", Some(9));
            let mut second = Batch::default();
            second.put_status("fw", "t1", status("t1", TaskState::Starting, false));
            second.put_status("fw", "t1", status("t1", TaskState::Running, false));
            second.delete_task("fw", "t2");
            second.kv("fw", "k".into(), Some(Bytes::from_static(b"2")));
            second.delete_framework("gone");
            let mut third = Batch::default();
            third.put_status("fw", "t1", status("t1", TaskState::Running, true));
            third.kv("gone", "b".into(), Some(Bytes::from_static(b"3")));
            third.put_task("fw", "t2", record("agent-2"));
            [first, second, third]
        };
        let summary = |store: &Store| {
            let loaded = store.load().unwrap();
            let tasks: Vec<_> = loaded
                .tasks
                .iter()
                .map(|((f, t), (task, latest))| {
                    let latest = latest.as_ref().map(|l| (l.status.state, l.delivered));
                    (f.clone(), t.clone(), task.agent_id.clone(), latest)
                })
                .collect();
            let kv: BTreeMap<_, _> = loaded.kv.into_iter().collect();
            (tasks, kv, loaded.filters)
        };

        let dir = tempfile::tempdir().unwrap();
        let one_by_one = Store::open(dir.path()).unwrap();
        for batch in batches() {
            one_by_one.commit(&batch).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let merged_store = Store::open(dir.path()).unwrap();
        let [mut merged, second, third] = batches();
        merged.append(second);
        merged.append(third);
        // t1's three statuses, t2's three task writes (put, delete, put) and fw/k's two values became
        // one write each.
        assert_eq!(merged.len(), batches().iter().map(Batch::len).sum::<usize>() - 5);
        merged_store.commit(&merged).unwrap();

        let expected = summary(&one_by_one);
        assert_eq!(summary(&merged_store), expected);
        let (tasks, kv, filters) = expected;
        assert_eq!(
            tasks,
            vec![
                ("fw".into(), "t1".into(), "agent-1".into(), Some((TaskState::Running, true))),
                ("fw".into(), "t2".into(), "agent-2".into(), None),
            ]
        );
        assert_eq!(kv["fw"]["k"], b"2");
        assert_eq!(kv["gone"].keys().collect::<Vec<_>>(), vec!["b"], "cleared, then written again");
        assert_eq!(filters, vec![("fw".into(), "agent-1".into(), 9)]);
    }

    #[test]
    fn components_are_stored_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_component("abc", b"\0asm").unwrap();
        store.put_component("abc", b"\0asm").unwrap();
        assert_eq!(store.component("abc").unwrap(), b"\0asm");
        assert!(store.component("../../etc/passwd").is_err(), "names cannot leave the directory");
    }
}
