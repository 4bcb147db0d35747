//! A framework's key-value data as its plugin sees it through the `store` import.
//!
//! Values live in the store. The master keeps every key with the size of its value (for listings and the
//! quota) and, as an overlay, the values written since the store last caught up: a write is read from
//! the overlay until the batch that carries it is committed, then from the store. A framework that keeps
//! a record per task (Marathon keeps ~400 bytes) would otherwise hold a second copy of all of it in the
//! master's memory, for reads that happen mostly when its plugin starts.
//!
//! Writes go into a journal that the master moves into its store batch after each successful plugin
//! call, so they are persisted in the same transaction as the call's effects; a call that fails has its
//! writes undone, since nothing else it did takes effect either.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::types::FastMap;
use super::writer::Progress;
use crate::runtime::{KvBackend, KvRefusal};
use crate::store::Store;

/// One framework's data.
pub struct FrameworkKv {
    framework: String,
    inner: Mutex<Inner>,
    quota: u64,
    store: Arc<Store>,
    progress: Arc<Progress>,
}

/// A key as the overlay, the journal and the store batch share it: one allocation per write.
type Key = Arc<str>;

struct Inner {
    /// Every key and the size of its value, in order (for listings by prefix).
    sizes: BTreeMap<String, u32>,
    /// Keys plus values, for the quota.
    bytes: u64,
    /// Values not yet known to be in the store (`None`: deleted), with the number of the batch that
    /// carries them ([`UNSENT`] until the journal is taken).
    overlay: FastMap<Key, Pending>,
    /// Overlay keys in the order their batches were numbered, to drop them once committed.
    stamped: VecDeque<(u64, Key)>,
    /// Keys written and not yet handed to the store, each once, in the order first written (their
    /// values are read from the overlay then: an [`UNSENT`] overlay entry is a key in the journal).
    journal: Vec<Key>,
    /// What the keys written by the call in progress were before it, to undo it: their size, their
    /// overlay entry, and whether the write added the key to the journal.
    undo: Vec<Undo>,
}

struct Undo {
    key: Key,
    size: Option<u32>,
    overlay: Option<Pending>,
    journaled: bool,
}

/// A value written and not yet known to be in the store (`None`: deleted), and its batch's number. The
/// value is shared with the store batch that carries it, not copied.
type Pending = (Option<Bytes>, u64);

/// The batch number of overlay entries whose write is still in the journal.
const UNSENT: u64 = u64::MAX;

fn size(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64
}

impl FrameworkKv {
    /// A framework's data as loaded from the store, with a quota in bytes (keys plus values). Values are
    /// read from `store` (under `framework`) once `progress` says the batch that wrote them is committed.
    pub fn new(
        framework: &str,
        data: BTreeMap<String, Vec<u8>>,
        quota: u64,
        store: Arc<Store>,
        progress: Arc<Progress>,
    ) -> FrameworkKv {
        let sizes: BTreeMap<String, u32> = data.into_iter().map(|(k, v)| (k, v.len() as u32)).collect();
        let bytes = sizes.iter().map(|(k, &v)| size(k, v as usize)).sum();
        FrameworkKv {
            framework: framework.to_string(),
            inner: Mutex::new(Inner {
                sizes,
                bytes,
                overlay: FastMap::default(),
                stamped: VecDeque::new(),
                journal: Vec::new(),
                undo: Vec::new(),
            }),
            quota,
            store,
            progress,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("kv lock")
    }

    /// Starts a plugin call: its writes can be undone until the next `begin_call`.
    pub fn begin_call(&self) {
        self.lock().undo.clear();
    }

    /// Whether the call in progress wrote anything.
    pub fn call_wrote(&self) -> bool {
        !self.lock().undo.is_empty()
    }

    /// Undoes the writes of the call in progress.
    pub fn rollback_call(&self) {
        let mut inner = self.lock();
        let undo = std::mem::take(&mut inner.undo);
        // The call's journal entries are the last ones, one per write that added its key.
        let keep = inner.journal.len() - undo.iter().filter(|u| u.journaled).count();
        inner.journal.truncate(keep);
        for Undo { key, size: size_before, overlay: overlay_before, .. } in undo.into_iter().rev() {
            let now = match size_before {
                Some(len) => inner.sizes.insert(key.to_string(), len),
                None => inner.sizes.remove(&*key),
            };
            if let Some(len) = now {
                inner.bytes -= size(&key, len as usize);
            }
            if let Some(len) = size_before {
                inner.bytes += size(&key, len as usize);
            }
            match overlay_before {
                Some(entry) => inner.overlay.insert(key, entry),
                None => inner.overlay.remove(&key),
            };
        }
    }

    /// Takes the writes made since the last call to this, for the store batch being built: each key
    /// written once, in the order first written, with its value now (`None`: deleted).
    pub fn take_journal(&self) -> Vec<(Key, Option<Bytes>)> {
        let batch = self.progress.building();
        let committed = self.progress.committed();
        let mut inner = self.lock();
        inner.undo.clear();
        inner.forget_committed(committed);
        let keys = std::mem::take(&mut inner.journal);
        let Inner { overlay, stamped, .. } = &mut *inner;
        keys.into_iter()
            .map(|key| {
                let entry = overlay.get_mut(&key).expect("a journaled key is in the overlay");
                entry.1 = batch;
                stamped.push_back((batch, key.clone()));
                (key, entry.0.clone())
            })
            .collect()
    }

    /// Bytes used (keys plus values).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.lock().sizes.len()
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values held in memory because their batch is not known to be committed yet.
    #[cfg(test)]
    fn overlay_len(&self) -> usize {
        self.lock().overlay.len()
    }

    /// Records a write (`None`: a delete) of the call in progress.
    fn write(inner: &mut Inner, key: &str, value: Option<Vec<u8>>) {
        let new_len = value.as_ref().map(|v| v.len() as u32);
        let size_before = match (new_len, inner.sizes.get_mut(key)) {
            (Some(len), Some(held)) => Some(std::mem::replace(held, len)),
            (Some(len), None) => inner.sizes.insert(key.to_string(), len),
            (None, _) => inner.sizes.remove(key),
        };
        if let Some(len) = size_before {
            inner.bytes -= size(key, len as usize);
        }
        if let Some(len) = new_len {
            inner.bytes += size(key, len as usize);
        }
        let key: Key = key.into();
        let overlay_before = inner.overlay.insert(key.clone(), (value.map(Bytes::from), UNSENT));
        // Written earlier and not handed over yet: the key is in the journal already.
        let journaled = overlay_before.as_ref().is_none_or(|(_, batch)| *batch != UNSENT);
        if journaled {
            inner.journal.push(key.clone());
        }
        inner.undo.push(Undo { key, size: size_before, overlay: overlay_before, journaled });
    }
}

impl Inner {
    /// Drops the overlay values whose batch is committed: the store has them now.
    fn forget_committed(&mut self, committed: u64) {
        while let Some((batch, _)) = self.stamped.front()
            && *batch <= committed
        {
            let (batch, key) = self.stamped.pop_front().expect("just seen");
            // A later write of the same key carries a later number (or is still unsent): keep it.
            if self.overlay.get(&key).is_some_and(|(_, b)| *b == batch) {
                self.overlay.remove(&key);
            }
        }
    }
}

impl KvBackend for FrameworkKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        {
            let inner = self.lock();
            if let Some((value, _)) = inner.overlay.get(key) {
                return value.as_ref().map(|v| v.to_vec());
            }
            if !inner.sizes.contains_key(key) {
                return None;
            }
        }
        // Committed: the store has it. Writes come only from this framework's own calls, one at a time,
        // and this read is part of one of them (or of a probe, which tolerates a write racing it).
        match self.store.kv_get(&self.framework, key) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(target: "berth.master", framework = %self.framework, key, error = %e,
                    "cannot read the framework's data from the store");
                None
            }
        }
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvRefusal> {
        let mut inner = self.lock();
        let old = inner.sizes.get(key).map(|&len| size(key, len as usize)).unwrap_or(0);
        let new_bytes = inner.bytes - old + size(key, value.len());
        if new_bytes > self.quota && new_bytes > inner.bytes {
            return Err(KvRefusal::QuotaExceeded(self.quota));
        }
        FrameworkKv::write(&mut inner, key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &str) {
        let mut inner = self.lock();
        if inner.sizes.contains_key(key) {
            FrameworkKv::write(&mut inner, key, None);
        }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .sizes
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A framework's data as a probe of a new plugin version sees it: reads go through to the framework's
/// data, writes stay here and are dropped with the probe. A probe runs beside the framework's own calls, so
/// it never touches their journal or undo log.
pub struct ProbeKv {
    data: Arc<FrameworkKv>,
    written: Mutex<BTreeMap<String, Option<Vec<u8>>>>,
}

impl ProbeKv {
    pub fn new(data: Arc<FrameworkKv>) -> ProbeKv {
        ProbeKv { data, written: Mutex::new(BTreeMap::new()) }
    }
}

impl KvBackend for ProbeKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(value) = self.written.lock().expect("probe lock").get(key) {
            return value.clone();
        }
        self.data.get(key)
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvRefusal> {
        self.written.lock().expect("probe lock").insert(key.to_string(), Some(value));
        Ok(())
    }

    fn delete(&self, key: &str) {
        self.written.lock().expect("probe lock").insert(key.to_string(), None);
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        let written = self.written.lock().expect("probe lock");
        let mut keys: std::collections::BTreeSet<String> = self.data.keys(prefix).into_iter().collect();
        for (key, value) in written.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)) {
            match value {
                Some(_) => keys.insert(key.clone()),
                None => keys.remove(key),
            };
        }
        keys.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Batch;

    /// A store in a temporary directory, and the progress of a writer that commits when told.
    struct Setup {
        _dir: tempfile::TempDir,
        store: Arc<Store>,
        progress: Arc<Progress>,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(Store::open(dir.path()).unwrap());
            Setup { _dir: dir, store, progress: Arc::new(Progress::default()) }
        }

        fn kv(&self, data: BTreeMap<String, Vec<u8>>, quota: u64) -> FrameworkKv {
            FrameworkKv::new("fw", data, quota, self.store.clone(), self.progress.clone())
        }

        /// Takes the journal into a batch and hands it over, as the master does: numbered when handed over.
        fn hand_over(&self, kv: &FrameworkKv) -> Batch {
            let mut batch = Batch::default();
            for (key, value) in kv.take_journal() {
                batch.kv("fw", key, value);
            }
            self.progress.handed_over();
            batch
        }

        /// Commits a batch handed over, as the writer does: counted once committed.
        fn commit_handed(&self, batch: &Batch) {
            self.store.commit(batch).unwrap();
            self.progress.add_committed(1);
        }

        fn commit(&self, kv: &FrameworkKv) {
            let batch = self.hand_over(kv);
            self.commit_handed(&batch);
        }
    }

    #[test]
    fn a_failed_call_leaves_no_trace_and_a_good_one_is_journaled() {
        let setup = Setup::new();
        let kv = setup.kv(BTreeMap::new(), 1_000);
        kv.begin_call();
        kv.put("a", b"1".to_vec()).unwrap();
        setup.commit(&kv);

        kv.begin_call();
        kv.put("b", b"2".to_vec()).unwrap();
        kv.delete("a");
        kv.put("b", b"22".to_vec()).unwrap();
        kv.rollback_call();
        assert_eq!(kv.get("a"), Some(b"1".to_vec()));
        assert_eq!(kv.get("b"), None);
        assert_eq!(kv.bytes(), 2);
        assert!(kv.take_journal().is_empty());

        kv.begin_call();
        kv.put("app/x", b"1".to_vec()).unwrap();
        kv.put("app/y", b"1".to_vec()).unwrap();
        kv.delete("a");
        assert_eq!(kv.keys("app/"), vec!["app/x".to_string(), "app/y".to_string()]);
        kv.put("app/x", b"2".to_vec()).unwrap();
        let journal = kv.take_journal();
        let expected: Vec<(Key, Option<Bytes>)> = vec![
            ("app/x".into(), Some(Bytes::from_static(b"2"))),
            ("app/y".into(), Some(Bytes::from_static(b"1"))),
            ("a".into(), None),
        ];
        assert_eq!(journal, expected, "each key once, in the order first written, with its last value");
        assert!(kv.take_journal().is_empty());

        // A call whose journal was not taken (the instance was made anew, say), then a failed call that
        // wrote the same key again and a new one: the first call's write stays journaled, once.
        kv.begin_call();
        kv.put("c", b"1".to_vec()).unwrap();
        kv.begin_call();
        kv.put("c", b"2".to_vec()).unwrap();
        kv.put("d", b"1".to_vec()).unwrap();
        kv.rollback_call();
        assert_eq!(kv.get("c"), Some(b"1".to_vec()));
        assert_eq!(kv.take_journal(), vec![("c".into(), Some(Bytes::from_static(b"1")))]);
    }

    #[test]
    fn values_are_read_from_memory_until_committed_then_from_the_store() {
        let setup = Setup::new();
        let kv = setup.kv(BTreeMap::new(), 1_000);
        kv.begin_call();
        kv.put("k", b"1".to_vec()).unwrap();
        kv.put("gone", b"x".to_vec()).unwrap();
        setup.commit(&kv);
        // The next journal taken drops what the store has.
        kv.begin_call();
        assert!(kv.take_journal().is_empty());
        assert_eq!(kv.overlay_len(), 0);
        assert_eq!(kv.get("k"), Some(b"1".to_vec()), "read from the store");

        // Written and handed over, not committed: read from memory, the store still has the old value.
        kv.begin_call();
        kv.put("k", b"2".to_vec()).unwrap();
        kv.delete("gone");
        let batch = setup.hand_over(&kv);
        assert_eq!(kv.get("k"), Some(b"2".to_vec()));
        assert_eq!(kv.get("gone"), None);
        assert_eq!(setup.store.kv_get("fw", "k").unwrap(), Some(b"1".to_vec()));
        // Written again in the next batch before the first one commits: the later value stays in memory
        // when the first commits.
        kv.begin_call();
        kv.put("k", b"3".to_vec()).unwrap();
        setup.commit_handed(&batch);
        let second = setup.hand_over(&kv);
        assert_eq!(kv.overlay_len(), 1, "k's third value waits for its own batch");
        assert_eq!(kv.get("k"), Some(b"3".to_vec()));
        assert_eq!(kv.get("gone"), None);
        setup.commit_handed(&second);
        kv.begin_call();
        kv.take_journal();
        assert_eq!(kv.overlay_len(), 0);
        assert_eq!(kv.get("k"), Some(b"3".to_vec()), "read from the store");
        assert_eq!((kv.len(), kv.keys("")), (1, vec!["k".to_string()]));
    }

    #[test]
    fn writes_past_the_quota_are_refused_but_shrinking_is_allowed() {
        let setup = Setup::new();
        let kv = setup.kv(BTreeMap::new(), 10);
        kv.begin_call();
        kv.put("k", vec![0; 9]).unwrap();
        assert_eq!(kv.put("j", vec![0; 1]), Err(KvRefusal::QuotaExceeded(10)));
        kv.put("k", vec![0; 2]).unwrap();
        assert_eq!(kv.bytes(), 3);
    }

    #[test]
    fn loaded_data_counts_against_the_quota_and_reads_from_the_store() {
        let setup = Setup::new();
        let mut batch = Batch::default();
        batch.kv("fw", "a".into(), Some(Bytes::from_static(b"12345")));
        setup.store.commit(&batch).unwrap();
        let kv = setup.kv(BTreeMap::from([("a".into(), b"12345".to_vec())]), 1_000);
        assert_eq!(kv.bytes(), 6);
        assert_eq!(kv.get("a"), Some(b"12345".to_vec()));
        assert_eq!(kv.get("b"), None);
    }
}
