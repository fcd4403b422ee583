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
//!
//! A training job talks to its method plugin through a [`MethodSession`]:
//! `configure` and every `loss` of the job run in one instance, leased from
//! the pool for the session's lifetime, so the plugin's configured `method`
//! (a resource in `tuner:plugin@0.2.0`) lives where it was made.
//!
//! Plugins of every supported `tuner:plugin` version are called through the
//! same methods: the answers of older versions are converted to the newest
//! types ([`super::bindings`]), and what an older version lacks (settings
//! schemas, typed format settings) is made up for here.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use semver::Version;
use serde::Serialize;
use utoipa::ToSchema;
use wasmtime::component::Component;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::v0_1_0::{self as old, Convert};
use super::bindings::v0_2_0 as new;
use super::bindings::{PluginInfo, WitVersion};
use super::imports::http::HttpGate;
use super::limits::ticks;
use super::runtime::{CompileSource, Runtime};
use super::settings::{self, Setting};
use super::state::PluginState;
use super::{CallError, Kind};

use new::format::tuner::plugin::types::PluginError;

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

/// An instance's exports, by world, then by `tuner:plugin` version. The
/// typed handles ([`super::FormatPlugin`], ...) call through
/// [`Plugin::call_format`] and its siblings, which hand them only their
/// world's bindings.
pub(super) enum Bindings {
    Format(FormatBindings),
    Source(SourceBindings),
    Method(MethodBindings),
    /// Reward plugins exist since `tuner:plugin@0.2.0` only.
    Reward(new::reward::Reward),
}

/// A format instance's exports.
pub(super) enum FormatBindings {
    V0_2(new::format::Format),
    V0_1(old::format::Format),
}

/// A source instance's exports.
pub(super) enum SourceBindings {
    V0_2(new::source::Source),
    V0_1(old::source::Source),
}

/// A method instance's exports.
pub(super) enum MethodBindings {
    V0_2(new::method::Method),
    V0_1(old::method::Method),
}

pub(super) struct Live {
    pub(super) store: Store<PluginState>,
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
        self.plugin.return_instance(live);
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
    /// The supported version the plugin runs as (bindings and linker).
    wit: WitVersion,
    /// The `tuner:plugin` version it was built for.
    wit_version: Version,
    /// The settings schema, read once (it cannot change for a component).
    settings: OnceLock<Vec<Setting>>,
    /// A format's answer to `reads` (text or bytes), asked once.
    pub(super) input_kind: OnceLock<super::format::InputKind>,
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
    /// Wraps a validated component built for `wit` (the version inspection
    /// found). `http` is the network gate for source plugins (built from the
    /// declared hosts).
    pub(crate) fn new(
        meta: PluginMeta,
        wit: WitVersion,
        component: Component,
        runtime: Arc<Runtime>,
        http: Option<HttpGate>,
    ) -> Self {
        let degraded = Self::saved_degraded(&runtime, &meta.sha256);
        let wit_version = Version::parse(&meta.wit_version).unwrap_or_else(|_| wit.semver());
        Self {
            meta,
            wit,
            wit_version,
            settings: OnceLock::new(),
            input_kind: OnceLock::new(),
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

    /// The `tuner:plugin` version the plugin was built for.
    pub fn wit_version(&self) -> &Version {
        &self.wit_version
    }

    /// The supported version the plugin runs as.
    pub fn wit(&self) -> WitVersion {
        self.wit
    }

    /// The network gate of a source plugin (see [`super::SourcePlugin::network`]).
    pub(super) fn http(&self) -> Option<&HttpGate> {
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

    pub(super) fn degrade(&self, call: &str, err: &CallError) {
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
    pub(super) fn release_slot(&self) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.count = pool.count.saturating_sub(1);
        drop(pool);
        self.freed.notify_one();
    }

    /// Puts a healthy instance back in the pool.
    pub(super) fn return_instance(&self, live: Live) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.idle.push(live);
        drop(pool);
        self.freed.notify_one();
    }

    /// An idle instance, or a new one while the pool is below its cap, or
    /// (at the cap) the next one to come back. It keeps its place in the
    /// pool until [`Plugin::return_instance`] or [`Plugin::release_slot`].
    pub(super) fn acquire(&self, deadline: Duration) -> Result<Live, CallError> {
        let cap = self.runtime.limits.max_instances.max(1);
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(live) = pool.idle.pop() {
                return Ok(live);
            }
            if pool.count < cap {
                pool.count += 1;
                drop(pool);
                // Built outside the lock: other calls go on meanwhile.
                return self
                    .instantiate(deadline)
                    .inspect_err(|_| self.release_slot());
            }
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// [`Plugin::acquire`] for one call.
    fn lease(&self, deadline: Duration) -> Result<Lease<'_>, CallError> {
        Ok(Lease {
            plugin: self,
            live: Some(self.acquire(deadline)?),
        })
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
        let (c, linker) = (&self.component, rt.linker(self.wit, self.meta.kind));
        let bindings = match (self.meta.kind, self.wit) {
            (Kind::Format, WitVersion::V0_2_0) => Bindings::Format(FormatBindings::V0_2(
                new::format::Format::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
            (Kind::Source, WitVersion::V0_2_0) => Bindings::Source(SourceBindings::V0_2(
                new::source::Source::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
            (Kind::Method, WitVersion::V0_2_0) => Bindings::Method(MethodBindings::V0_2(
                new::method::Method::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
            (Kind::Reward, WitVersion::V0_2_0) => Bindings::Reward(
                new::reward::Reward::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Reward, WitVersion::V0_1_0) => {
                return Err(fail(wasmtime::format_err!(
                    "reward plugins need tuner:plugin@0.2.0 or newer"
                )));
            }
            (Kind::Format, WitVersion::V0_1_0) => Bindings::Format(FormatBindings::V0_1(
                old::format::Format::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
            (Kind::Source, WitVersion::V0_1_0) => Bindings::Source(SourceBindings::V0_1(
                old::source::Source::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
            (Kind::Method, WitVersion::V0_1_0) => Bindings::Method(MethodBindings::V0_1(
                old::method::Method::instantiate(&mut store, c, linker).map_err(fail)?,
            )),
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
        match self.run_on(live, call, deadline, f) {
            Ok(value) => {
                lease.give_back();
                Ok(value)
            }
            // The instance may be in any state after a trap: never reuse it
            // (dropping the lease discards it and frees its place).
            Err(err) => Err(err),
        }
    }

    /// Runs `f` on `live` under a deadline. A failure is counted, logged and
    /// classified; the caller must then discard the instance.
    pub(super) fn run_on<R>(
        &self,
        live: &mut Live,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        live.store.set_epoch_deadline(ticks(deadline));
        live.store.data_mut().limiter.refused = None;
        f(&mut live.store, &live.bindings).map_err(|err| {
            let refused = live.store.data().limiter.refused.is_some();
            self.failures.fetch_add(1, Ordering::Relaxed);
            let err = self.classify(call, deadline, refused, err);
            tracing::warn!(plugin = %self.meta.name, call, "{err}");
            err
        })
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

    pub(super) fn wrong_kind(&self, call: &str, expected: Kind) -> CallError {
        CallError::WrongKind {
            plugin: self.meta.name.clone(),
            call: call.to_string(),
            actual: self.meta.kind,
            expected,
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.runtime.limits.call_timeout
    }

    /// The deadline of the detection calls (`detect`, `extensions`).
    pub(super) fn detect_timeout(&self) -> Duration {
        self.runtime.limits.detect_timeout.min(self.timeout())
    }

    /// `info()`, under the (shorter) load deadline.
    pub fn info(&self) -> Result<PluginInfo, CallError> {
        self.call(
            "info",
            self.runtime.limits.load_timeout,
            |store, b| match b {
                Bindings::Format(FormatBindings::V0_2(b)) => {
                    b.tuner_plugin_format_plugin().call_info(store)
                }
                Bindings::Source(SourceBindings::V0_2(b)) => {
                    b.tuner_plugin_source_plugin().call_info(store)
                }
                Bindings::Method(MethodBindings::V0_2(b)) => {
                    b.tuner_plugin_method_plugin().call_info(store)
                }
                Bindings::Reward(b) => b.tuner_plugin_reward_plugin().call_info(store),
                Bindings::Format(FormatBindings::V0_1(b)) => b
                    .tuner_plugin_format_plugin()
                    .call_info(store)
                    .map(Convert::convert),
                Bindings::Source(SourceBindings::V0_1(b)) => b
                    .tuner_plugin_source_plugin()
                    .call_info(store)
                    .map(Convert::convert),
                Bindings::Method(MethodBindings::V0_1(b)) => b
                    .tuner_plugin_method_plugin()
                    .call_info(store)
                    .map(Convert::convert),
            },
        )
    }

    /// The settings the plugin declares: a method's training-config keys, a
    /// format's `--set` keys; none for sources. Read once and kept.
    ///
    /// `tuner:plugin@0.2.0` plugins answer with their `settings()` export,
    /// checked with [`settings::check_schema`] (a bad schema is a
    /// [`CallError::BadResult`] naming the plugin). 0.1.0 plugins declare
    /// none: a 0.1.0 method gets [`old::legacy_method_settings`], a 0.1.0
    /// format an empty list that [`Plugin::settings_are_open`] qualifies.
    pub fn settings(&self) -> Result<Vec<Setting>, CallError> {
        if let Some(schema) = self.settings.get() {
            return Ok(schema.clone());
        }
        let schema = match (self.meta.kind, self.wit) {
            (Kind::Source, _) | (Kind::Format, WitVersion::V0_1_0) => Vec::new(),
            (Kind::Method, WitVersion::V0_1_0) => old::legacy_method_settings(),
            (Kind::Reward, WitVersion::V0_1_0) => Vec::new(),
            (Kind::Format | Kind::Method | Kind::Reward, WitVersion::V0_2_0) => {
                let declared = self.call("settings", self.timeout(), |store, b| match b {
                    Bindings::Format(FormatBindings::V0_2(b)) => {
                        b.tuner_plugin_format_plugin().call_settings(store)
                    }
                    Bindings::Method(MethodBindings::V0_2(b)) => {
                        b.tuner_plugin_method_plugin().call_settings(store)
                    }
                    Bindings::Reward(b) => b.tuner_plugin_reward_plugin().call_settings(store),
                    // Sources and 0.1.0 plugins declare no settings.
                    _ => Ok(Vec::new()),
                })?;
                let schema: Vec<Setting> = declared.into_iter().map(Into::into).collect();
                settings::check_schema(&schema).map_err(|message| CallError::BadResult {
                    plugin: self.meta.name.clone(),
                    call: "settings".into(),
                    message: format!("its settings schema is invalid: {message}"),
                })?;
                schema
            }
        };
        Ok(self.settings.get_or_init(|| schema).clone())
    }

    /// The plugin as a format handle, if it is a format plugin.
    pub fn as_format(self: &Arc<Self>) -> Option<super::FormatPlugin> {
        (self.meta.kind == Kind::Format).then(|| super::FormatPlugin::new(self.clone()))
    }

    /// The plugin as a source handle, if it is a source plugin.
    pub fn as_source(self: &Arc<Self>) -> Option<super::SourcePlugin> {
        (self.meta.kind == Kind::Source).then(|| super::SourcePlugin::new(self.clone()))
    }

    /// The plugin as a method handle, if it is a method plugin.
    pub fn as_method(self: &Arc<Self>) -> Option<super::MethodPlugin> {
        (self.meta.kind == Kind::Method).then(|| super::MethodPlugin::new(self.clone()))
    }

    /// The plugin as a reward handle, if it is a reward plugin.
    pub fn as_reward(self: &Arc<Self>) -> Option<super::RewardPlugin> {
        (self.meta.kind == Kind::Reward).then(|| super::RewardPlugin::new(self.clone()))
    }

    /// The plugin's refusal of a call, as the error users see.
    pub(super) fn refused(&self, call: &str, e: PluginError) -> CallError {
        CallError::Failed {
            plugin: self.meta.name.clone(),
            call: call.to_string(),
            message: match e.field {
                Some(field) => format!("`{field}`: {}", e.message),
                None => e.message,
            },
        }
    }

    /// [`Plugin::call`] on a format plugin's exports. The handles are only
    /// made for plugins of their kind, and an instance's bindings follow the
    /// kind; should they ever disagree, the call fails as a wrong kind.
    pub(super) fn call_format<R>(
        &self,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &FormatBindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_kind(call, deadline, Kind::Format, |store, b| match b {
            Bindings::Format(b) => Some(f(store, b)),
            _ => None,
        })
    }

    /// [`Plugin::call_format`] for source plugins.
    pub(super) fn call_source<R>(
        &self,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &SourceBindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_kind(call, deadline, Kind::Source, |store, b| match b {
            Bindings::Source(b) => Some(f(store, b)),
            _ => None,
        })
    }

    /// [`Plugin::call_format`] for reward plugins.
    pub(super) fn call_reward<R>(
        &self,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &new::reward::Reward) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        self.call_kind(call, deadline, Kind::Reward, |store, b| match b {
            Bindings::Reward(b) => Some(f(store, b)),
            _ => None,
        })
    }

    /// [`Plugin::run_on`] with a method plugin's exports (a method session
    /// runs its calls on the instance it holds).
    pub(super) fn run_method<R>(
        &self,
        live: &mut Live,
        call: &str,
        deadline: Duration,
        f: impl FnOnce(&mut Store<PluginState>, &MethodBindings) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        if !matches!(live.bindings, Bindings::Method(_)) {
            return Err(self.wrong_kind(call, Kind::Method));
        }
        self.run_on(live, call, deadline, |store, b| match b {
            Bindings::Method(b) => f(store, b),
            _ => Err(wasmtime::format_err!("not a method instance")),
        })
    }

    /// A call into one world's exports; `pick` answers `None` for an
    /// instance of another world, which fails as a wrong kind.
    fn call_kind<R>(
        &self,
        call: &str,
        deadline: Duration,
        kind: Kind,
        pick: impl FnOnce(&mut Store<PluginState>, &Bindings) -> Option<wasmtime::Result<R>>,
    ) -> Result<R, CallError> {
        if self.meta.kind != kind {
            return Err(self.wrong_kind(call, kind));
        }
        self.call(call, deadline, |store, b| {
            pick(store, b).unwrap_or_else(|| Err(wasmtime::format_err!("not a {kind} instance")))
        })
    }

    /// An instance from the pool, counted as one call (a method session
    /// keeps it for its lifetime).
    pub(super) fn lease_instance(&self, deadline: Duration) -> Result<Live, CallError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.acquire(deadline).inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// Counts one more call into the plugin.
    pub(super) fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}
