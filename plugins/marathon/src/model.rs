//! What the framework remembers, and how it is kept in the framework's store so that a trap, a hot swap of
//! the plugin or a restart of the daemon carries on every app, task and deployment.
//!
//! Keys: `app/<id>` (the app and its runtime state), `version/<id>@<version>` (past definitions),
//! `task/<task id>` (tasks not yet ended), `deployment/<id>`, `meta`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher as _;
use std::rc::Rc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};

use serde::{Deserialize, Serialize};

use crate::app::App;

/// Where state is kept: the host's `store` import in the plugin; a map in native unit tests.
pub trait Persist {
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), String>;
    fn delete(&mut self, key: &str);
    fn keys(&self, prefix: &str) -> Vec<String>;
}

/// Launch delays after failures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Failures counted toward the current delay.
    pub failures: u32,
    /// The current delay.
    pub delay_ms: u64,
    /// No launches before this instant.
    pub launch_after_ms: u64,
}

/// The last task of an app that failed (Marathon's `lastTaskFailure`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task_id: String,
    pub host: String,
    pub state: String,
    pub message: String,
    pub timestamp_ms: u64,
    pub version: String,
}

/// An app and what the framework knows about it beyond its definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    pub app: App,
    /// The version of the current definition or instance count (Marathon's `version`).
    pub version: String,
    /// When the configuration last changed: tasks launched before it are old.
    pub config_version: String,
    /// When the instance count last changed.
    pub scaling_version: String,
    /// Versions with a stored definition, oldest first.
    pub versions: Vec<String>,
    pub backoff: Backoff,
    pub last_failure: Option<TaskFailure>,
    /// The deployment under way, if any (one per app).
    pub deployment: Option<String>,
    /// Being deleted: all tasks are killed, then the app is forgotten.
    pub deleting: bool,
}

/// Where a task is in its life, as far as the framework cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Staging,
    Starting,
    Running,
}

/// A task that has not ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
///
/// Its strings are shared: the id with the state's indexes, the app, version and host with every task
/// that has the same (a framework with 100,000 tasks keeps 100 apps' ids, not 100,000 copies).
pub struct Task {
    pub id: Rc<str>,
    pub app: Rc<str>,
    /// The app's `config_version` when it was launched.
    pub version: Rc<str>,
    pub phase: Phase,
    pub host: Rc<str>,
    pub attributes: Vec<(String, String)>,
    pub ports: Vec<u16>,
    pub staged_at_ms: u64,
    pub started_at_ms: Option<u64>,
    /// `None` until health checks have reported (or when the app has none).
    pub healthy: Option<bool>,
    pub has_health_checks: bool,
    pub last_health_ms: Option<u64>,
    /// A kill was sent.
    pub killing: bool,
    /// Since when it has been ready (running and, with health checks, healthy), without a break: it counts
    /// toward a deployment only once it has been ready for the app's minimum healthy time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since_ms: Option<u64>,
}

impl Task {
    /// Counts toward the app's instances.
    pub fn active(&self) -> bool {
        !self.killing
    }

    /// Running and, when it has health checks, healthy.
    pub fn healthy(&self) -> bool {
        self.phase == Phase::Running && (!self.has_health_checks || self.healthy == Some(true))
    }

    /// Ready (active, running, healthy) without a break for at least `min_ms` at `now_ms`.
    pub fn proven(&self, now_ms: u64, min_ms: u64) -> bool {
        self.active()
            && self.healthy()
            && self.ready_since_ms.is_some_and(|s| now_ms.saturating_sub(s) >= min_ms)
    }
}

/// What a deployment does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Start,
    Scale,
    Restart,
    Stop,
}

impl Kind {
    /// Marathon's step action names.
    pub fn actions(self) -> &'static [&'static str] {
        match self {
            Kind::Start => &["StartApplication", "ScaleApplication"],
            Kind::Scale => &["ScaleApplication"],
            Kind::Restart => &["RestartApplication"],
            Kind::Stop => &["StopApplication"],
        }
    }
}

/// What a deployment does to one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub app: String,
    pub kind: Kind,
    /// The app's version before the change, for rollback (none for a start).
    pub from_version: Option<String>,
}

/// A change of one or several apps in progress: one deployment for all the apps one request changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    #[serde(default)]
    pub changes: Vec<Change>,
    /// The deployment's own version (the version of the definitions it deploys).
    pub version: String,
    pub started_ms: u64,
    /// Records written before a deployment could change several apps held one app's change in these.
    #[serde(default, skip_serializing)]
    app: Option<String>,
    #[serde(default, skip_serializing)]
    kind: Option<Kind>,
    #[serde(default, skip_serializing)]
    from_version: Option<String>,
}

impl Deployment {
    pub fn new(id: String, changes: Vec<Change>, version: String, started_ms: u64) -> Deployment {
        Deployment { id, changes, version, started_ms, app: None, kind: None, from_version: None }
    }

    /// The apps it changes.
    pub fn apps(&self) -> impl Iterator<Item = &str> {
        self.changes.iter().map(|c| c.app.as_str())
    }

    /// Moves a record of the one-app form into `changes`.
    fn upgrade(&mut self) {
        if let (Some(app), Some(kind)) = (self.app.take(), self.kind.take()) {
            self.changes.push(Change { app, kind, from_version: self.from_version.take() });
        }
    }
}

/// Counters and flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub seq: u64,
    /// Whether offers are suppressed (as far as the framework asked).
    pub suppressed: bool,
    /// Launches wanted at the end of the last call, to revive when it grows.
    pub launches_wanted: u64,
}

/// How many of an app's tasks (those not ended) are in each state that plans, deployments and listings ask
/// about. Kept up to date as tasks change (see [`State::update_task`]), so those questions do not walk an
/// app's tasks: with 1,000 tasks per app, every status update would otherwise cost a walk of 1,000.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskCounts {
    pub tasks: u32,
    /// In phase `Running`.
    pub running: u32,
    /// With health checks that reported healthy (Marathon's `tasksHealthy`).
    pub healthy: u32,
    /// With health checks that reported unhealthy.
    pub unhealthy: u32,
    /// By the version tasks were launched with: usually one, two during a rolling upgrade.
    versions: Vec<(Rc<str>, VersionCounts)>,
}

/// An app's tasks of one launch version.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VersionCounts {
    pub tasks: u32,
    /// Not being killed ([`Task::active`]).
    pub active: u32,
    /// Active, running and healthy ([`Task::healthy`]).
    pub ready: u32,
}

impl TaskCounts {
    /// The counts of tasks launched with `version`.
    pub fn version(&self, version: &str) -> VersionCounts {
        self.versions.iter().find(|(v, _)| **v == *version).map(|(_, c)| *c).unwrap_or_default()
    }

    /// Active tasks of every version.
    pub fn active(&self) -> u32 {
        self.versions.iter().map(|(_, c)| c.active).sum()
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) one task.
    fn count(&mut self, t: &Task, sign: i32) {
        let add = |n: &mut u32, yes: bool| {
            if yes {
                *n = n.checked_add_signed(sign).expect("task counts stay in range");
            }
        };
        add(&mut self.tasks, true);
        add(&mut self.running, t.phase == Phase::Running);
        add(&mut self.healthy, t.has_health_checks && t.healthy == Some(true));
        add(&mut self.unhealthy, t.has_health_checks && t.healthy == Some(false));
        let at = match self.versions.iter().position(|(v, _)| Rc::ptr_eq(v, &t.version) || *v == t.version) {
            Some(at) => at,
            None => {
                self.versions.push((t.version.clone(), VersionCounts::default()));
                self.versions.len() - 1
            }
        };
        let c = &mut self.versions[at].1;
        add(&mut c.tasks, true);
        add(&mut c.active, t.active());
        add(&mut c.ready, t.active() && t.healthy());
        if c.tasks == 0 {
            self.versions.swap_remove(at);
        }
    }
}

/// An app's tasks that have not ended.
#[derive(Default)]
struct AppTasks {
    ids: FxHashSet<Rc<str>>,
    counts: TaskCounts,
}

/// Everything, with a record of what changed since the last flush.
#[derive(Default)]
pub struct State {
    pub apps: BTreeMap<String, AppState>,
    /// Tasks by id. Hashed rather than ordered: lookups by id are on every status update, and ids share
    /// long prefixes (the app id) that make ordered comparisons slow. Listings sort. Private, so that
    /// every change goes through [`State::update_task`] and keeps the counts right.
    tasks: TaskTable,
    /// Task ids and counts by app.
    by_app: FxHashMap<Rc<str>, AppTasks>,
    /// The apps, versions and hosts tasks refer to, each kept once.
    names: FxHashSet<Rc<str>>,
    pub deployments: BTreeMap<String, Deployment>,
    pub meta: Meta,
    /// App definitions by `version/<id>@<version>` key, written once.
    pub new_versions: Vec<(String, App)>,
    dirty: FxHashSet<String>,
    /// Apps whose tasks or definition changed since their plan was last computed (not stored: a fresh
    /// instance plans every app once).
    changed_apps: BTreeSet<String>,
}

/// Tasks by id, in a hash table whose entries keep their id's hash and hold the task boxed.
///
/// A hash table grows by moving every entry into a table twice the size, all at once. With the tasks
/// inline (`HashMap<Rc<str>, Task>`), that meant hashing every id again (each behind a pointer) and
/// moving every task into fresh memory: at 57,000 tasks one growth took 20-30 ms of a single offer call,
/// the slowest cycles of a placement run. With the hash kept and the entry 16 bytes, growing reads
/// entries in order and copies them, without touching an id or a task.
#[derive(Default)]
struct TaskTable {
    table: HashTable<(u64, Box<Task>)>,
}

impl TaskTable {
    fn hash(id: &str) -> u64 {
        FxBuildHasher.hash_one(id)
    }

    fn get(&self, id: &str) -> Option<&Task> {
        let hash = Self::hash(id);
        self.table.find(hash, |(h, t)| *h == hash && *t.id == *id).map(|(_, t)| &**t)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Task> {
        let hash = Self::hash(id);
        self.table.find_mut(hash, |(h, t)| *h == hash && *t.id == *id).map(|(_, t)| &mut **t)
    }

    /// Adds the task, or replaces the one with its id and returns that.
    fn insert(&mut self, task: Task) -> Option<Task> {
        let hash = Self::hash(&task.id);
        match self.table.entry(hash, |(h, t)| *h == hash && t.id == task.id, |(h, _)| *h) {
            Entry::Occupied(mut held) => Some(std::mem::replace(&mut *held.get_mut().1, task)),
            Entry::Vacant(free) => {
                free.insert((hash, Box::new(task)));
                None
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Task> {
        let hash = Self::hash(id);
        let held = self.table.find_entry(hash, |(h, t)| *h == hash && *t.id == *id).ok()?;
        Some(*held.remove().0.1)
    }

    fn values(&self) -> impl Iterator<Item = &Task> {
        self.table.iter().map(|(_, t)| &**t)
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("stored record {key} cannot be read: {e}"))
}

impl State {
    /// Reads everything from the store.
    pub fn load(store: &dyn Persist) -> Result<State, String> {
        let mut state = State::default();
        for key in store.keys("app/") {
            let app: AppState = decode(&key, &store.get(&key).unwrap_or_default())?;
            state.apps.insert(app.app.id.clone(), app);
        }
        for key in store.keys("task/") {
            let task: Task = decode(&key, &store.get(&key).unwrap_or_default())?;
            state.index_task(task);
        }
        for key in store.keys("deployment/") {
            let mut d: Deployment = decode(&key, &store.get(&key).unwrap_or_default())?;
            d.upgrade();
            state.deployments.insert(d.id.clone(), d);
        }
        if let Some(bytes) = store.get("meta") {
            state.meta = decode("meta", &bytes)?;
        }
        state.changed_apps = state.apps.keys().cloned().collect();
        Ok(state)
    }

    /// Writes what changed.
    pub fn flush(&mut self, store: &mut dyn Persist) -> Result<(), String> {
        for (key, app) in self.new_versions.drain(..) {
            store.put(&key, serde_json::to_vec(&app).map_err(|e| e.to_string())?)?;
        }
        for key in std::mem::take(&mut self.dirty) {
            let value = if let Some(id) = key.strip_prefix("app/") {
                self.apps.get(id).map(serde_json::to_vec)
            } else if let Some(id) = key.strip_prefix("task/") {
                self.tasks.get(id).map(serde_json::to_vec)
            } else if let Some(id) = key.strip_prefix("deployment/") {
                self.deployments.get(id).map(serde_json::to_vec)
            } else if key == "meta" {
                Some(serde_json::to_vec(&self.meta))
            } else if key.starts_with("version/") {
                None
            } else {
                continue;
            };
            match value {
                Some(bytes) => store.put(&key, bytes.map_err(|e| e.to_string())?)?,
                None => store.delete(&key),
            }
        }
        Ok(())
    }

    pub fn touch_app(&mut self, id: &str) {
        self.dirty.insert(format!("app/{id}"));
        self.app_changed(id);
    }

    /// Marks a task for writing, and its app for planning again.
    pub fn touch_task(&mut self, id: &str) {
        self.dirty.insert(format!("task/{id}"));
        if let Some(task) = self.tasks.get(id)
            && !self.changed_apps.contains(&*task.app)
        {
            self.changed_apps.insert(task.app.to_string());
        }
    }

    /// Marks an app for planning again.
    pub fn app_changed(&mut self, id: &str) {
        if !self.changed_apps.contains(id) {
            self.changed_apps.insert(id.to_string());
        }
    }

    /// The apps to plan again, forgetting them.
    pub fn take_changed_apps(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.changed_apps)
    }

    pub fn touch_deployment(&mut self, id: &str) {
        self.dirty.insert(format!("deployment/{id}"));
    }

    pub fn touch_meta(&mut self) {
        self.dirty.insert("meta".into());
    }

    /// Forgets a stored definition (of a deleted app).
    pub fn drop_version(&mut self, key: String) {
        self.dirty.insert(key);
    }

    pub fn insert_task(&mut self, task: Task) {
        let id = task.id.clone();
        self.index_task(task);
        self.touch_task(&id);
    }

    fn index_task(&mut self, mut task: Task) {
        task.app = self.intern(&task.app);
        task.version = self.intern(&task.version);
        task.host = self.intern(&task.host);
        let app = self.by_app.entry(task.app.clone()).or_default();
        app.ids.insert(task.id.clone());
        app.counts.count(&task, 1);
        if let Some(replaced) = self.tasks.insert(task) {
            // The same id again: the record it replaces no longer counts.
            let was = self.by_app.get_mut(&replaced.app).expect("every task is indexed by its app");
            was.counts.count(&replaced, -1);
            let now = self.tasks.get(&replaced.id).expect("the task that replaced it");
            if *replaced.app != *now.app {
                was.ids.remove(&replaced.id);
            }
        }
    }

    /// The task with this id, if it has not ended.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// Every task that has not ended, in no particular order.
    pub fn all_tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Changes a task through `f`, keeping its app's counts right, and marks it for writing. `None` when no
    /// such task exists. `f` must not change the task's id or app.
    pub fn update_task<R>(&mut self, id: &str, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let task = self.tasks.get_mut(id)?;
        let counts = &mut self.by_app.get_mut(&task.app).expect("every task is indexed by its app").counts;
        counts.count(task, -1);
        // Compared by address: every status update comes through here, and the strings are shared.
        let (app, task_id) = (Rc::as_ptr(&task.app), Rc::as_ptr(&task.id));
        let result = f(task);
        assert!(
            std::ptr::eq(Rc::as_ptr(&task.app), app) && std::ptr::eq(Rc::as_ptr(&task.id), task_id),
            "update_task changed a task's identity"
        );
        counts.count(task, 1);
        self.touch_task(id);
        Some(result)
    }

    /// The counts of an app's tasks; `None` when it has none.
    pub fn counts(&self, app: &str) -> Option<&TaskCounts> {
        self.by_app.get(app).map(|a| &a.counts)
    }

    /// Forgets the index of a deleted app, which has no tasks left.
    pub fn forget_app_tasks(&mut self, app: &str) {
        if let Some(gone) = self.by_app.remove(app) {
            debug_assert!(gone.ids.is_empty(), "a forgotten app had tasks");
        }
    }

    /// The shared copy of `name`. Names are few (apps, their versions, hosts) and are kept for the
    /// instance's life.
    pub fn intern(&mut self, name: &str) -> Rc<str> {
        match self.names.get(name) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Rc<str> = name.into();
                self.names.insert(shared.clone());
                shared
            }
        }
    }

    pub fn remove_task(&mut self, id: &str) -> Option<Task> {
        self.touch_task(id);
        let task = self.tasks.remove(id)?;
        if let Some(app) = self.by_app.get_mut(&task.app) {
            app.ids.remove(id);
            app.counts.count(&task, -1);
        }
        Some(task)
    }

    /// The app's tasks that have not ended, in no particular order.
    pub fn app_tasks(&self, app: &str) -> impl Iterator<Item = &Task> {
        self.by_app.get(app).into_iter().flat_map(|a| &a.ids).filter_map(|id| self.tasks.get(id))
    }

    /// The app's tasks that have not ended, by id (for listings).
    pub fn app_tasks_sorted(&self, app: &str) -> Vec<&Task> {
        let mut tasks: Vec<&Task> = self.app_tasks(app).collect();
        tasks.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        tasks
    }

    pub fn next_seq(&mut self) -> u64 {
        self.meta.seq += 1;
        self.touch_meta();
        self.meta.seq
    }
}

/// The store key of a stored definition.
pub fn version_key(app: &str, version: &str) -> String {
    format!("version/{app}@{version}")
}

#[cfg(test)]
pub mod testing {
    //! A map standing in for the host's store, for native unit tests of the scheduling logic only.

    use super::Persist;

    /// A seeded xorshift generator for the randomized tests: each call answers a number below its argument.
    pub fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    #[derive(Default)]
    pub struct MemoryStoreForTests(pub std::collections::BTreeMap<String, Vec<u8>>);

    impl Persist for MemoryStoreForTests {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.0.get(key).cloned()
        }
        fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), String> {
            self.0.insert(key.into(), value);
            Ok(())
        }
        fn delete(&mut self, key: &str) {
            self.0.remove(key);
        }
        fn keys(&self, prefix: &str) -> Vec<String> {
            self.0.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, app: &str, host: &str) -> Task {
        Task {
            id: id.into(),
            app: app.into(),
            version: "2026-11-21T00:00:00.000Z".into(),
            phase: Phase::Running,
            host: host.into(),
            attributes: vec![],
            ports: vec![],
            staged_at_ms: 0,
            started_at_ms: None,
            healthy: None,
            has_health_checks: false,
            last_health_ms: None,
            killing: false,
            ready_since_ms: None,
        }
    }

    /// The counts of an app's tasks, from the tasks themselves.
    fn recount(state: &State, app: &str) -> (u32, u32, u32, u32, Vec<(String, VersionCounts)>) {
        let mut counts = TaskCounts::default();
        for t in state.app_tasks(app) {
            counts.count(t, 1);
        }
        let mut versions: Vec<(String, VersionCounts)> =
            counts.versions.iter().map(|(v, c)| (v.to_string(), *c)).collect();
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        (counts.tasks, counts.running, counts.healthy, counts.unhealthy, versions)
    }

    fn kept(state: &State, app: &str) -> (u32, u32, u32, u32, Vec<(String, VersionCounts)>) {
        let c = state.counts(app).cloned().unwrap_or_default();
        let mut versions: Vec<(String, VersionCounts)> =
            c.versions.iter().map(|(v, c)| (v.to_string(), *c)).collect();
        versions.sort_by(|a, b| a.0.cmp(&b.0));
        (c.tasks, c.running, c.healthy, c.unhealthy, versions)
    }

    #[test]
    fn the_task_table_answers_as_a_map_would_through_growth_and_removal() {
        // Random inserts (new and replacing), removals and lookups over 40,000 ids, checked against a
        // BTreeMap after every step; the table grows past 16,384 entries on the way.
        let mut table = TaskTable::default();
        let mut reference: BTreeMap<String, String> = BTreeMap::new();
        let mut next = testing::numbers(0x2545_f491_4f6c_dd1d);
        for step in 0..60_000u64 {
            let id = format!("/bench/app-{:04}.{}", next(100), next(400));
            match next(5) {
                0..=2 => {
                    let host = format!("host-{step}");
                    let replaced = table.insert(task(&id, "/a", &host));
                    assert_eq!(replaced.map(|t| t.host.to_string()), reference.insert(id.clone(), host));
                }
                3 => {
                    let removed = table.remove(&id);
                    assert_eq!(removed.map(|t| t.host.to_string()), reference.remove(&id));
                }
                _ => {
                    if let Some(t) = table.get_mut(&id) {
                        t.staged_at_ms = step;
                    }
                }
            }
            assert_eq!(table.get(&id).map(|t| t.host.to_string()), reference.get(&id).cloned(), "{id}");
        }
        assert!(reference.len() > 16_384, "the table grew: {}", reference.len());
        let mut held: Vec<(String, String)> =
            table.values().map(|t| (t.id.to_string(), t.host.to_string())).collect();
        held.sort();
        assert_eq!(held, reference.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn task_counts_kept_as_tasks_change_match_a_recount() {
        // A pseudo-random walk of inserts, updates and removals over two apps, three versions and a
        // dozen task ids; after every step the kept counts equal those counted from the tasks.
        let mut state = State::default();
        let mut next = testing::numbers(0x9e37_79b9_7f4a_7c15);
        let (mut inserts, mut updates, mut removals) = (0, 0, 0);
        for _ in 0..5_000 {
            let id = format!("t{}", next(12));
            let app = ["/a", "/b"][next(2) as usize];
            match next(4) {
                0 => {
                    let mut t = task(&id, app, "h");
                    t.version = ["v1", "v2", "v3"][next(3) as usize].into();
                    t.phase = [Phase::Staging, Phase::Starting, Phase::Running][next(3) as usize];
                    t.has_health_checks = next(2) == 0;
                    state.insert_task(t);
                    inserts += 1;
                }
                1 => {
                    if state.remove_task(&id).is_some() {
                        removals += 1;
                    }
                }
                _ => {
                    let (phase, healthy, killing) = (next(3), next(3), next(4) == 0);
                    let changed = state.update_task(&id, |t| {
                        t.phase = [Phase::Staging, Phase::Starting, Phase::Running][phase as usize];
                        t.healthy = [None, Some(true), Some(false)][healthy as usize];
                        t.killing |= killing;
                    });
                    updates += usize::from(changed.is_some());
                }
            }
            for app in ["/a", "/b"] {
                assert_eq!(kept(&state, app), recount(&state, app));
            }
        }
        assert!(inserts > 500 && updates > 500 && removals > 300, "{inserts} {updates} {removals}");
        let c = state.counts("/a").unwrap();
        assert_eq!(c.active(), state.app_tasks("/a").filter(|t| t.active()).count() as u32);
    }

    #[test]
    fn tasks_share_their_app_version_and_host_and_round_trip_through_json() {
        let mut state = State::default();
        state.insert_task(task("web.1", "/web", "h1"));
        state.insert_task(task("web.2", "/web", "h1"));
        let (a, b) = (state.task("web.1").unwrap(), state.task("web.2").unwrap());
        assert!(
            Rc::ptr_eq(&a.app, &b.app) && Rc::ptr_eq(&a.version, &b.version) && Rc::ptr_eq(&a.host, &b.host)
        );
        assert!(Rc::ptr_eq(&a.id, state.by_app["/web"].ids.get("web.1").unwrap()), "the index shares the id");
        let json = serde_json::to_vec(a).unwrap();
        assert_eq!(&serde_json::from_slice::<Task>(&json).unwrap(), a);
        assert_eq!(state.remove_task("web.1").map(|t| t.id.to_string()), Some("web.1".to_string()));
        assert_eq!(state.app_tasks("/web").count(), 1);
    }
}
