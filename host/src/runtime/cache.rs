//! Precompiled plugin artifacts on disk, keyed by the component's sha256 and the engine's compatibility
//! hash, so a restart or a rollback loads in milliseconds instead of recompiling.
//!
//! Only bytes this daemon compiled itself are ever deserialized: uploaded bytes always go through
//! `Engine::precompile_component`, and the artifact is read back from a directory the daemon owns, opened
//! with `cap-std` so no name can leave it.

use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::Dir;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;

/// The artifact cache: a directory of `<sha256>-<engine>.cwasm` files.
pub struct ArtifactCache {
    dir: Dir,
    engine_hash: String,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache").field("engine_hash", &self.engine_hash).finish()
    }
}

impl ArtifactCache {
    /// A cache in `dir`, which the caller opened (and created) with the authority to do so.
    pub fn new(dir: Dir) -> ArtifactCache {
        ArtifactCache { dir, engine_hash: String::new() }
    }

    /// Opens (creating it if needed) the cache directory at `path`: the one place the runtime uses ambient
    /// authority; every file inside is then reached through the directory handle.
    pub fn open(path: &std::path::Path) -> io::Result<ArtifactCache> {
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(ArtifactCache::new(dir))
    }

    /// Binds the cache to an engine: artifacts are only valid for the engine settings that made them.
    pub(crate) fn for_engine(mut self, engine: &Engine) -> ArtifactCache {
        // `DefaultHasher::new()` is SipHash with fixed keys: the same settings give the same name on every
        // run. Should the name ever collide, wasmtime's own check in `deserialize` still refuses a
        // mismatched artifact, and we recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        self.engine_hash = format!("{:016x}", hasher.finish());
        self
    }

    fn file_name(&self, sha256: &str) -> String {
        format!("{sha256}-{}.cwasm", self.engine_hash)
    }

    /// The compiled component for `bytes` (whose digest is `sha256`), from the cache if present and
    /// valid, else compiled now and stored. Returns whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        precompile: impl FnOnce() -> Result<Vec<u8>, LoadError>,
    ) -> Result<(Component, bool), LoadError> {
        let name = self.file_name(sha256);
        if let Ok(artifact) = self.dir.read(&name) {
            match deserialize(engine, &artifact) {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(target: "berth.runtime", artifact = %name, error = %e,
                        "discarding an unusable cached artifact");
                    let _ = self.dir.remove_file(&name);
                }
            }
        }
        let artifact = precompile()?;
        self.store(&name, &artifact)?;
        let component = deserialize(engine, &artifact).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((component, false))
    }

    /// Writes the artifact under a temporary name and renames it, so a crash never leaves a torn file
    /// under the real name.
    fn store(&self, name: &str, artifact: &[u8]) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temp = format!("{name}.{}-{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut file = self.dir.create(&temp)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        drop(file);
        self.dir.rename(&temp, &self.dir, name)
    }
}

/// Turns an artifact that this daemon compiled back into a component.
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: `artifact` was produced by `Engine::precompile_component` in this daemon (it is read only
    // from the cache directory, which only `store` writes, or comes straight from the compiler);
    // uploaded bytes never reach this function.
    // wasmtime additionally checks the artifact's engine version and settings and errors on mismatch.
    unsafe { Component::deserialize(engine, artifact) }
}
