//! A framework's key-value data as its plugin sees it through the `store` import.
//!
//! The whole map lives in memory (reads never touch the disk). Writes go into a journal that the master
//! moves into its store batch after each successful plugin call, so they are persisted in the same
//! transaction as the call's effects; a call that fails has its writes undone, since nothing else it
//! did takes effect either.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::runtime::{KvBackend, KvRefusal};

/// One framework's data.
pub struct FrameworkKv {
    inner: Mutex<Inner>,
    quota: u64,
}

struct Inner {
    data: BTreeMap<String, Vec<u8>>,
    bytes: u64,
    /// Keys written and not yet handed to the store (their values are read from `data` then).
    journal: Vec<String>,
    /// Previous values of the keys written by the call in progress, to undo it.
    undo: Vec<(String, Option<Vec<u8>>)>,
}

fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl FrameworkKv {
    /// A framework's data as loaded from the store, with a quota in bytes (keys plus values).
    pub fn new(data: BTreeMap<String, Vec<u8>>, quota: u64) -> FrameworkKv {
        let bytes = data.iter().map(|(k, v)| size(k, v)).sum();
        FrameworkKv { inner: Mutex::new(Inner { data, bytes, journal: Vec::new(), undo: Vec::new() }), quota }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("kv lock")
    }

    /// Starts a plugin call: its writes can be undone until the next `begin_call`.
    pub fn begin_call(&self) {
        self.lock().undo.clear();
    }

    /// Undoes the writes of the call in progress.
    pub fn rollback_call(&self) {
        let mut inner = self.lock();
        let undo = std::mem::take(&mut inner.undo);
        let keep = inner.journal.len() - undo.len();
        inner.journal.truncate(keep);
        for (key, previous) in undo.into_iter().rev() {
            let current = match &previous {
                Some(value) => inner.data.insert(key.clone(), value.clone()),
                None => inner.data.remove(&key),
            };
            if let Some(current) = current {
                inner.bytes -= size(&key, &current);
            }
            if let Some(previous) = previous {
                inner.bytes += size(&key, &previous);
            }
        }
    }

    /// Takes the writes made since the last call to this, for the store: each key written once, with
    /// its value now (`None`: deleted).
    pub fn take_journal(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut inner = self.lock();
        inner.undo.clear();
        let mut keys = std::mem::take(&mut inner.journal);
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let value = inner.data.get(&key).cloned();
                (key, value)
            })
            .collect()
    }

    /// Bytes used (keys plus values).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl KvBackend for FrameworkKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().data.get(key).cloned()
    }

    fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvRefusal> {
        let mut inner = self.lock();
        let old = inner.data.get(key).map(|v| size(key, v)).unwrap_or(0);
        let new_bytes = inner.bytes - old + size(key, &value);
        if new_bytes > self.quota && new_bytes > inner.bytes {
            return Err(KvRefusal::QuotaExceeded(self.quota));
        }
        inner.bytes = new_bytes;
        let previous = match inner.data.get_mut(key) {
            Some(slot) => Some(std::mem::replace(slot, value)),
            None => inner.data.insert(key.to_string(), value),
        };
        inner.undo.push((key.to_string(), previous));
        inner.journal.push(key.to_string());
        Ok(())
    }

    fn delete(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(previous) = inner.data.remove(key) {
            inner.bytes -= size(key, &previous);
            inner.undo.push((key.to_string(), Some(previous)));
            inner.journal.push(key.to_string());
        }
    }

    fn keys(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .data
            .range(prefix.to_string()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_leaves_no_trace_and_a_good_one_is_journaled() {
        let kv = FrameworkKv::new(BTreeMap::from([("a".into(), b"1".to_vec())]), 1_000);
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
        let expected: Vec<(String, Option<Vec<u8>>)> = vec![
            ("a".into(), None),
            ("app/x".into(), Some(b"2".to_vec())),
            ("app/y".into(), Some(b"1".to_vec())),
        ];
        assert_eq!(journal, expected, "each key once, with its last value");
        assert!(kv.take_journal().is_empty());
    }

    #[test]
    fn writes_past_the_quota_are_refused_but_shrinking_is_allowed() {
        let kv = FrameworkKv::new(BTreeMap::new(), 10);
        kv.begin_call();
        kv.put("k", vec![0; 9]).unwrap();
        assert_eq!(kv.put("j", vec![0; 1]), Err(KvRefusal::QuotaExceeded(10)));
        kv.put("k", vec![0; 2]).unwrap();
        assert_eq!(kv.bytes(), 3);
    }
}
