//! Starting from the store: every plugin version (recompiled or taken from the artifact cache), agent,
//! framework, task (with its undelivered status updates) and decline filter; then the plugins the binary
//! carries, installed or upgraded, and the default framework on a fresh store.
//!
//! Frameworks come back without their plugin instances: those are created on workers once the master
//! runs, so a plugin's `init` never holds up the start.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::core::Master;
use super::frameworks::Framework;
use crate::bundled;
use crate::model::unix_ms;
use crate::runtime::NewVersion;
use crate::store::{FrameworkRecord, Loaded};

impl Master {
    /// Rebuilds the state from what the store held.
    pub(super) fn restore(&mut self, loaded: Loaded) {
        let Loaded { meta, plugins, plugin_versions, frameworks, tasks, mut kv, filters, agents } = loaded;
        for ((name, number), record) in &plugin_versions {
            let bytes = match self.store.component(&record.sha256) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(target: "berth.master", plugin = %name, version = number, error = %e,
                        "a stored plugin version cannot be read; skipping it");
                    continue;
                }
            };
            let new = NewVersion {
                name,
                kind: record.kind,
                bytes: &bytes,
                config: record.config.clone(),
                limits: record.limits,
                number: Some(*number),
            };
            if record.bundled {
                self.choices.bundled_versions.insert((name.clone(), *number));
            }
            match self.registry.prepare(new) {
                Ok(version) => {
                    if let Some(reason) = &record.rolled_back {
                        version.set_rolled_back(reason.clone());
                    }
                    drop(self.registry.insert(version));
                }
                Err(e) => {
                    tracing::error!(target: "berth.master", plugin = %name, version = number, error = %e,
                    "a stored plugin version no longer loads; skipping it")
                }
            }
        }
        for (name, record) in &plugins {
            let Some(plugin) = self.registry.get(name) else { continue };
            if let Some(&last) = record.activations.iter().rev().find(|n| plugin.version(**n).is_some()) {
                self.registry.restore_activations(name, &record.activations, last);
            }
        }
        self.choices.allocator = meta.get("allocator").cloned().unwrap_or_default();
        self.choices.default_framework_added = meta.contains_key("default-framework-added");

        for (agent_id, record) in agents {
            self.nodes.restore(agent_id, record);
        }

        let mut frameworks: Vec<(String, FrameworkRecord)> = frameworks.into_iter().collect();
        frameworks.sort_by_key(|(_, r)| r.id);
        for (name, record) in frameworks {
            let data = kv.remove(&name).unwrap_or_default();
            let kv = self.framework_kv(&name, data);
            self.frameworks.insert(Framework::new(name, record, kv));
        }

        for ((framework, task_id), (record, status)) in tasks {
            self.restore_task(&framework, task_id, record, status);
        }

        let now_ms = unix_ms();
        for (framework, agent, expires) in filters {
            match self.frameworks.id_of(&framework) {
                Some(id) if expires > now_ms => self.offers.restore_filter(id, agent, expires),
                _ => self.effects.batch.filter(&framework, &agent, None),
            }
        }
        tracing::info!(target: "berth.master", frameworks = self.frameworks.len(), tasks = self.tasks.len(),
            nodes = self.nodes.len(), plugins = self.registry.plugins().len(), "state restored");
    }

    /// Loads the plugins built into the binary: once on a fresh store, and again as a new version when
    /// the binary carries a different build than the active version that came from it. A version an
    /// operator uploaded is never replaced.
    pub(super) fn install_bundled(&mut self) -> anyhow::Result<()> {
        for (name, kind, bytes) in bundled::PLUGINS {
            let sha256 = crate::runtime::sha256_hex(bytes);
            let replace = match self.registry.get(name).map(|p| p.active()) {
                None => true,
                Some(active) => {
                    self.choices.bundled_versions.contains(&(name.to_string(), active.number))
                        && active.sha256 != sha256
                }
            };
            if !replace {
                continue;
            }
            let new = NewVersion {
                name,
                kind: *kind,
                bytes,
                config: String::new(),
                limits: self.config.default_limits,
                number: None,
            };
            let version =
                self.registry.prepare(new).with_context(|| format!("loading the bundled plugin `{name}`"))?;
            self.persist_version(&version, Some(bytes), true)?;
            self.choices.bundled_versions.insert((name.to_string(), version.number));
            self.registry.activate(version.clone());
            self.persist_activations(name);
            tracing::info!(target: "berth.master", plugin = %name, version = version.number, "bundled plugin installed");
        }
        if self.choices.allocator.is_empty() {
            self.choices.allocator = bundled::DEFAULT_ALLOCATOR.to_string();
            self.effects.batch.meta("allocator", Some(&self.choices.allocator));
        }
        // The default framework is added once; an operator who removes it keeps it removed. It starts like
        // a restored one: its instance is created once the master runs, and retried while that fails.
        if !self.choices.default_framework_added {
            let name = bundled::DEFAULT_FRAMEWORK.to_string();
            if self.frameworks.id_of(&name).is_none() {
                let record = FrameworkRecord {
                    id: self.frameworks.next_id(),
                    plugin: name.clone(),
                    role: "*".into(),
                    weight: 1.0,
                    config: String::new(),
                    suppressed: false,
                    created_at_ms: unix_ms(),
                };
                self.effects.batch.put_framework(&name, &record);
                let kv = self.framework_kv(&name, BTreeMap::new());
                self.frameworks.insert(Framework::new(name, record, kv));
            }
            self.choices.default_framework_added = true;
            self.effects.batch.meta("default-framework-added", Some("true"));
        }
        Ok(())
    }
}
