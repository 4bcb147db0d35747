//! Plugin operations that touch the master's state: activating uploaded versions (probing frameworks
//! that run the plugin first), rollback, removal, and choosing the allocator.

use std::sync::Arc;

use super::ApiError;
use super::core::Master;
use crate::runtime::{LoadError, PluginKind, Version, VersionInfo};

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

impl Master {
    /// Checks that every framework running plugin `name` accepts `version` (its `init` succeeds with the
    /// framework's configuration and stored data). The probes' store writes are discarded.
    fn probe_frameworks(&mut self, name: &str, version: &Arc<Version>) -> Result<(), ApiError> {
        if version.kind != PluginKind::Framework {
            return Ok(());
        }
        for framework in self.frameworks.values().filter(|f| !f.removing && f.record.plugin == name) {
            let Some(instance) = &framework.instance else { continue };
            framework.kv.begin_call();
            let result = instance.probe(version);
            framework.kv.rollback_call();
            result.map_err(|e| {
                ApiError::FailedPrecondition(format!(
                    "version {} cannot run framework `{}`: {e}; nothing was changed",
                    version.number, framework.name
                ))
            })?;
        }
        Ok(())
    }

    fn info(&self, name: &str, number: u32) -> VersionInfo {
        let plugin = self.registry.get(name).expect("plugin exists");
        plugin.info().into_iter().find(|v| v.version == number).expect("version exists")
    }

    /// Adds an uploaded, compiled version and, when `activate`, makes it active (a hot swap when the plugin
    /// is in use). Frameworks on the plugin move to the new version at their next call.
    pub fn add_version(
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
        if activate {
            self.probe_frameworks(&version.name.clone(), &version)?;
        }
        self.persist_new_version(&version, bytes, false)
            .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
        let name = version.name.clone();
        let number = version.number;
        if activate {
            self.registry.activate(version);
        } else {
            self.registry.insert(version);
        }
        self.persist_activations(&name);
        self.cycle_wanted = true;
        Ok(self.info(&name, number))
    }

    /// Makes an uploaded version active.
    pub fn activate_version(&mut self, name: &str, number: u32) -> Result<VersionInfo, ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        let version = plugin
            .version(number)
            .ok_or_else(|| LoadError::UnknownVersion { name: name.into(), version: number })?;
        self.probe_frameworks(name, &version)?;
        self.registry.activate_number(name, number)?;
        self.persist_activations(name);
        self.cycle_wanted = true;
        Ok(self.info(name, number))
    }

    /// Goes back to the previously active version.
    pub fn rollback_plugin(&mut self, name: &str) -> Result<VersionInfo, ApiError> {
        let target = self.registry.rollback_target(name)?;
        self.probe_frameworks(name, &target)?;
        let version = self.registry.rollback(name)?;
        self.persist_activations(name);
        self.cycle_wanted = true;
        Ok(self.info(name, version.number))
    }

    /// Removes a plugin nothing uses.
    pub fn remove_plugin(&mut self, name: &str) -> Result<(), ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        if self.allocator == name {
            return Err(ApiError::FailedPrecondition(format!(
                "plugin `{name}` is the allocator in use; choose another with `berth allocator use` first"
            )));
        }
        let users: Vec<&str> = self
            .frameworks
            .values()
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
        self.batch.delete_plugin(name, versions);
        Ok(())
    }

    /// Chooses the allocator; the next cycle uses it. Returns the previous one.
    pub fn use_allocator(&mut self, name: &str) -> Result<String, ApiError> {
        let plugin = self.registry.get(name).ok_or_else(|| LoadError::UnknownPlugin(name.into()))?;
        if plugin.kind != PluginKind::Allocator {
            return Err(ApiError::InvalidArgument(format!(
                "plugin `{name}` is a framework plugin, not an allocator"
            )));
        }
        let previous = std::mem::replace(&mut self.allocator, name.to_string());
        self.batch.meta("allocator", Some(name));
        self.cycle_wanted = true;
        Ok(previous)
    }
}
