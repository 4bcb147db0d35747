//! Plugin operations that touch the master's state: adding and activating versions, rollback (by an
//! operator, or automatic for a version that keeps failing), removal, and choosing the allocator.
//!
//! Compiling and probing happen before these run, off the master thread (`handle.rs`): here a version is
//! only recorded and swapped in.

use std::sync::Arc;

use super::core::Master;
use super::kv::ProbeKv;
use super::types::ApiError;
use crate::runtime::{CallError, KvBackend, LoadError, PluginKind, Version, VersionInfo};
use crate::store::{PluginRecord, PluginVersionRecord};

/// A version whose calls fail this many times in a row (any sandbox violation: deadline, memory, trap,
/// a limit on what it returns) is rolled back to the version active before it, when there is one.
pub const ROLLBACK_AFTER_FAILURES: u64 = 3;

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> ApiError {
        match e {
            LoadError::UnknownPlugin(_) | LoadError::UnknownVersion { .. } => {
                ApiError::NotFound(e.to_string())
            }
            LoadError::NoEarlierVersion(_) => ApiError::FailedPrecondition(e.to_string()),
            LoadError::Cache(_) => ApiError::Unavailable(e.to_string()),
            _ => ApiError::InvalidArgument(e.to_string()),
        }
    }
}

/// What checking a framework version against the frameworks that would run it needs, taken on the master
/// thread and used off it: the frameworks' names, configurations and data.
pub struct ProbeInputs {
    pub version: Arc<Version>,
    pub frameworks: Vec<(String, String, Arc<dyn KvBackend>)>,
}

impl ProbeInputs {
    /// Creates an instance of the version for each framework (its `init` with the framework's configuration
    /// and data, writes discarded). Blocks for as long as the `init`s take: call it off the async runtime.
    pub fn probe(&self) -> Result<(), ApiError> {
        for (name, config, kv) in &self.frameworks {
            crate::runtime::FrameworkInstance::probe_version(&self.version, config, kv.clone()).map_err(
                |e| {
                    ApiError::FailedPrecondition(format!(
                        "version {} cannot run framework `{name}`: {e}; nothing was changed",
                        self.version.number
                    ))
                },
            )?;
        }
        Ok(())
    }
}

impl Master {
    /// What probing `version` of plugin `name` needs: every framework that runs the plugin (none for an
    /// allocator).
    pub(super) fn probe_inputs(&self, version: Arc<Version>) -> ProbeInputs {
        let frameworks = if version.kind == PluginKind::Framework {
            self.frameworks
                .iter()
                .filter(|f| !f.removing && f.record.plugin == version.name)
                .map(|f| {
                    let kv: Arc<dyn KvBackend> = Arc::new(ProbeKv::new(f.kv.clone()));
                    (f.name.clone(), f.record.config.clone(), kv)
                })
                .collect()
        } else {
            Vec::new()
        };
        ProbeInputs { version, frameworks }
    }

    /// A loaded version by name and number.
    pub(super) fn version(&self, name: &str, number: u32) -> Result<Arc<Version>, ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        Ok(plugin
            .version(number)
            .ok_or_else(|| LoadError::UnknownVersion { name: name.into(), version: number })?)
    }

    fn info(&self, name: &str, number: u32) -> VersionInfo {
        let plugin = self.registry.get(name).expect("plugin exists");
        plugin.info().into_iter().find(|v| v.version == number).expect("version exists")
    }

    /// Writes a plugin version's component and record.
    pub(super) fn persist_version(
        &mut self,
        version: &Version,
        bytes: Option<&[u8]>,
        bundled: bool,
    ) -> anyhow::Result<()> {
        if let Some(bytes) = bytes {
            self.store.put_component(&version.sha256, bytes)?;
        }
        self.effects.batch.put_plugin_version(
            &version.name,
            version.number,
            &PluginVersionRecord {
                kind: version.kind,
                sha256: version.sha256.clone(),
                config: version.config.clone(),
                limits: version.limits,
                loaded_at_ms: version.loaded_at_ms,
                bundled,
                rolled_back: version.rolled_back(),
            },
        );
        Ok(())
    }

    /// Writes a plugin's activation history as the registry has it now.
    pub(super) fn persist_activations(&mut self, name: &str) {
        if let Some(plugin) = self.registry.get(name) {
            self.effects
                .batch
                .put_plugin(name, &PluginRecord { kind: plugin.kind, activations: plugin.activations() });
            for gone in plugin.take_dropped_versions() {
                self.effects.batch.delete_plugin_version(name, gone);
            }
        }
    }

    /// Adds an uploaded, compiled (and, for a framework plugin, probed) version and, when `activate`, makes
    /// it active (a hot swap when the plugin is in use). Frameworks on the plugin move to the new version
    /// at their next call.
    pub(super) fn add_version(
        &mut self,
        version: Arc<Version>,
        bytes: &[u8],
        activate: bool,
    ) -> Result<VersionInfo, ApiError> {
        if let Some(existing) = self.registry.get(&version.name)
            && existing.kind != version.kind
        {
            return Err(ApiError::InvalidArgument(format!(
                "plugin `{}` is a {} plugin; a new version must be one too",
                version.name, existing.kind
            )));
        }
        self.persist_version(&version, Some(bytes), false)
            .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
        let name = version.name.clone();
        let number = version.number;
        if activate {
            self.registry.activate(version);
        } else {
            self.registry.insert(version);
        }
        self.persist_activations(&name);
        self.cycles.wanted = true;
        Ok(self.info(&name, number))
    }

    /// Makes a loaded (and probed) version active.
    pub(super) fn activate_version(&mut self, name: &str, number: u32) -> Result<VersionInfo, ApiError> {
        self.registry.activate_number(name, number)?;
        self.persist_activations(name);
        self.cycles.wanted = true;
        Ok(self.info(name, number))
    }

    /// Goes back to the previously active version (which the caller probed).
    pub(super) fn rollback_plugin(&mut self, name: &str, expected: u32) -> Result<VersionInfo, ApiError> {
        let target = self.registry.rollback_target(name)?;
        if target.number != expected {
            return Err(ApiError::FailedPrecondition(format!(
                "plugin `{name}` changed while its rollback was checked; try again"
            )));
        }
        let version = self.registry.rollback(name)?;
        self.persist_activations(name);
        self.cycles.wanted = true;
        Ok(self.info(name, version.number))
    }

    /// A call to `version` failed (the runtime counted it by kind): after [`ROLLBACK_AFTER_FAILURES`] failures
    /// in a row the plugin goes back to the version active before, so a bad hot swap heals itself.
    pub(super) fn plugin_failed(&mut self, version: &Arc<Version>, error: &CallError) {
        let streak = self.choices.failure_streaks.entry((version.name.clone(), version.number)).or_default();
        *streak += 1;
        let streak = *streak;
        if streak < ROLLBACK_AFTER_FAILURES {
            return;
        }
        let Some(plugin) = self.registry.get(&version.name) else { return };
        if plugin.active().number != version.number || version.rolled_back().is_some() {
            return;
        }
        let Ok(target) = self.registry.rollback_target(&version.name) else {
            tracing::error!(target: "berth.master", plugin = %version.name, version = version.number, streak, %error,
                "the plugin keeps failing and has no earlier version to go back to");
            return;
        };
        let reason = format!(
            "rolled back to version {} after {streak} failed calls in a row; the last: {error}",
            target.number
        );
        tracing::error!(target: "berth.master", plugin = %version.name, version = version.number, %reason,
            "plugin version rolled back");
        version.set_rolled_back(reason);
        if self.registry.rollback(&version.name).is_ok() {
            let _ = self.persist_version(
                version,
                None,
                self.choices.bundled_versions.contains(&(version.name.clone(), version.number)),
            );
            self.persist_activations(&version.name);
            self.cycles.wanted = true;
        }
    }

    /// A call to `version` succeeded: its failure streak ends.
    pub(super) fn plugin_succeeded(&mut self, version: &Arc<Version>) {
        if !self.choices.failure_streaks.is_empty() {
            self.choices.failure_streaks.remove(&(version.name.clone(), version.number));
        }
    }

    /// Removes a plugin nothing uses.
    pub(super) fn remove_plugin(&mut self, name: &str) -> Result<(), ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        if self.choices.allocator == name {
            return Err(ApiError::FailedPrecondition(format!(
                "plugin `{name}` is the allocator in use; choose another with `berth allocator use` first"
            )));
        }
        let users: Vec<&str> = self
            .frameworks
            .iter()
            .filter(|f| !f.removing && f.record.plugin == name)
            .map(|f| f.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "plugin `{name}` runs frameworks {}; remove them first",
                users.join(", ")
            )));
        }
        let versions: Vec<u32> = plugin.info().iter().map(|v| v.version).collect();
        self.registry.remove(name)?;
        self.effects.batch.delete_plugin(name, versions);
        Ok(())
    }

    /// Chooses the allocator; the next cycle uses it. Returns the previous one.
    pub(super) fn use_allocator(&mut self, name: &str) -> Result<String, ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        if plugin.kind != PluginKind::Allocator {
            return Err(ApiError::InvalidArgument(format!(
                "plugin `{name}` is a framework plugin, not an allocator"
            )));
        }
        let previous = std::mem::replace(&mut self.choices.allocator, name.to_string());
        self.effects.batch.meta("allocator", Some(name));
        self.cycles.wanted = true;
        Ok(previous)
    }
}
