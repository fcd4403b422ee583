//! The plugin runtime: WebAssembly components loaded with wasmtime.
//!
//! Plugins come from two places: the bundled set compiled into the binary,
//! and the user plugin folder (`NAME.wasm` with an optional `NAME.toml`
//! manifest beside it). A file in the folder with a bundled plugin's name
//! replaces it.
//!
//! Loading a plugin ([`registry`]): read the file, check it is a component
//! targeting one world of a supported `tuner:plugin` version (0.2.0, or
//! 0.1.0 through an adapter, [`bindings`]) with all required exports and no
//! imports the host does not offer ([`inspect`]), compile it (or load the
//! compiled code from the on-disk cache, [`runtime`]), and call its `info()`.
//!
//! Handles ([`format`], [`source`], [`method`]): the registry hands out a
//! typed handle per kind, so only a format plugin can be asked to parse,
//! only a source to resolve, only a method to configure a job. Their
//! requests and answers are host types; the generated bindings stay here.
//!
//! Sandbox ([`plugin`]): every instance has a memory cap and every call an
//! epoch deadline; a plugin that runs past it is stopped with an error. After
//! any trap the instance is thrown away and rebuilt on the next call. Each
//! plugin has a small pool of instances, so independent calls into it do not
//! queue behind a slow one; a format plugin whose `detect` fails is left out
//! of detection for a cool-down.
//! Network access goes only through the host's `http` interface, to the hosts
//! the plugin declared ([`imports::http`]).
//!
//! Hot reload ([`watch`]): changes to the plugin folder are picked up while
//! `tuner serve` runs; calls already under way keep the plugin they started with.

pub mod bindings;
pub mod bundled;
pub mod format;
pub mod imports;
pub mod inspect;
pub mod limits;
pub mod manifest;
pub mod method;
pub mod plugin;
pub mod registry;
pub mod reward;
pub mod runtime;
pub mod scaffold;
pub mod settings;
pub mod source;
pub mod state;
pub mod watch;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use bindings::WitVersion;
pub use format::{FormatPlugin, HostParseOptions};
pub use limits::PluginLimits;
pub use method::{MethodPlugin, MethodSession};
pub use plugin::{Plugin, PluginMeta};
pub use registry::{PluginHost, ReloadReport};
pub use reward::RewardPlugin;
pub use runtime::Runtime;
pub use source::SourcePlugin;

/// The four kinds of plugin, one per WIT world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Data file formats (`world format`).
    Format,
    /// Model and dataset sources (`world source`).
    Source,
    /// Training methods (`world method`).
    Method,
    /// Reward functions for RL methods (`world reward`).
    Reward,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Format => "format",
            Kind::Source => "source",
            Kind::Method => "method",
            Kind::Reward => "reward",
        })
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "format" => Ok(Kind::Format),
            "source" => Ok(Kind::Source),
            "method" => Ok(Kind::Method),
            "reward" => Ok(Kind::Reward),
            _ => Err(format!(
                "unknown plugin kind `{s}` (expected format, source, method or reward)"
            )),
        }
    }
}

impl From<bindings::PluginKind> for Kind {
    fn from(k: bindings::PluginKind) -> Self {
        match k {
            bindings::PluginKind::Format => Kind::Format,
            bindings::PluginKind::Source => Kind::Source,
            bindings::PluginKind::Method => Kind::Method,
            bindings::PluginKind::Reward => Kind::Reward,
        }
    }
}

/// Why a file could not become a plugin. Shown to users as is, after the
/// file name, so every message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read it: {0}")]
    Read(String),
    #[error("not a WebAssembly file")]
    NotWasm,
    #[error(
        "a core WebAssembly module, not a component: build plugins with tuner-sdk and \
         `tuner plugins build`, which wraps the module into a component"
    )]
    CoreModule,
    #[error("invalid component: {0}")]
    Invalid(String),
    #[error(
        "not a tuner plugin: it exports none of tuner:plugin/format-plugin, source-plugin, \
         method-plugin or reward-plugin (it exports {exports}); build it with tuner-sdk for one \
         of the worlds `format`, `source`, `method` or `reward`"
    )]
    WrongWorld { exports: String },
    #[error("exports more than one plugin interface ({0}); a plugin targets exactly one world")]
    SeveralWorlds(String),
    #[error(
        "built for tuner:plugin@{found}, newer than this tuner supports \
         (tuner:plugin@{supported}); upgrade tuner to use it"
    )]
    FutureVersion { found: String, supported: String },
    #[error(
        "built for tuner:plugin@{found}, which this tuner does not support \
         (it supports tuner:plugin@{supported}); rebuild it with a current tuner-sdk"
    )]
    OldVersion { found: String, supported: String },
    #[error("`{interface}` is missing {missing}")]
    MissingExports { interface: String, missing: String },
    #[error("imports `{import}`, which tuner does not offer to plugins{hint}")]
    ForbiddenImport { import: String, hint: String },
    #[error("manifest {file}: {message}")]
    Manifest { file: String, message: String },
    #[error("{0}")]
    Inconsistent(String),
    #[error("its `info()` call failed: {0}")]
    Info(String),
    #[error("cannot set up its sandbox: {0}")]
    Setup(String),
}

fn raise_hint(setting: Option<&str>) -> String {
    setting
        .map(|s| format!(" (raise plugins.{s} if it needs longer)"))
        .unwrap_or_default()
}

/// Why a call into a plugin failed. The plugin's own error results (such as
/// a source's `not-found`) are not `CallError`s: they come back as values.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error(
        "plugin `{plugin}` ran past its time limit of {limit:?} in `{call}` and was stopped{}",
        raise_hint(*.setting)
    )]
    Timeout {
        plugin: String,
        call: String,
        limit: Duration,
        /// The configuration key that sets this limit (none for the fixed
        /// `detect` deadline).
        setting: Option<&'static str>,
    },
    #[error(
        "plugin `{plugin}` is left out of `{call}` for another {}s after it failed there: {reason}",
        .retry_in.as_secs()
    )]
    Degraded {
        plugin: String,
        call: String,
        /// The failure that started the cool-down.
        reason: String,
        /// Time until the plugin is asked again.
        retry_in: Duration,
    },
    #[error(
        "plugin `{plugin}` exceeded its memory limit of {limit_mib} MiB in `{call}` and was \
         stopped (raise plugins.memory_limit_mib if it needs more)"
    )]
    MemoryLimit {
        plugin: String,
        call: String,
        limit_mib: u64,
    },
    #[error("plugin `{plugin}` crashed in `{call}`: {message}")]
    Trap {
        plugin: String,
        call: String,
        message: String,
    },
    #[error("plugin `{plugin}` failed in `{call}`: {message}")]
    Failed {
        plugin: String,
        call: String,
        message: String,
    },
    #[error("plugin `{plugin}` returned an unusable result from `{call}`: {message}")]
    BadResult {
        plugin: String,
        call: String,
        message: String,
    },
    #[error("plugin `{plugin}` could not be started: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin `{plugin}` is a {actual} plugin; `{call}` needs a {expected} plugin")]
    WrongKind {
        plugin: String,
        call: String,
        actual: Kind,
        expected: Kind,
    },
}
