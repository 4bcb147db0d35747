//! The one wasmtime [`Engine`], its two linkers, the epoch ticker that enforces deadlines, and compilation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, OptLevel};

use super::bindings::allocator::Allocator;
use super::bindings::framework::Framework;
use super::cache::{ArtifactCache, deserialize};
use super::state::PluginState;
use super::{COMPILER_BUILD, LoadError, PluginKind, blocking, validate};

/// How often the engine's epoch advances. A call's deadline is enforced to within one tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Everything plugins share: the engine, the linkers, the artifact cache. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    /// The engine's settings, for the engines that compile (see [`Runtime::precompile`]).
    config: Config,
    allocator_linker: Linker<PluginState>,
    framework_linker: Linker<PluginState>,
    cache: Option<ArtifactCache>,
    /// Held for its `Drop`, which stops the thread.
    _ticker: EpochTicker,
}

/// A component compiled (or loaded from the cache) and checked against its world.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) sha256: String,
    pub(crate) size: usize,
    pub(crate) compile_time: Duration,
    pub(crate) from_cache: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cache", &self.cache).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Creates the runtime. Precompiled artifacts are cached in `cache` when given (the daemon passes
    /// `<data-dir>/plugins/cache`); without one every load compiles.
    pub fn new(cache: Option<ArtifactCache>) -> anyhow::Result<Arc<Runtime>> {
        let config = engine_config()?;
        let engine = Engine::new(&config)?;

        let mut allocator_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut allocator_linker)?;
        blocking::shadow_poll(&mut allocator_linker)?;
        Allocator::add_to_linker::<_, HasSelf<PluginState>>(&mut allocator_linker, |s| s)?;

        let mut framework_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut framework_linker)?;
        blocking::shadow_poll(&mut framework_linker)?;
        Framework::add_to_linker::<_, HasSelf<PluginState>>(&mut framework_linker, |s| s)?;

        let ticker = EpochTicker::start(&engine);
        let cache = cache.map(|c| c.for_engine(&engine));
        Ok(Arc::new(Runtime { engine, config, allocator_linker, framework_linker, cache, _ticker: ticker }))
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self, kind: PluginKind) -> &Linker<PluginState> {
        match kind {
            PluginKind::Allocator => &self.allocator_linker,
            PluginKind::Framework => &self.framework_linker,
        }
    }

    /// Epoch ticks that make up `deadline`, rounded up, plus one for the tick already under way.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64 + 1
    }

    /// Checks that `bytes` is a component of `kind`'s world and compiles it, or takes the compiled
    /// artifact from the cache. Blocks for as long as compilation takes (tens of milliseconds to
    /// seconds): call it off the async runtime.
    pub(crate) fn compile(&self, kind: PluginKind, bytes: &[u8]) -> Result<Compiled, LoadError> {
        validate::header(bytes)?;
        let sha256 = hex::encode(Sha256::digest(bytes));
        let started = Instant::now();
        let precompile = || self.precompile(bytes);
        let (component, from_cache) = match &self.cache {
            Some(cache) => cache.load_or_compile(&self.engine, &sha256, precompile)?,
            None => (
                deserialize(&self.engine, &precompile()?)
                    .map_err(|e| LoadError::Invalid(format!("{e:#}")))?,
                false,
            ),
        };
        let compile_time = started.elapsed();
        validate::exports(&self.engine, &component, kind)?;
        Ok(Compiled { component, sha256, size: bytes.len(), compile_time, from_cache })
    }

    /// Compiles `bytes` to an artifact for this runtime's engine, on an engine of its own with the same
    /// settings that is dropped afterwards: Cranelift keeps its working memory in the engine that
    /// compiled, for the next compilation (11 MiB after the two bundled plugins), and a daemon that
    /// compiles a few times in its life should not hold that forever.
    fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        let compiler = Engine::new(&self.config).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        compiler.precompile_component(bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }
}

/// The engine's settings.
fn engine_config() -> anyhow::Result<Config> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // Plugins are called synchronously, one call per instance at a time.
        .concurrency_support(false)
        // Deadlines. The check in compiled code is berth's own (host/vendor/README.md): it traps as soon as
        // the deadline passes, so an epoch deadline callback or async yield set on a store would be ignored.
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .module_version(wasmtime::ModuleVersionStrategy::Custom(COMPILER_BUILD.into()))?;
    if let Some(strategy) = profiler_from_env()? {
        config.profiler(strategy);
    }
    Ok(config)
}

/// The profiling agent `BERTH_WASM_PROFILE` asks for: `perfmap` writes `/tmp/perf-<pid>.map`, so that
/// `perf record` / `perf report` name the plugins' compiled functions. Unset or empty: none.
fn profiler_from_env() -> anyhow::Result<Option<wasmtime::ProfilingStrategy>> {
    match std::env::var("BERTH_WASM_PROFILE").as_deref() {
        Err(_) | Ok("") | Ok("none") => Ok(None),
        Ok("perfmap") => Ok(Some(wasmtime::ProfilingStrategy::PerfMap)),
        Ok(other) => {
            anyhow::bail!("BERTH_WASM_PROFILE={other} is not supported (use `perfmap`, or leave it unset)")
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread, which is how a call that runs
/// past its deadline gets interrupted. Stops when the runtime is dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
