//! Precompiled plugin artifacts on disk, keyed by the component's sha256, the engine's compatibility hash and
//! the exact compiler build, so a restart or a rollback loads in milliseconds instead of recompiling.
//!
//! Deserializing an artifact runs its machine code, so only artifacts this daemon compiled itself are
//! ever loaded:
//! - uploaded bytes always go through `Engine::precompile_component`, never to `deserialize`;
//! - the directory is created private (0700) and refused if anyone but its owner may write it;
//! - every artifact's sha256 is kept in the daemon's own store (an [`ArtifactLedger`]) when it is
//!   written, and checked before the artifact is deserialized, so a file swapped in the directory is
//!   recompiled instead of run;
//! - the compiler build is written into each artifact (wasmtime's `module_version`, see
//!   `runtime::COMPILER_BUILD`) and is part of the file name, so code from another build is refused;
//! - files are reached through a `cap-std` directory handle, so no name can leave the directory.

use std::hash::{Hash, Hasher};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cap_std::fs::Dir;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{COMPILER_BUILD, LoadError};

/// Where the digest of each artifact the daemon wrote is kept: its store, which only the daemon writes.
pub trait ArtifactLedger: Send + Sync {
    /// The sha256 recorded for the artifact `name`, if any.
    fn digest(&self, name: &str) -> io::Result<Option<String>>;
    /// Records the sha256 of the artifact `name`, durably, before the artifact is used.
    fn record(&self, name: &str, sha256: &str) -> io::Result<()>;
}

/// The artifact cache: a directory of `<sha256>-<engine>.cwasm` files.
pub struct ArtifactCache {
    dir: Dir,
    engine_hash: String,
    ledger: Option<Arc<dyn ArtifactLedger>>,
}

impl std::fmt::Debug for ArtifactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactCache").field("engine_hash", &self.engine_hash).finish()
    }
}

/// Why the cache directory cannot be used.
fn unsafe_dir(path: &Path, why: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refusing the artifact cache {}: {why}", path.display()),
    )
}

impl ArtifactCache {
    /// Opens (creating it, private to this user) the cache directory at `path`: the one place the runtime
    /// uses ambient authority; every file inside is then reached through the directory handle. A directory
    /// that others may write is refused: anything in it could be loaded as machine code.
    pub fn open(path: &Path, ledger: Option<Arc<dyn ArtifactLedger>>) -> io::Result<ArtifactCache> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            if !path.exists() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)?;
            }
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o022 != 0 {
                return Err(unsafe_dir(
                    path,
                    format!("its mode is {:o}, so others may write it (chmod 700 it)", mode & 0o777),
                ));
            }
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(path)?;
        let dir = Dir::open_ambient_dir(path, cap_std::ambient_authority())?;
        Ok(ArtifactCache { dir, engine_hash: String::new(), ledger })
    }

    /// Binds the cache to an engine: artifacts are only valid for the engine settings and the compiler
    /// build that made them.
    pub(crate) fn for_engine(mut self, engine: &Engine) -> ArtifactCache {
        // `DefaultHasher::new()` is SipHash with fixed keys: the same settings give the same name on every
        // run. Should the name ever collide, wasmtime's own checks in `deserialize` (its compatibility
        // hash and the module version) still refuse a mismatched artifact, and we recompile.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        COMPILER_BUILD.hash(&mut hasher);
        self.engine_hash = format!("{:016x}", hasher.finish());
        self
    }

    fn file_name(&self, sha256: &str) -> String {
        format!("{sha256}-{}.cwasm", self.engine_hash)
    }

    /// Whether `artifact` is what this daemon wrote under `name`. Without a ledger (tools and tests that
    /// pass none), only the daemon's own directory vouches for it.
    fn vouched(&self, name: &str, artifact: &[u8]) -> bool {
        let Some(ledger) = &self.ledger else { return true };
        match ledger.digest(name) {
            Ok(Some(recorded)) => recorded == hex::encode(Sha256::digest(artifact)),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(target: "berth.runtime", artifact = %name, error = %e,
                    "cannot read the artifact ledger; recompiling");
                false
            }
        }
    }

    /// The compiled component for `bytes` (whose digest is `sha256`), from the cache if present, vouched
    /// for and valid, else compiled now and stored. Returns whether it came from the cache.
    pub(crate) fn load_or_compile(
        &self,
        engine: &Engine,
        sha256: &str,
        precompile: impl FnOnce() -> Result<Vec<u8>, LoadError>,
    ) -> Result<(Component, bool), LoadError> {
        let name = self.file_name(sha256);
        if let Ok(artifact) = self.dir.read(&name) {
            if self.vouched(&name, &artifact) {
                match deserialize(engine, &artifact) {
                    Ok(component) => return Ok((component, true)),
                    Err(e) => {
                        tracing::warn!(target: "berth.runtime", artifact = %name, error = %e,
                            "discarding an unusable cached artifact");
                    }
                }
            } else {
                tracing::warn!(target: "berth.runtime", artifact = %name,
                    "a cached artifact this daemon has no record of writing (or whose digest differs); \
                     recompiling rather than loading it");
            }
            let _ = self.dir.remove_file(&name);
        }
        let artifact = precompile()?;
        self.store(&name, &artifact)?;
        let component = deserialize(engine, &artifact).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        Ok((component, false))
    }

    /// Records the artifact's digest, then writes it under a temporary name and renames it, so a crash
    /// never leaves a torn file under the real name.
    fn store(&self, name: &str, artifact: &[u8]) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if let Some(ledger) = &self.ledger {
            ledger.record(name, &hex::encode(Sha256::digest(artifact)))?;
        }
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
    // SAFETY: `artifact` was produced by `Engine::precompile_component` in this daemon: it comes straight
    // from the compiler, or from the cache directory (private to the daemon's user) with a digest the
    // daemon recorded in its own store when it wrote it. Uploaded bytes never reach this function.
    // wasmtime additionally checks the artifact's engine settings and module version (the compiler
    // build) and errors on a mismatch.
    unsafe { Component::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Ledger(Mutex<HashMap<String, String>>);

    impl ArtifactLedger for Ledger {
        fn digest(&self, name: &str) -> io::Result<Option<String>> {
            Ok(self.0.lock().unwrap().get(name).cloned())
        }
        fn record(&self, name: &str, sha256: &str) -> io::Result<()> {
            self.0.lock().unwrap().insert(name.into(), sha256.into());
            Ok(())
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_directory_others_may_write_is_refused_and_a_new_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("cache");
        ArtifactCache::open(&fresh, None).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = ArtifactCache::open(&fresh, None).unwrap_err().to_string();
        assert!(error.contains("others may write it"), "{error}");
    }

    #[test]
    fn an_artifact_the_ledger_does_not_vouch_for_is_recompiled_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let ledger = Arc::new(Ledger::default());
        let cache =
            ArtifactCache::open(&dir.path().join("c"), Some(ledger.clone())).unwrap().for_engine(&engine);
        let wat = wat::parse_str("(component)").unwrap();
        let compile = || engine.precompile_component(&wat).map_err(|e| LoadError::Invalid(e.to_string()));
        let (_, cached) = cache.load_or_compile(&engine, "abc", compile).unwrap();
        assert!(!cached);
        let (_, cached) = cache.load_or_compile(&engine, "abc", compile).unwrap();
        assert!(cached, "the daemon's own artifact is loaded");

        // Someone rewrites the file (with a valid artifact of something else): it is not loaded.
        let other =
            engine.precompile_component(&wat::parse_str("(component (core module))").unwrap()).unwrap();
        cache.dir.write(cache.file_name("abc"), &other).unwrap();
        let (_, cached) = cache.load_or_compile(&engine, "abc", compile).unwrap();
        assert!(!cached, "recompiled rather than trusting the file");

        // A file the ledger never heard of is not loaded either.
        ledger.0.lock().unwrap().clear();
        let (_, cached) = cache.load_or_compile(&engine, "abc", compile).unwrap();
        assert!(!cached);
    }
}
