//! A loaded plugin: its metadata, compiled component, and the sandboxed
//! instance calls run in.
//!
//! Each plugin keeps a small pool of instances (one store each, at most
//! `max_instances`): a call takes an idle one, or builds a new one while
//! under the cap, or waits for one to come back, so independent calls into
//! one plugin run side by side instead of queueing behind a slow one. Each
//! call gets a fresh epoch deadline; if the call traps, runs out of time or
//! hits its memory cap, its instance is dropped, not returned to the pool,
//! so a misbehaving plugin cannot poison later calls.
//!
//! `detect` runs under its own short deadline (`detect_timeout`); a format
//! plugin whose `detect` fails that way is degraded: left out of detection
//! for `detect_cooldown` (a reload builds a new `Plugin` and ends it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::{Component, Resource};
use wasmtime::{Store, UpdateDeadline};

use super::bindings::format::Format;
use super::bindings::format::exports::tuner::plugin::format_plugin;
use super::bindings::method::Method;
use super::bindings::method::exports::tuner::plugin::method_plugin;
use super::bindings::source::Source;
use super::bindings::source::exports::tuner::plugin::source_plugin;
use super::bindings::{PluginInfo, format::tuner::plugin::types::PluginError};
use super::imports::http::HttpGate;
use super::imports::model::{
    BatchHandle, MethodBatch, MethodLoss, Plan, PolicyBackend, PolicyHandle,
};
use super::limits::ticks;
use super::runtime::{CompileSource, Runtime};
use super::state::PluginState;
use super::{CallError, Kind};

/// Where a plugin was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Compiled into the binary.
    Bundled,
    /// The user plugin folder.
    Directory,
    /// A file checked with `tuner plugins check`, not installed.
    File,
}

/// Where a plugin's name, version and description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetadataSource {
    /// The `NAME.toml` manifest.
    Manifest,
    /// The plugin's `info()` export.
    Info,
}

/// Everything known about a loaded plugin. Serialised as is by
/// `tuner plugins list --json` and `GET /api/plugins`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginMeta {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub description: String,
    /// Hosts the plugin may reach through the host's `http` interface.
    pub hosts: Vec<String>,
    pub origin: Origin,
    /// The `.wasm` file, for plugins loaded from disk.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// SHA-256 of the `.wasm` bytes.
    pub sha256: String,
    pub size_bytes: u64,
    /// The `tuner:plugin` version the plugin targets.
    pub wit_version: String,
    /// The tuner-sdk WIT version stamped into the plugin, if it used the SDK.
    pub sdk_version: Option<String>,
    pub metadata_from: MetadataSource,
    pub compiled: CompileSource,
}

/// Call counters, for `plugins info` and the API.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct CallStats {
    pub calls: u64,
    pub failures: u64,
    /// Instances created (the first, plus one after each failure).
    pub instances: u64,
}

enum Bindings {
    Format(Format),
    Source(Source),
    Method(Method),
}

struct Live {
    store: Store<PluginState>,
    bindings: Bindings,
}

/// The instances of one plugin.
#[derive(Default)]
struct Pool {
    /// Instances waiting for a call (the most recently used last).
    idle: Vec<Live>,
    /// Instances in existence or being built: idle, in a call, or starting.
    count: usize,
}

/// A plugin left out of format detection for a while, as the API and
/// `tuner plugins list` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Degraded {
    /// The call that failed (`detect`).
    pub call: String,
    /// Why: the error of that call.
    pub reason: String,
    /// When the plugin is asked again, in seconds since the Unix epoch.
    pub until_unix: u64,
    /// Seconds until then.
    pub retry_in_secs: u64,
}

struct DegradedState {
    call: String,
    reason: String,
    until: Instant,
    until_wall: SystemTime,
}

/// An instance taken from the pool for one call. Dropped without
/// [`Lease::give_back`] (an error or a panic), the instance is discarded and
/// its place in the pool freed.
struct Lease<'a> {
    plugin: &'a Plugin,
    live: Option<Live>,
}

impl Lease<'_> {
    fn give_back(mut self) {
        let live = self.live.take().expect("leased instance");
        let mut pool = self
            .plugin
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pool.idle.push(live);
        drop(pool);
        self.plugin.freed.notify_one();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.live.take().is_some() {
            self.plugin.release_slot();
        }
    }
}

/// A loaded, callable plugin.
pub struct Plugin {
    pub meta: PluginMeta,
    component: Component,
    runtime: Arc<Runtime>,
    http: Option<HttpGate>,
    pool: Mutex<Pool>,
    /// Signalled when an instance returns to the pool or a place frees up.
    freed: Condvar,
    degraded: Mutex<Option<DegradedState>>,
    calls: AtomicU64,
    failures: AtomicU64,
    instances: AtomicU64,
}

impl Plugin {
    /// Wraps a validated component. `http` is the network gate for source
    /// plugins (built from the declared hosts).
    pub(crate) fn new(
        meta: PluginMeta,
        component: Component,
        runtime: Arc<Runtime>,
        http: Option<HttpGate>,
    ) -> Self {
        let degraded = Self::saved_degraded(&runtime, &meta.sha256);
        Self {
            meta,
            component,
            runtime,
            http,
            pool: Mutex::new(Pool::default()),
            freed: Condvar::new(),
            degraded: Mutex::new(degraded),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            instances: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.meta.name
    }

    pub fn kind(&self) -> Kind {
        self.meta.kind
    }

    /// The network gate of a source plugin: the host grants user-configured
    /// endpoints through it and builds its transfer client from it.
    pub fn network(&self) -> Option<&HttpGate> {
        self.http.as_ref()
    }

    pub fn stats(&self) -> CallStats {
        CallStats {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
        }
    }

    /// Whether the plugin is left out of format detection now, and why.
    pub fn degraded(&self) -> Option<Degraded> {
        let state = self.degraded.lock().unwrap_or_else(PoisonError::into_inner);
        let d = state.as_ref()?;
        let left = d.until.checked_duration_since(Instant::now())?;
        Some(Degraded {
            call: d.call.clone(),
            reason: d.reason.clone(),
            until_unix: d
                .until_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|t| t.as_secs())
                .unwrap_or(0),
            retry_in_secs: left.as_secs_f64().ceil() as u64,
        })
    }

    fn degrade(&self, call: &str, err: &CallError) {
        let cooldown = self.runtime.limits.detect_cooldown;
        tracing::warn!(
            plugin = %self.meta.name,
            call,
            "left out of format detection for {}s: {err}",
            cooldown.as_secs()
        );
        *self.degraded.lock().unwrap_or_else(PoisonError::into_inner) = Some(DegradedState {
            call: call.to_string(),
            reason: err.to_string(),
            until: Instant::now() + cooldown,
            until_wall: SystemTime::now() + cooldown,
        });
        // Kept beside the compile cache, by the plugin's sha256, so other
        // tuner processes (`tuner data`, `tuner plugins list`) see it too and
        // a changed plugin starts afresh. Best effort.
        if let (Some(path), Some(d)) = (
            Self::degraded_file(&self.runtime, &self.meta.sha256),
            self.degraded(),
        ) {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(path.parent().expect("has a parent"))?;
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::to_vec(&d)?)?;
                std::fs::rename(&tmp, &path)
            };
            if let Err(e) = write() {
                tracing::debug!(file = %path.display(), "cannot record the degraded state: {e}");
            }
        }
    }

    fn degraded_file(runtime: &Runtime, sha256: &str) -> Option<PathBuf> {
        let valid = !sha256.is_empty() && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then(|| {
            runtime
                .cache_dir()
                .map(|d| d.join("degraded").join(format!("{sha256}.json")))
        })?
    }

    /// A cool-down recorded by an earlier process, if it is still running.
    fn saved_degraded(runtime: &Runtime, sha256: &str) -> Option<DegradedState> {
        let path = Self::degraded_file(runtime, sha256)?;
        let d: Degraded = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let until_wall = SystemTime::UNIX_EPOCH + Duration::from_secs(d.until_unix);
        let left = until_wall.duration_since(SystemTime::now()).ok()?;
        // Never longer than this process's own cool-down (a clock jump).
        let left = left.min(runtime.limits.detect_cooldown);
        Some(DegradedState {
            call: d.call,
            reason: d.reason,
            until: Instant::now() + left,
            until_wall,
        })
    }

    /// Frees the place of an instance that is gone (discarded or never built).
    fn release_slot(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.count = pool.count.saturating_sub(1);
        drop(pool);
        self.freed.notify_one();
    }

    /// An idle instance, or a new one while the pool is below its cap, or
    /// (at the cap) the next one to come back.
    fn lease(&self, deadline: Duration) -> Result<Lease<'_>, CallError> {
        let cap = self.runtime.limits.max_instances.max(1);
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(live) = pool.idle.pop() {
                return Ok(Lease {
                    plugin: self,
                    live: Some(live),
                });
            }
            if pool.count < cap {
                pool.count += 1;
                drop(pool);
                // Built outside the lock: other calls go on meanwhile.
                return match self.instantiate(deadline) {
                    Ok(live) => Ok(Lease {
                        plugin: self,
                        live: Some(live),
                    }),
                    Err(err) => {
                        self.release_slot();
                        Err(err)
                    }
                };
            }
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn instantiate(&self, deadline: Duration) -> Result<Live, CallError> {
        let rt = &self.runtime;
        let state = PluginState::new(
            Arc::from(self.meta.name.as_str()),
            &rt.limits,
            self.http.clone(),
        );
        let mut store = Store::new(&rt.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(deadline));
        if self.meta.kind == Kind::Method {
            // The deadline bounds the plugin's own work, not the model's:
            // time spent in host forward passes is given back once.
            store.epoch_deadline_callback(|mut ctx| {
                let spent = std::mem::take(&mut ctx.data_mut().method.host_time);
                Ok(if spent.is_zero() {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Continue(ticks(spent))
                })
            });
        }
        let fail = |e: wasmtime::Error| CallError::Instantiate {
            plugin: self.meta.name.clone(),
            message: format!("{e:#}"),
        };
        let bindings = match self.meta.kind {
            Kind::Format => Bindings::Format(
                Format::instantiate(&mut store, &self.component, &rt.format_linker)
                    .map_err(fail)?,
            ),
            Kind::Source => Bindings::Source(
                Source::instantiate(&mut store, &self.component, &rt.source_linker)
                    .map_err(fail)?,
            ),
            Kind::Method => Bindings::Method(
                Method::instantiate(&mut store, &self.component, &rt.method_linker)
                    .map_err(fail)?,
            ),
        };
        self.instances.fetch_add(1, Ordering::Relaxed);
        Ok(Live { store, bindings })
    }

    /// Runs `f` against an instance from the pool under a deadline. On any
    /// failure the instance is discarded; otherwise it goes back to the pool.
    fn call<R>(
        &self,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let _span = tracing::debug_span!("plugin_call", plugin = %self.meta.name, call).entered();
        let mut lease = match self.lease(deadline) {
            Ok(lease) => lease,
            Err(err) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
        };
        let live = lease.live.as_mut().expect("leased instance");
        live.store.set_epoch_deadline(ticks(deadline));
        live.store.data_mut().limiter.refused = None;
        match f(&mut live.store, &live.bindings) {
            Ok(value) => {
                lease.give_back();
                Ok(value)
            }
            Err(err) => {
                let refused = live.store.data().limiter.refused.is_some();
                // The instance may be in any state after a trap: never reuse
                // it (dropping the lease discards it and frees its place).
                drop(lease);
                self.failures.fetch_add(1, Ordering::Relaxed);
                let err = self.classify(call, deadline, refused, err);
                tracing::warn!(plugin = %self.meta.name, call, "{err}");
                Err(err)
            }
        }
    }

    fn classify(
        &self,
        call: &str,
        deadline: Duration,
        refused: bool,
        err: wasmtime::Error,
    ) -> CallError {
        let plugin = self.meta.name.clone();
        let call = call.to_string();
        if refused {
            return CallError::MemoryLimit {
                plugin,
                call,
                limit_mib: self.runtime.limits.memory_bytes >> 20,
            };
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::Timeout {
                setting: match call.as_str() {
                    "info" => Some("load_timeout_secs"),
                    // The fixed detection deadline, unless the (configurable)
                    // call deadline is the shorter one.
                    "detect" | "extensions" if deadline < self.timeout() => None,
                    _ => Some("call_timeout_secs"),
                },
                plugin,
                call,
                limit: deadline,
            },
            Some(trap) => {
                let mut message = trap.to_string();
                if *trap == wasmtime::Trap::UnreachableCodeReached {
                    message.push_str(" (usually a panic inside the plugin)");
                }
                CallError::Trap {
                    plugin,
                    call,
                    message,
                }
            }
            None => CallError::Trap {
                plugin,
                call,
                message: format!("{err:#}"),
            },
        }
    }

    fn wrong_kind(&self, call: &str, expected: Kind) -> CallError {
        CallError::WrongKind {
            plugin: self.meta.name.clone(),
            call: call.to_string(),
            actual: self.meta.kind,
            expected,
        }
    }

    fn timeout(&self) -> Duration {
        self.runtime.limits.call_timeout
    }

    /// The deadline of the detection calls (`detect`, `extensions`).
    fn detect_timeout(&self) -> Duration {
        self.runtime.limits.detect_timeout.min(self.timeout())
    }

    /// `info()`, under the (shorter) load deadline.
    pub fn info(&self) -> Result<PluginInfo, CallError> {
        self.call(
            "info",
            self.runtime.limits.load_timeout,
            |store, b| match b {
                Bindings::Format(b) => b.tuner_plugin_format_plugin().call_info(store),
                Bindings::Source(b) => b.tuner_plugin_source_plugin().call_info(store),
                Bindings::Method(b) => b.tuner_plugin_method_plugin().call_info(store),
            },
        )
    }

    /// Format plugins: confidence that a file is in this format, under the
    /// short detection deadline. A plugin whose `detect` runs out of time,
    /// crashes or hits its memory cap is degraded: for the cool-down,
    /// `detect` answers [`CallError::Degraded`] without calling it.
    pub fn detect(&self, file_name: &str, head: &str) -> Result<f32, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("detect", Kind::Format));
        }
        if let Some(d) = self.degraded() {
            return Err(CallError::Degraded {
                plugin: self.meta.name.clone(),
                call: "detect".into(),
                reason: d.reason,
                retry_in: Duration::from_secs(d.retry_in_secs),
            });
        }
        let result = self.call("detect", self.detect_timeout(), |store, b| match b {
            Bindings::Format(b) => b
                .tuner_plugin_format_plugin()
                .call_detect(store, file_name, head),
            _ => unreachable!("kind checked above"),
        });
        if let Err(
            err @ (CallError::Timeout { .. }
            | CallError::Trap { .. }
            | CallError::MemoryLimit { .. }),
        ) = &result
        {
            self.degrade("detect", err);
        }
        result
    }

    /// Format plugins: the file extensions they read.
    pub fn extensions(&self) -> Result<Vec<String>, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("extensions", Kind::Format));
        }
        self.call("extensions", self.detect_timeout(), |store, b| match b {
            Bindings::Format(b) => b.tuner_plugin_format_plugin().call_extensions(store),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Format plugins: parses `chunks` of text with `options`, returning every
    /// record outcome, or the fatal error that ended the parse. Holds every
    /// outcome in memory: for files, use [`Plugin::parse_stream`].
    pub fn parse<'a>(
        &self,
        options: &format_plugin::ParseOptions,
        chunks: impl IntoIterator<Item = &'a str>,
    ) -> Result<Result<Vec<format_plugin::RecordOutcome>, format_plugin::FatalError>, CallError>
    {
        let mut out = Vec::new();
        let result = self.parse_stream(options, chunks, |records| out.extend(records))?;
        Ok(result.map(|()| out))
    }

    /// Format plugins: streams `chunks` of text through a parser, handing
    /// the outcomes of each call to `on_records` as they come, so memory
    /// stays bounded by one chunk and its records. The inner result is the
    /// fatal error that ended the parse, if any.
    pub fn parse_stream<C: AsRef<str>>(
        &self,
        options: &format_plugin::ParseOptions,
        chunks: impl IntoIterator<Item = C>,
        mut on_records: impl FnMut(Vec<format_plugin::RecordOutcome>),
    ) -> Result<Result<(), format_plugin::FatalError>, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("parse", Kind::Format));
        }
        let mut chunks = chunks.into_iter();
        let deadline = self.timeout();
        self.call("parse", deadline, |store, b| {
            let Bindings::Format(b) = b else {
                unreachable!("kind checked above")
            };
            let guest = b.tuner_plugin_format_plugin().parser();
            let parser = guest.call_constructor(&mut *store, options)?;
            let mut result = Ok(());
            for chunk in chunks.by_ref() {
                // A deadline per call into the plugin: a large file takes many
                // `feed` calls, each bounded on its own.
                store.set_epoch_deadline(ticks(deadline));
                match guest.call_feed(&mut *store, parser, chunk.as_ref())? {
                    Ok(records) => on_records(records),
                    Err(fatal) => {
                        result = Err(fatal);
                        break;
                    }
                }
            }
            if result.is_ok() {
                store.set_epoch_deadline(ticks(deadline));
                match guest.call_finish(&mut *store, parser)? {
                    Ok(records) => on_records(records),
                    Err(fatal) => result = Err(fatal),
                }
            }
            parser.resource_drop(&mut *store)?;
            Ok(result)
        })
    }

    /// Source plugins: resolves a repository to a file listing.
    pub fn resolve(
        &self,
        request: &source_plugin::ResolveRequest,
    ) -> Result<Result<source_plugin::Listing, source_plugin::SourceError>, CallError> {
        if self.meta.kind != Kind::Source {
            return Err(self.wrong_kind("resolve", Kind::Source));
        }
        self.call("resolve", self.timeout(), |store, b| match b {
            Bindings::Source(b) => b.tuner_plugin_source_plugin().call_resolve(store, request),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Source plugins: the endpoint used when a request names none.
    pub fn default_endpoint(&self) -> Result<String, CallError> {
        if self.meta.kind != Kind::Source {
            return Err(self.wrong_kind("default-endpoint", Kind::Source));
        }
        self.call("default-endpoint", self.timeout(), |store, b| match b {
            Bindings::Source(b) => b.tuner_plugin_source_plugin().call_default_endpoint(store),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Method plugins: turns a JSON job configuration into a training plan.
    pub fn configure(
        &self,
        config_json: &str,
    ) -> Result<Result<method_plugin::Plan, PluginError>, CallError> {
        if self.meta.kind != Kind::Method {
            return Err(self.wrong_kind("configure", Kind::Method));
        }
        self.call("configure", self.timeout(), |store, b| match b {
            Bindings::Method(b) => b
                .tuner_plugin_method_plugin()
                .call_configure(store, config_json),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Method plugins: [`Plugin::configure`] with the plugin's refusal and
    /// an inconsistent plan both turned into errors naming the plugin.
    pub fn method_configure(&self, config_json: &str) -> Result<Plan, CallError> {
        let plan = self
            .configure(config_json)?
            .map_err(|e| CallError::Failed {
                plugin: self.meta.name.clone(),
                call: "configure".into(),
                message: match e.field {
                    Some(field) => format!("`{field}`: {}", e.message),
                    None => e.message,
                },
            })?;
        Plan::from_wit(plan).map_err(|message| CallError::BadResult {
            plugin: self.meta.name.clone(),
            call: "configure".into(),
            message: format!("the plan is inconsistent: {message}"),
        })
    }

    /// Method plugins: the loss for one batch, built by the plugin from host
    /// tensors (so it is on the autograd tape), with the metrics it reported
    /// during the call. The loss is a 0-d float tensor; anything else is a
    /// [`CallError::BadResult`] naming the plugin.
    pub fn method_loss(
        &self,
        batch: Arc<MethodBatch>,
        policy: Arc<dyn PolicyBackend>,
        step: u64,
    ) -> Result<MethodLoss, CallError> {
        if self.meta.kind != Kind::Method {
            return Err(self.wrong_kind("loss", Kind::Method));
        }
        let device = batch.ids.device().clone();
        let outcome = self.call("loss", self.timeout(), |store, b| {
            let Bindings::Method(b) = b else {
                unreachable!("kind checked above")
            };
            let state = store.data_mut();
            state.method.device = device;
            state.method.metrics.clear();
            state.method.host_time = Duration::ZERO;
            let batch = state.table.push(BatchHandle::new(batch))?;
            let policy = state.table.push(PolicyHandle::new(policy))?;
            // Lent, not given: the plugin sees borrows, the table keeps them.
            let result = b.tuner_plugin_method_plugin().call_loss(
                &mut *store,
                Resource::new_borrow(batch.rep()),
                Resource::new_borrow(policy.rep()),
                step,
            );
            let state = store.data_mut();
            state.table.delete(batch)?;
            state.table.delete(policy)?;
            let metrics = std::mem::take(&mut state.method.metrics);
            Ok(match result? {
                Ok(loss) => Ok((state.take_tensor(loss)?, metrics)),
                Err(e) => Err(e),
            })
        })?;
        let (loss, metrics) = outcome.map_err(|e| CallError::Failed {
            plugin: self.meta.name.clone(),
            call: "loss".into(),
            message: match e.field {
                Some(field) => format!("`{field}`: {}", e.message),
                None => e.message,
            },
        })?;
        let bad = |message: String| CallError::BadResult {
            plugin: self.meta.name.clone(),
            call: "loss".into(),
            message,
        };
        if loss.elem_count() != 1 || !loss.dtype().is_float() {
            return Err(bad(format!(
                "the loss must be a single-element float tensor, got shape {:?} of {}",
                loss.dims(),
                loss.dtype().as_str()
            )));
        }
        let loss = loss
            .reshape(())
            .map_err(|e| bad(format!("cannot read the loss as a scalar: {e}")))?;
        Ok(MethodLoss { loss, metrics })
    }
}
