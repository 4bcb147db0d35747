//! Plugins by name, each with its versions, one of them active.
//!
//! A new version is compiled, checked against its world and probed (an allocator instance is created and
//! its `init` run) before it becomes active; activation is one atomic pointer swap, so a call in flight
//! finishes on the version it started with and the next call sees the new one. Earlier versions are kept
//! (up to [`KEEP_VERSIONS`]) so that a rollback does not recompile.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;

use super::bindings::allocator::AllocatorPre;
use super::bindings::framework::FrameworkPre;
use super::bindings::incremental_allocator::IncrementalAllocatorPre;
use super::bindings::{ClusterView, Grants};
use super::engine::{Compiled, Runtime};
use super::state::unix_ms;
use super::stats::Stats;
use super::version::{AllocatorInstance, NewVersion, Pre, Version, VersionInfo};
use super::{CallError, LoadError, PluginKind, article, valid_name, validate};

/// Versions kept per plugin, the active one included.
pub const KEEP_VERSIONS: usize = 8;

/// A plugin: a name, a kind, its versions and which one is active.
pub struct Plugin {
    /// Plugin name.
    pub name: String,
    /// The world its versions implement.
    pub kind: PluginKind,
    active: ArcSwap<Version>,
    versions: Mutex<Versions>,
}

struct Versions {
    /// Loaded versions, oldest first.
    loaded: Vec<Arc<Version>>,
    /// Versions in the order they were activated; the last is the active one. Rollback pops.
    activations: Vec<u32>,
    /// Versions dropped to keep [`KEEP_VERSIONS`], not yet reported by `take_dropped_versions`.
    dropped: Vec<u32>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("active", &self.active().number)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The active version. Calls that start after a swap see the new one.
    pub fn active(&self) -> Arc<Version> {
        self.active.load_full()
    }

    /// The loaded versions, oldest first.
    pub fn versions(&self) -> Vec<Arc<Version>> {
        self.versions.lock().expect("versions lock").loaded.clone()
    }

    /// A loaded version by number.
    pub fn version(&self, number: u32) -> Option<Arc<Version>> {
        self.versions.lock().expect("versions lock").loaded.iter().find(|v| v.number == number).cloned()
    }

    /// Runs one allocation on the active version (allocators only).
    pub fn allocate(&self, view: &ClusterView) -> Result<(u32, Grants), CallError> {
        self.allocate_revised(view, None)
    }

    /// [`Plugin::allocate`] with each node's revision, as [`AllocatorInstance::allocate_revised`] takes it.
    pub fn allocate_revised(
        &self,
        view: &ClusterView,
        revisions: Option<&[u64]>,
    ) -> Result<(u32, Grants), CallError> {
        let version = self.active();
        version.allocate_revised(view, revisions).map(|grants| (version.number, grants))
    }

    /// Version numbers in the order they were activated (the last is active), for persisting.
    pub fn activations(&self) -> Vec<u32> {
        self.versions.lock().expect("versions lock").activations.clone()
    }

    /// Versions dropped (past [`KEEP_VERSIONS`]) since the last call, for forgetting them durably.
    pub fn take_dropped_versions(&self) -> Vec<u32> {
        std::mem::take(&mut self.versions.lock().expect("versions lock").dropped)
    }

    /// A summary of every loaded version.
    pub fn info(&self) -> Vec<VersionInfo> {
        let active = self.active().number;
        let versions = self.versions.lock().expect("versions lock");
        versions.loaded.iter().map(|v| VersionInfo::new(v, v.number == active)).collect()
    }

    fn activate(&self, version: Arc<Version>) {
        let mut versions = self.versions.lock().expect("versions lock");
        versions.activations.push(version.number);
        self.active.store(version);
    }
}

/// Every plugin the daemon has loaded.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new(runtime: Arc<Runtime>) -> Registry {
        Registry { runtime, plugins: RwLock::new(BTreeMap::new()) }
    }

    /// The runtime plugins run on.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A plugin by name.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().expect("registry lock").get(name).cloned()
    }

    /// Every plugin, by name.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        self.plugins.read().expect("registry lock").values().cloned().collect()
    }

    /// Compiles, checks and probes a new version without activating it. For a new plugin name this
    /// creates nothing yet: see [`Registry::activate`].
    pub fn prepare(&self, new: NewVersion<'_>) -> Result<Arc<Version>, LoadError> {
        if !valid_name(new.name) {
            return Err(LoadError::InvalidName(new.name.to_string()));
        }
        new.limits.validate().map_err(LoadError::Invalid)?;
        let existing = self.get(new.name);
        if let Some(plugin) = &existing
            && plugin.kind != new.kind
        {
            return Err(LoadError::KindMismatch {
                name: new.name.to_string(),
                article: article(plugin.kind),
                actual: plugin.kind,
            });
        }
        let number = new.number.unwrap_or_else(|| {
            existing
                .as_ref()
                .and_then(|p| p.versions.lock().expect("versions lock").loaded.iter().map(|v| v.number).max())
                .map_or(1, |n| n + 1)
        });
        if existing.as_ref().is_some_and(|p| p.version(number).is_some()) {
            return Err(LoadError::Invalid(format!("plugin `{}` already has a version {number}", new.name)));
        }

        let Compiled { component, sha256, size, compile_time, from_cache } =
            self.runtime.compile(new.kind, new.bytes)?;
        let linked = self
            .runtime
            .linker(new.kind)
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports { kind: new.kind, detail: format!("{e:#}") })?;
        let types = |e: wasmtime::Error| LoadError::ExportTypes { kind: new.kind, detail: format!("{e:#}") };
        let pre = match new.kind {
            PluginKind::Allocator
                if validate::exports_function(self.runtime.engine(), &component, "allocate-delta") =>
            {
                match IncrementalAllocatorPre::new(linked.clone()) {
                    Ok(pre) => Pre::IncrementalAllocator(pre),
                    // An `allocate-delta` of other types, such as one built against an earlier version of
                    // the ABI: the plugin's `allocate` still serves, with whole views.
                    Err(e) => {
                        let pre = AllocatorPre::new(linked).map_err(types)?;
                        tracing::warn!(target: "berth.runtime", plugin = new.name, error = %format!("{e:#}"),
                            "the plugin's `allocate-delta` does not have this berth's types (built against \
                             another version of the plugin ABI?); it is not used, and `allocate` is sent \
                             whole views");
                        Pre::Allocator(pre)
                    }
                }
            }
            PluginKind::Allocator => Pre::Allocator(AllocatorPre::new(linked).map_err(types)?),
            PluginKind::Framework => Pre::Framework(FrameworkPre::new(linked).map_err(types)?),
        };
        let version = Arc::new(Version {
            runtime: self.runtime.clone(),
            name: new.name.to_string(),
            number,
            kind: new.kind,
            label: format!("{}@v{number}", new.name).into(),
            pre,
            sha256,
            size,
            compile_time,
            from_cache,
            loaded_at_ms: unix_ms(),
            config: new.config,
            limits: new.limits,
            stats: Stats::default(),
            pool: Mutex::new(Vec::new()),
            rolled_back: Mutex::new(None),
        });
        if new.kind == PluginKind::Allocator {
            // The probe: one instance, `init` with the real configuration. It stays in the pool, so the
            // first call after activation does not pay for instantiation.
            let instance = AllocatorInstance::new(&version).map_err(LoadError::from)?;
            version.pool.lock().expect("pool lock").push(instance);
        }
        tracing::info!(target: "berth.runtime", plugin = %version.label, kind = %new.kind, size,
            compile_ms = compile_time.as_millis() as u64, from_cache, "plugin version prepared");
        Ok(version)
    }

    /// Adds a prepared version to its plugin without activating it (a new plugin starts on it), keeping
    /// the last [`KEEP_VERSIONS`] versions.
    pub fn insert(&self, version: Arc<Version>) -> Arc<Plugin> {
        let mut plugins = self.plugins.write().expect("registry lock");
        let mut created = false;
        let plugin = plugins
            .entry(version.name.clone())
            .or_insert_with(|| {
                created = true;
                Arc::new(Plugin {
                    name: version.name.clone(),
                    kind: version.kind,
                    active: ArcSwap::new(version.clone()),
                    versions: Mutex::new(Versions {
                        loaded: Vec::new(),
                        activations: Vec::new(),
                        dropped: Vec::new(),
                    }),
                })
            })
            .clone();
        drop(plugins);
        let mut versions = plugin.versions.lock().expect("versions lock");
        if created {
            versions.activations.push(version.number);
        }
        if !versions.loaded.iter().any(|v| v.number == version.number) {
            versions.loaded.push(version.clone());
            versions.loaded.sort_by_key(|v| v.number);
        }
        let active = plugin.active().number;
        while versions.loaded.len() > KEEP_VERSIONS {
            let Some(oldest) =
                versions.loaded.iter().position(|v| v.number != active && v.number != version.number)
            else {
                break;
            };
            let gone = versions.loaded.remove(oldest).number;
            versions.activations.retain(|&n| n != gone);
            versions.dropped.push(gone);
        }
        drop(versions);
        plugin
    }

    /// Makes a prepared version the active one (creating the plugin if it is new).
    pub fn activate(&self, version: Arc<Version>) -> Arc<Plugin> {
        let plugin = self.insert(version.clone());
        if plugin.active().number != version.number || plugin.activations().last() != Some(&version.number) {
            plugin.activate(version.clone());
        }
        tracing::info!(target: "berth.runtime", plugin = %version.label, "plugin version active");
        plugin
    }

    /// Restores a plugin's activation history after a restart, making `active` the active version.
    pub fn restore_activations(&self, name: &str, activations: &[u32], active: u32) {
        let Some(plugin) = self.get(name) else { return };
        let Some(version) = plugin.version(active) else { return };
        let mut versions = plugin.versions.lock().expect("versions lock");
        let loaded: Vec<u32> = versions.loaded.iter().map(|v| v.number).collect();
        versions.activations = activations.iter().copied().filter(|n| loaded.contains(n)).collect();
        if versions.activations.last() != Some(&active) {
            versions.activations.push(active);
        }
        drop(versions);
        plugin.active.store(version);
    }

    /// Prepares and activates in one step.
    pub fn load(&self, new: NewVersion<'_>) -> Result<Arc<Plugin>, LoadError> {
        let version = self.prepare(new)?;
        Ok(self.activate(version))
    }

    /// Makes an already loaded version active again.
    pub fn activate_number(&self, name: &str, number: u32) -> Result<Arc<Version>, LoadError> {
        let plugin = self.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let version = plugin
            .version(number)
            .ok_or_else(|| LoadError::UnknownVersion { name: name.to_string(), version: number })?;
        plugin.activate(version.clone());
        tracing::info!(target: "berth.runtime", plugin = %version.label, "plugin version active");
        Ok(version)
    }

    /// The version a rollback would return to, without rolling back.
    pub fn rollback_target(&self, name: &str) -> Result<Arc<Version>, LoadError> {
        let plugin = self.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let versions = plugin.versions.lock().expect("versions lock");
        let current = plugin.active().number;
        versions
            .activations
            .iter()
            .rev()
            .find_map(|&n| {
                if n == current { None } else { versions.loaded.iter().find(|v| v.number == n).cloned() }
            })
            .ok_or_else(|| LoadError::NoEarlierVersion(name.to_string()))
    }

    /// Goes back to the version that was active before the current one.
    pub fn rollback(&self, name: &str) -> Result<Arc<Version>, LoadError> {
        let plugin = self.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))?;
        let mut versions = plugin.versions.lock().expect("versions lock");
        let current = plugin.active().number;
        let previous = versions
            .activations
            .iter()
            .rev()
            .copied()
            .find(|&n| n != current && versions.loaded.iter().any(|v| v.number == n))
            .ok_or_else(|| LoadError::NoEarlierVersion(name.to_string()))?;
        // Forget the activations after the one we return to, so a second rollback goes further back.
        while versions.activations.last().is_some_and(|&n| n != previous) {
            versions.activations.pop();
        }
        let version = versions.loaded.iter().find(|v| v.number == previous).cloned().expect("checked above");
        plugin.active.store(version.clone());
        drop(versions);
        tracing::info!(target: "berth.runtime", plugin = %version.label, "rolled back");
        Ok(version)
    }

    /// Forgets a plugin and all its versions. Instances in use finish their calls.
    pub fn remove(&self, name: &str) -> Result<Arc<Plugin>, LoadError> {
        self.plugins
            .write()
            .expect("registry lock")
            .remove(name)
            .ok_or_else(|| LoadError::UnknownPlugin(name.to_string()))
    }
}
