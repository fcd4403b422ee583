//! The wasmtime engine shared by all plugins: configuration, the epoch
//! ticker that enforces deadlines, one linker per world and `tuner:plugin`
//! version, the on-disk compile cache, and the HTTP service plugins'
//! requests run on.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::{WitVersion, v0_1_0, v0_2_0};
use super::imports::http::HttpService;
use super::limits::{EPOCH_TICK, PluginLimits};
use super::state::PluginState;
use super::{Kind, LoadError};

/// Where a plugin's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CompileSource {
    /// Compiled now and written to the cache.
    Compiled,
    /// Loaded from the compile cache.
    Cached,
    /// Compiled now; no cache configured (or writing it failed).
    Uncached,
}

/// Engine, linkers and caches shared by every plugin.
pub struct Runtime {
    pub engine: Engine,
    pub limits: PluginLimits,
    linkers_v0_1_0: Linkers,
    linkers_v0_2_0: Linkers,
    pub(crate) http: Arc<HttpService>,
    cache_dir: Option<PathBuf>,
    engine_hash: String,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Creates the engine. `cache_dir` holds compiled plugins; `None`
    /// compiles every time.
    pub fn new(limits: PluginLimits, cache_dir: Option<PathBuf>) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(2 << 20)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:?}"))?;

        let linkers_v0_1_0 = Linkers::v0_1_0(&engine)?;
        let linkers_v0_2_0 = Linkers::v0_2_0(&engine)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());

        Ok(Arc::new(Self {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            limits,
            linkers_v0_1_0,
            linkers_v0_2_0,
            http: Arc::new(HttpService::new()?),
            cache_dir,
            engine_hash,
        }))
    }

    /// The linker for plugins of `kind` built for `wit`.
    pub(crate) fn linker(&self, wit: WitVersion, kind: Kind) -> &Linker<PluginState> {
        let linkers = match wit {
            WitVersion::V0_1_0 => &self.linkers_v0_1_0,
            WitVersion::V0_2_0 => &self.linkers_v0_2_0,
        };
        match kind {
            Kind::Format => &linkers.format,
            Kind::Source => &linkers.source,
            Kind::Method => &linkers.method,
            Kind::Reward => &linkers.reward,
        }
    }

    /// The compile cache folder, if any (it also keeps the degraded state
    /// of plugins, so it outlives one process).
    pub(crate) fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache_dir.as_deref()
    }

    /// Compiles a component, or loads it from the compile cache.
    ///
    /// Cache entries are named `<sha256 of the wasm>-<engine hash>.cwasm`,
    /// so a changed plugin or a different wasmtime build never picks up a
    /// stale entry. Only files this cache wrote are ever deserialised; a
    /// precompiled file in the plugin folder is never trusted.
    pub fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
    ) -> Result<(Component, CompileSource), LoadError> {
        let cache_file = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{sha256}-{}.cwasm", self.engine_hash)));
        if let Some(path) = cache_file.as_ref().filter(|p| p.is_file()) {
            // SAFETY: the file was written by `Component::serialize` below, into
            // tuner's own cache folder, under a name that binds it to these
            // exact wasm bytes and this engine's configuration.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok((component, CompileSource::Cached)),
                Err(err) => {
                    tracing::warn!(file = %path.display(), "ignoring unusable compile cache entry: {err}");
                }
            }
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let Some(path) = cache_file else {
            return Ok((component, CompileSource::Uncached));
        };
        let stored = component
            .serialize()
            .map_err(|e| e.to_string())
            .and_then(|code| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                }
                crate::fsio::write_atomically(&path, &code).map_err(|e| e.to_string())
            });
        match stored {
            Ok(()) => Ok((component, CompileSource::Compiled)),
            Err(err) => {
                tracing::warn!(file = %path.display(), "cannot write compile cache: {err}");
                Ok((component, CompileSource::Uncached))
            }
        }
    }

    /// Compiles without touching the cache (for `plugins check`).
    pub fn compile_uncached(&self, bytes: &[u8]) -> Result<Component, LoadError> {
        Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))
    }
}

/// The three worlds' linkers of one `tuner:plugin` version. Versions get
/// separate linkers, so a component only ever sees its own version's
/// interfaces.
struct Linkers {
    format: Linker<PluginState>,
    source: Linker<PluginState>,
    method: Linker<PluginState>,
    /// Reward plugins exist since 0.2.0; older versions get an empty linker
    /// that is never used.
    reward: Linker<PluginState>,
}

fn linker_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// One linker per world of the bindings module `$version`: each version's
/// generated worlds have their own `add_to_linker`, over the same host state.
macro_rules! linkers_for {
    ($engine:expr, $version:ident, $reward:expr) => {{
        use $version::{format::Format, method::Method, source::Source};
        let mut format = Linker::new($engine);
        Format::add_to_linker::<_, HasSelf<_>>(&mut format, |s| s).map_err(linker_error)?;
        let mut source = Linker::new($engine);
        Source::add_to_linker::<_, HasSelf<_>>(&mut source, |s| s).map_err(linker_error)?;
        let mut method = Linker::new($engine);
        Method::add_to_linker::<_, HasSelf<_>>(&mut method, |s| s).map_err(linker_error)?;
        Ok(Linkers {
            format,
            source,
            method,
            reward: $reward,
        })
    }};
}

impl Linkers {
    fn v0_2_0(engine: &Engine) -> anyhow::Result<Self> {
        let mut reward = Linker::new(engine);
        v0_2_0::reward::Reward::add_to_linker::<_, HasSelf<_>>(&mut reward, |s| s)
            .map_err(linker_error)?;
        linkers_for!(engine, v0_2_0, reward)
    }

    fn v0_1_0(engine: &Engine) -> anyhow::Result<Self> {
        linkers_for!(engine, v0_1_0, Linker::new(engine))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`]; plugin deadlines are
/// counted in these ticks. Stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tuner-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
