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
use serde_json::{Map, Value};
use utoipa::ToSchema;
use wasmtime::component::{Component, Resource, ResourceAny};
use wasmtime::{Store, UpdateDeadline};

use super::bindings::v0_1_0::{self as old, Convert};
use super::bindings::v0_2_0 as new;
use super::bindings::{PluginInfo, WitVersion};
use super::imports::http::HttpGate;
use super::imports::model::{
    BatchHandle, MethodBatch, MethodLoss, Plan, PolicyBackend, PolicyHandle,
};
use super::limits::ticks;
use super::runtime::{CompileSource, Runtime};
use super::settings::{self, Setting, SettingValue, Values};
use super::state::PluginState;
use super::{CallError, Kind};

pub use new::format::exports::tuner::plugin::format_plugin;
pub use new::format::tuner::plugin::types::PluginError;
pub use new::method::exports::tuner::plugin::method_plugin;
pub use new::source::exports::tuner::plugin::source_plugin;

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

/// An instance's exports, by world and `tuner:plugin` version.
enum Bindings {
    Format(new::format::Format),
    Source(new::source::Source),
    Method(new::method::Method),
    FormatV1(old::format::Format),
    SourceV1(old::source::Source),
    MethodV1(old::method::Method),
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

    /// Puts a healthy instance back in the pool.
    fn return_instance(&self, live: Live) {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.idle.push(live);
        drop(pool);
        self.freed.notify_one();
    }

    /// An idle instance, or a new one while the pool is below its cap, or
    /// (at the cap) the next one to come back. It keeps its place in the
    /// pool until [`Plugin::return_instance`] or [`Plugin::release_slot`].
    fn acquire(&self, deadline: Duration) -> Result<Live, CallError> {
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
            (Kind::Format, WitVersion::V0_2_0) => Bindings::Format(
                new::format::Format::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Source, WitVersion::V0_2_0) => Bindings::Source(
                new::source::Source::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Method, WitVersion::V0_2_0) => Bindings::Method(
                new::method::Method::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Format, WitVersion::V0_1_0) => Bindings::FormatV1(
                old::format::Format::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Source, WitVersion::V0_1_0) => Bindings::SourceV1(
                old::source::Source::instantiate(&mut store, c, linker).map_err(fail)?,
            ),
            (Kind::Method, WitVersion::V0_1_0) => Bindings::MethodV1(
                old::method::Method::instantiate(&mut store, c, linker).map_err(fail)?,
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
    fn run_on<R>(
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
                Bindings::FormatV1(b) => b
                    .tuner_plugin_format_plugin()
                    .call_info(store)
                    .map(Convert::convert),
                Bindings::SourceV1(b) => b
                    .tuner_plugin_source_plugin()
                    .call_info(store)
                    .map(Convert::convert),
                Bindings::MethodV1(b) => b
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
            (Kind::Format | Kind::Method, WitVersion::V0_2_0) => {
                let declared = self.call("settings", self.timeout(), |store, b| match b {
                    Bindings::Format(b) => b.tuner_plugin_format_plugin().call_settings(store),
                    Bindings::Method(b) => b.tuner_plugin_method_plugin().call_settings(store),
                    _ => unreachable!("kind and version checked above"),
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

    /// Whether the plugin takes settings outside its schema: a
    /// `tuner:plugin@0.1.0` format, which reads free-form text settings and
    /// declares none, accepts any key as text.
    pub fn settings_are_open(&self) -> bool {
        self.meta.kind == Kind::Format && self.wit == WitVersion::V0_1_0
    }

    /// Format plugins: the user's text settings (`--set key=value`) checked
    /// against [`Plugin::settings`], defaults filled in. The inner error
    /// names the plugin and the first bad key, with a suggestion for a
    /// near-miss key. An open schema ([`Plugin::settings_are_open`]) takes
    /// every key as text.
    pub fn format_values(
        &self,
        given: &[(String, String)],
    ) -> Result<Result<Values, String>, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("settings", Kind::Format));
        }
        if self.settings_are_open() {
            return Ok(Ok(given
                .iter()
                .map(|(k, v)| (k.clone(), SettingValue::Text(v.clone())))
                .collect()));
        }
        let schema = self.settings()?;
        let name = &self.meta.name;
        for (key, _) in given {
            if !schema.iter().any(|s| s.name == *key) {
                let hint = match settings::closest(key, schema.iter().map(|s| s.name.as_str())) {
                    Some(near) => format!("; did you mean `{near}`?"),
                    None if schema.is_empty() => "; it takes no settings".into(),
                    None => {
                        let names: Vec<&str> = schema.iter().map(|s| s.name.as_str()).collect();
                        format!(" (its settings: {})", names.join(", "))
                    }
                };
                return Ok(Err(format!(
                    "format plugin `{name}` has no setting `{key}`{hint}"
                )));
            }
        }
        let map: Map<String, Value> = given
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Ok(settings::check(&schema, &map).map_err(|problems| {
            let p = &problems[0];
            format!("format plugin `{name}`, setting `{}`: {}", p.key, p.message)
        }))
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
            Bindings::FormatV1(b) => b
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
            Bindings::FormatV1(b) => b.tuner_plugin_format_plugin().call_extensions(store),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Format plugins: checks parse options without parsing (a bad column
    /// mapping, a combination of settings the schema cannot express). Call
    /// it before [`Plugin::parse_stream`]; the inner error is the plugin's.
    pub fn check_options(
        &self,
        options: &HostParseOptions,
    ) -> Result<Result<(), PluginError>, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("check-options", Kind::Format));
        }
        self.call("check-options", self.timeout(), |store, b| match b {
            Bindings::Format(b) => b
                .tuner_plugin_format_plugin()
                .call_check_options(store, &options.to_v0_2_0()),
            Bindings::FormatV1(b) => b
                .tuner_plugin_format_plugin()
                .call_check_options(store, &options.to_v0_1_0())
                .map(|r| r.map_err(Convert::convert)),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Format plugins: parses `chunks` of text with `options`, returning every
    /// record outcome, or the fatal error that ended the parse. Holds every
    /// outcome in memory: for files, use [`Plugin::parse_stream`].
    pub fn parse<'a>(
        &self,
        options: &HostParseOptions,
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
    /// fatal error that ended the parse, if any. The options should have
    /// passed [`Plugin::check_options`].
    pub fn parse_stream<C: AsRef<str>>(
        &self,
        options: &HostParseOptions,
        chunks: impl IntoIterator<Item = C>,
        mut on_records: impl FnMut(Vec<format_plugin::RecordOutcome>),
    ) -> Result<Result<(), format_plugin::FatalError>, CallError> {
        if self.meta.kind != Kind::Format {
            return Err(self.wrong_kind("parse", Kind::Format));
        }
        let mut chunks = chunks.into_iter();
        let deadline = self.timeout();
        // One parse, for either version's generated types: `$convert` turns
        // the plugin's records and errors into the newest types.
        macro_rules! parse_with {
            ($store:expr, $exports:expr, $options:expr, $convert:expr) => {{
                let store = $store;
                let guest = $exports.parser();
                let parser = guest.call_constructor(&mut *store, $options)?;
                let mut result = Ok(());
                for chunk in chunks.by_ref() {
                    // A deadline per call into the plugin: a large file takes
                    // many `feed` calls, each bounded on its own.
                    store.set_epoch_deadline(ticks(deadline));
                    match guest.call_feed(&mut *store, parser, chunk.as_ref())? {
                        Ok(records) => on_records($convert(records)),
                        Err(fatal) => {
                            result = Err($convert(fatal));
                            break;
                        }
                    }
                }
                if result.is_ok() {
                    store.set_epoch_deadline(ticks(deadline));
                    match guest.call_finish(&mut *store, parser)? {
                        Ok(records) => on_records($convert(records)),
                        Err(fatal) => result = Err($convert(fatal)),
                    }
                }
                parser.resource_drop(&mut *store)?;
                Ok(result)
            }};
        }
        self.call("parse", deadline, |store, b| match b {
            Bindings::Format(b) => parse_with!(
                store,
                b.tuner_plugin_format_plugin(),
                &options.to_v0_2_0(),
                std::convert::identity
            ),
            Bindings::FormatV1(b) => parse_with!(
                store,
                b.tuner_plugin_format_plugin(),
                &options.to_v0_1_0(),
                Convert::convert
            ),
            _ => unreachable!("kind checked above"),
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
            Bindings::SourceV1(b) => b
                .tuner_plugin_source_plugin()
                .call_resolve(store, &request.clone().convert())
                .map(|r| r.map(Convert::convert).map_err(Convert::convert)),
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
            Bindings::SourceV1(b) => b.tuner_plugin_source_plugin().call_default_endpoint(store),
            _ => unreachable!("kind checked above"),
        })
    }

    /// Method plugins: configures the method for one job and keeps it, in
    /// one instance of the plugin, for the job's `loss` calls.
    ///
    /// `values` are the method's checked settings (every key of
    /// [`Plugin::settings`], defaults filled in); `job_json` is the host's
    /// part of the training config as a JSON object. A
    /// `tuner:plugin@0.2.0` plugin gets both through `configure` and keeps a
    /// `method` resource; a 0.1.0 plugin gets one flat JSON object, the job
    /// with the values laid over it ([`old::legacy_config_json`]).
    ///
    /// The plugin's refusal and an inconsistent plan are errors naming the
    /// plugin (and the key the plugin names).
    pub fn start_method(
        self: &Arc<Self>,
        values: &Values,
        job_json: &str,
    ) -> Result<MethodSession, CallError> {
        if self.meta.kind != Kind::Method {
            return Err(self.wrong_kind("configure", Kind::Method));
        }
        let (instance, plan) = self.configure_instance(values, job_json)?;
        Ok(MethodSession {
            plugin: self.clone(),
            values: values.clone(),
            job_json: job_json.to_string(),
            plan,
            instance: Some(instance),
        })
    }

    /// The plugin's refusal of a call, as the error users see.
    fn refused(&self, call: &str, e: PluginError) -> CallError {
        CallError::Failed {
            plugin: self.meta.name.clone(),
            call: call.to_string(),
            message: match e.field {
                Some(field) => format!("`{field}`: {}", e.message),
                None => e.message,
            },
        }
    }

    /// An instance with the method configured in it, and its checked plan.
    fn configure_instance(
        &self,
        values: &Values,
        job_json: &str,
    ) -> Result<(SessionInstance, Plan), CallError> {
        let deadline = self.timeout();
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut live = self.acquire(deadline).inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        let configured = self.run_on(&mut live, "configure", deadline, |store, b| match b {
            Bindings::Method(b) => Ok(b
                .tuner_plugin_method_plugin()
                .call_configure(store, &new::wit_values(values), job_json)?
                .map(Configured::Method)),
            Bindings::MethodV1(b) => Ok(b
                .tuner_plugin_method_plugin()
                .call_configure(store, &old::legacy_config_json(values, job_json))?
                .map(|plan| Configured::Plan(plan.convert()))
                .map_err(Convert::convert)),
            _ => unreachable!("kind checked by the caller"),
        });
        let configured = match configured {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.return_instance(live);
                return Err(self.refused("configure", e));
            }
            Err(err) => {
                self.release_slot();
                return Err(err);
            }
        };
        let (method, plan) = match configured {
            Configured::Plan(plan) => (None, plan),
            Configured::Method(method) => {
                self.calls.fetch_add(1, Ordering::Relaxed);
                let plan = self.run_on(&mut live, "plan", deadline, |store, b| match b {
                    Bindings::Method(b) => b
                        .tuner_plugin_method_plugin()
                        .method()
                        .call_plan(store, method),
                    _ => unreachable!("a 0.2.0 method"),
                });
                match plan {
                    Ok(plan) => (Some(method), plan),
                    Err(err) => {
                        self.release_slot();
                        return Err(err);
                    }
                }
            }
        };
        let instance = SessionInstance { live, method };
        match Plan::from_wit(plan) {
            Ok(plan) => Ok((instance, plan)),
            Err(message) => {
                self.close_instance(instance);
                Err(CallError::BadResult {
                    plugin: self.meta.name.clone(),
                    call: "configure".into(),
                    message: format!("the plan is inconsistent: {message}"),
                })
            }
        }
    }

    /// Ends a session's instance: drops the method in the guest and returns
    /// the instance to the pool, or discards it if that fails.
    fn close_instance(&self, mut instance: SessionInstance) {
        if let Some(method) = instance.method.take() {
            let dropped = self.run_on(&mut instance.live, "drop", self.timeout(), |store, _| {
                method.resource_drop(store)
            });
            if dropped.is_err() {
                self.release_slot();
                return;
            }
        }
        self.return_instance(instance.live);
    }
}

/// What `configure` made: a 0.2.0 `method` resource, or a 0.1.0 plan.
enum Configured {
    Method(ResourceAny),
    Plan(method_plugin::Plan),
}

/// The instance a [`MethodSession`] runs in.
struct SessionInstance {
    live: Live,
    /// `tuner:plugin@0.2.0`: the configured `method` resource in the guest.
    method: Option<ResourceAny>,
}

/// One job's method: configured once ([`Plugin::start_method`]), then asked
/// for the loss of every batch, all in one instance of the plugin that the
/// session holds (leased from the plugin's pool) until it is dropped, when
/// the guest's `method` is dropped and the instance returned.
///
/// A call that traps, runs out of time or hits the memory cap discards the
/// instance, as any plugin call does; the next call builds a new one and
/// configures the method again with the same settings.
pub struct MethodSession {
    plugin: Arc<Plugin>,
    values: Values,
    job_json: String,
    plan: Plan,
    /// `None` after a failure, until the next call.
    instance: Option<SessionInstance>,
}

impl MethodSession {
    /// What the method asked the host to prepare.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The method plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// The checked settings the method was configured with.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The loss for one batch, built by the plugin from host tensors (so it
    /// is on the autograd tape), with the metrics it reported during the
    /// call. The loss is a 0-d float tensor; anything else is a
    /// [`CallError::BadResult`] naming the plugin.
    pub fn loss(
        &mut self,
        batch: Arc<MethodBatch>,
        policy: Arc<dyn PolicyBackend>,
        step: u64,
    ) -> Result<MethodLoss, CallError> {
        let plugin = self.plugin.clone();
        if self.instance.is_none() {
            let (instance, plan) = plugin.configure_instance(&self.values, &self.job_json)?;
            if plan != self.plan {
                plugin.close_instance(instance);
                return Err(CallError::BadResult {
                    plugin: plugin.meta.name.clone(),
                    call: "configure".into(),
                    message: "configured again after a failure, it returned another plan \
                              for the same settings"
                        .into(),
                });
            }
            self.instance = Some(instance);
        }
        let instance = self.instance.as_mut().expect("configured above");
        plugin.calls.fetch_add(1, Ordering::Relaxed);
        let device = batch.ids.device().clone();
        let method = instance.method;
        let outcome = plugin.run_on(&mut instance.live, "loss", plugin.timeout(), |store, b| {
            let state = store.data_mut();
            state.method.device = device;
            state.method.metrics.clear();
            state.method.host_time = Duration::ZERO;
            let batch = state.table.push(BatchHandle::new(batch))?;
            let policy = state.table.push(PolicyHandle::new(policy))?;
            // Lent, not given: the plugin sees borrows, the table keeps them.
            let (batch_arg, policy_arg) = (
                Resource::new_borrow(batch.rep()),
                Resource::new_borrow(policy.rep()),
            );
            let result = match b {
                Bindings::Method(b) => b.tuner_plugin_method_plugin().method().call_loss(
                    &mut *store,
                    method.expect("a 0.2.0 session holds its method"),
                    batch_arg,
                    policy_arg,
                    step,
                ),
                Bindings::MethodV1(b) => b
                    .tuner_plugin_method_plugin()
                    .call_loss(&mut *store, batch_arg, policy_arg, step)
                    .map(|r| r.map_err(Convert::convert)),
                _ => unreachable!("a method session"),
            };
            let state = store.data_mut();
            state.table.delete(batch)?;
            state.table.delete(policy)?;
            let metrics = std::mem::take(&mut state.method.metrics);
            Ok(match result? {
                Ok(loss) => Ok((state.take_tensor(loss)?, metrics)),
                Err(e) => Err(e),
            })
        });
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                // Never reuse an instance after a trap.
                self.instance = None;
                plugin.release_slot();
                return Err(err);
            }
        };
        let (loss, metrics) = outcome.map_err(|e| plugin.refused("loss", e))?;
        let bad = |message: String| CallError::BadResult {
            plugin: plugin.meta.name.clone(),
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

impl Drop for MethodSession {
    fn drop(&mut self) {
        if let Some(instance) = self.instance.take() {
            self.plugin.close_instance(instance);
        }
    }
}

impl std::fmt::Debug for MethodSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MethodSession")
            .field("plugin", &self.plugin.meta.name)
            .field("plan", &self.plan)
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

/// How to parse a file, as the host's callers give it; converted to each
/// `tuner:plugin` version's `parse-options`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostParseOptions {
    /// Name of the file, for messages and extension-based choices.
    pub file_name: String,
    /// Force a record layout instead of detecting it.
    pub layout: Option<String>,
    /// Column mapping: (layout field, field in the file).
    pub columns: Vec<(String, String)>,
    /// The format's checked settings ([`Plugin::format_values`]).
    pub settings: Values,
}

impl HostParseOptions {
    fn to_v0_2_0(&self) -> format_plugin::ParseOptions {
        format_plugin::ParseOptions {
            file_name: self.file_name.clone(),
            layout: self.layout.clone(),
            columns: self.columns.clone(),
            settings: new::wit_values(&self.settings),
        }
    }

    /// 0.1.0 formats read settings as text.
    fn to_v0_1_0(&self) -> old::format::exports::tuner::plugin::format_plugin::ParseOptions {
        old::format::exports::tuner::plugin::format_plugin::ParseOptions {
            file_name: self.file_name.clone(),
            layout: self.layout.clone(),
            columns: self.columns.clone(),
            settings: self
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), old::setting_text(v)))
                .collect(),
        }
    }
}
