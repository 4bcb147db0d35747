//! The durable store: everything that must survive `kill -9`, in one `redb` database
//! (`<data-dir>/state.redb`), plus plugin components as files under `<data-dir>/plugins/components`.
//!
//! The master collects its writes for one loop iteration in a [`Batch`] and commits them in one
//! transaction before it acknowledges anything that depends on them (an API reply, a launch sent to an
//! agent, an acknowledgement of a status update). The store does not decide what to write.

mod records;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

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

/// One write.
#[derive(Debug)]
enum Op {
    Meta(String, Option<Vec<u8>>),
    Plugin(String, Option<Vec<u8>>),
    PluginVersion(String, u32, Option<Vec<u8>>),
    Framework(String, Option<Vec<u8>>),
    Task(String, String, Option<Vec<u8>>),
    Status(String, String, Option<Vec<u8>>),
    Kv(String, String, Option<Vec<u8>>),
    ClearKv(String),
    Filter(String, String, Option<u64>),
    Agent(String, Option<Vec<u8>>),
}

/// Writes collected during one master loop iteration, committed together.
#[derive(Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many writes are pending.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Sets or clears a metadata value.
    pub fn meta(&mut self, key: &str, value: Option<&str>) {
        self.ops.push(Op::Meta(key.into(), value.map(|v| v.as_bytes().to_vec())));
    }

    /// Writes a plugin's record.
    pub fn put_plugin(&mut self, name: &str, record: &PluginRecord) {
        self.ops.push(Op::Plugin(name.into(), Some(json(record))));
    }

    /// Removes a plugin and all its version records.
    pub fn delete_plugin(&mut self, name: &str, versions: impl IntoIterator<Item = u32>) {
        self.ops.push(Op::Plugin(name.into(), None));
        for v in versions {
            self.ops.push(Op::PluginVersion(name.into(), v, None));
        }
    }

    /// Writes a plugin version's record.
    pub fn put_plugin_version(&mut self, name: &str, version: u32, record: &PluginVersionRecord) {
        self.ops.push(Op::PluginVersion(name.into(), version, Some(json(record))));
    }

    /// Removes a plugin version's record (it fell out of the kept versions).
    pub fn delete_plugin_version(&mut self, name: &str, version: u32) {
        self.ops.push(Op::PluginVersion(name.into(), version, None));
    }

    /// Writes a framework.
    pub fn put_framework(&mut self, name: &str, record: &FrameworkRecord) {
        self.ops.push(Op::Framework(name.into(), Some(json(record))));
    }

    /// Removes a framework and its key-value data (its tasks are removed one by one as they end).
    pub fn delete_framework(&mut self, name: &str) {
        self.ops.push(Op::Framework(name.into(), None));
        self.ops.push(Op::ClearKv(name.into()));
    }

    /// Writes a task's launch record.
    pub fn put_task(&mut self, framework: &str, task: &str, record: &TaskRecord) {
        self.ops.push(Op::Task(framework.into(), task.into(), Some(json(record))));
    }

    /// Writes a task's latest status.
    pub fn put_status(&mut self, framework: &str, task: &str, record: &StatusRecord) {
        self.ops.push(Op::Status(framework.into(), task.into(), Some(json(record))));
    }

    /// Forgets a task.
    pub fn delete_task(&mut self, framework: &str, task: &str) {
        self.ops.push(Op::Task(framework.into(), task.into(), None));
        self.ops.push(Op::Status(framework.into(), task.into(), None));
    }

    /// Sets (`Some`) or removes (`None`) a framework's key.
    pub fn kv(&mut self, framework: &str, key: String, value: Option<Vec<u8>>) {
        self.ops.push(Op::Kv(framework.into(), key, value));
    }

    /// Sets or removes a decline filter.
    pub fn filter(&mut self, framework: &str, agent: &str, expires_ms: Option<u64>) {
        self.ops.push(Op::Filter(framework.into(), agent.into(), expires_ms));
    }

    /// Writes an agent.
    pub fn put_agent(&mut self, agent: &str, record: &AgentRecord) {
        self.ops.push(Op::Agent(agent.into(), Some(json(record))));
    }
}

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
/// the master reads the store once, at start, and otherwise only writes, so a large cache is mostly dirty
/// pages the master's own memory already holds. 64 MiB keeps the B-tree's upper levels hot.
const CACHE_BYTES: usize = 64 << 20;

/// The open store.
pub struct Store {
    db: Database,
    components: Dir,
    path: PathBuf,
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
        txn.commit()?;
        Ok(Store { db, components, path })
    }

    /// Stores a plugin component under its sha256 (a no-op when already there).
    pub fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
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
        self.components
            .read(format!("{sha256}.wasm"))
            .map_err(io(format!("reading plugin component {sha256}")))
    }

    /// Commits a batch in one transaction; when this returns `Ok` the writes survive a crash.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
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
                    Op::Task(f, t, Some(v)) => drop(tasks.insert((f.as_str(), t.as_str()), v.as_slice())?),
                    Op::Task(f, t, None) => drop(tasks.remove((f.as_str(), t.as_str()))?),
                    Op::Status(f, t, Some(v)) => {
                        drop(statuses.insert((f.as_str(), t.as_str()), v.as_slice())?)
                    }
                    Op::Status(f, t, None) => drop(statuses.remove((f.as_str(), t.as_str()))?),
                    Op::Kv(f, k, Some(v)) => drop(kv.insert((f.as_str(), k.as_str()), v.as_slice())?),
                    Op::Kv(f, k, None) => drop(kv.remove((f.as_str(), k.as_str()))?),
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
                }
            }
        }
        txn.commit()?;
        Ok(())
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
        let txn = self.db.begin_read()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{PluginKind, PluginLimits};

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
            },
        );
        batch.kv("fw", "a".into(), Some(b"1".to_vec()));
        batch.kv("fw", "b".into(), Some(b"2".to_vec()));
        batch.kv("other", "a".into(), Some(b"3".to_vec()));
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
        assert_eq!(loaded.kv["fw"].keys().collect::<Vec<_>>(), vec!["a"]);
        assert!(loaded.filters.is_empty());

        let mut batch = Batch::default();
        batch.delete_framework("fw");
        store.commit(&batch).unwrap();
        let loaded = store.load().unwrap();
        assert!(!loaded.kv.contains_key("fw"), "a removed framework's data is gone");
        assert_eq!(loaded.kv["other"]["a"], b"3");
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
