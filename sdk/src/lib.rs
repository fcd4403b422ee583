//! The SDK for writing tuner plugins: WebAssembly components that tuner runs
//! in a sandbox (no files, sockets or clocks; network only through the host,
//! only to declared hosts).
//!
//! There are four kinds of plugin. Implement one trait and export the type
//! with [`export_plugin!`]:
//!
//! | Kind | Trait | What it does |
//! |------|-------|--------------|
//! | format | [`FormatPlugin`] (+ a [`format::RecordParser`]) | reads a data file format into training [`Sample`]s, streaming |
//! | source | [`SourcePlugin`] | resolves a model or dataset repository to a file listing the host downloads |
//! | method | [`MethodPlugin`] | a training method: declares its settings, says what the host prepares ([`method::Plan`]) and composes the loss from host tensors |
//! | reward | [`RewardPlugin`] | a reward function for RL methods (GRPO): scores generated completions, text in, numbers out |
//!
//! Formats and methods declare their own settings as a schema
//! ([`Setting`]); the host checks user values against it, fills in defaults
//! and hands the plugin typed [`Settings`].
//!
//! A complete format plugin:
//!
//! ```no_run
//! use tuner_sdk::format::*;
//!
//! struct LinesFormat;
//!
//! impl FormatPlugin for LinesFormat {
//!     type Parser = ByLine<LineToText>;
//!     fn info() -> PluginInfo {
//!         tuner_sdk::plugin_info!(Format, "One text sample per line")
//!     }
//!     fn detect(file_name: &str, _head: &str) -> f32 {
//!         if file_name.ends_with(".lines") { 0.9 } else { 0.0 }
//!     }
//! }
//!
//! struct LineToText;
//!
//! impl LineParser for LineToText {
//!     fn new(_options: ParseOptions) -> Result<Self, FatalError> {
//!         Ok(LineToText)
//!     }
//!     fn parse_line(&mut self, at: Location, line: &str) -> RecordOutcome {
//!         RecordOutcome::sample(at, Sample::Text(line.to_string()), "text")
//!     }
//! }
//!
//! tuner_sdk::export_plugin!(format: LinesFormat);
//! ```
//!
//! Build with `tuner plugins build DIR --install`, which compiles for
//! `wasm32-unknown-unknown`, wraps the module into a component and copies it
//! into the plugin folder. `docs/plugin-authoring.md` walks through it.
//!
//! This reference: `cargo doc -p tuner-sdk --open`.
//!
//! The generated WIT bindings stay private; this crate re-exports an explicit
//! list of their types so that the public API is small and documented.

#![warn(missing_docs)]

// Lets the bindings' paths (`tuner_sdk::...`) resolve inside this crate too.
extern crate self as tuner_sdk;

/// The version of the `tuner:plugin` WIT package this SDK targets. Stamped
/// into every plugin (custom section `tuner-sdk-version`).
///
/// ```
/// assert_eq!(tuner_sdk::WIT_VERSION, "0.2.0");
/// ```
pub const WIT_VERSION: &str = "0.2.0";

#[doc(hidden)]
pub const __WIT_VERSION_BYTES: [u8; WIT_VERSION.len()] = {
    let mut out = [0u8; WIT_VERSION.len()];
    let src = WIT_VERSION.as_bytes();
    let mut i = 0;
    while i < src.len() {
        out[i] = src[i];
        i += 1;
    }
    out
};

#[doc(hidden)]
pub mod __bindings;

pub mod format;
pub mod log;
pub mod method;
pub mod reward;
pub mod source;

mod error;
mod lines;
mod settings;

pub use error::PluginError;
pub use format::FormatPlugin;
pub use lines::Lines;
pub use method::MethodPlugin;
pub use reward::RewardPlugin;
pub use settings::Settings;
pub use source::SourcePlugin;

/// What a plugin says about itself; build it with [`plugin_info!`].
///
/// ```
/// let info = tuner_sdk::plugin_info!(Format, "One text sample per line");
/// assert_eq!(info.kind, tuner_sdk::PluginKind::Format);
/// assert_eq!(info.name, env!("CARGO_PKG_NAME"));
/// ```
pub use __bindings::format::tuner::plugin::types::PluginInfo;

/// The kind of a plugin, which must match the world it targets.
///
/// ```
/// use tuner_sdk::PluginKind;
/// let kind = PluginKind::Method;
/// assert_ne!(kind, PluginKind::Format);
/// ```
pub use __bindings::format::tuner::plugin::types::PluginKind;

/// A normalised training sample, what a format plugin produces.
///
/// ```
/// use tuner_sdk::{ChatSample, Message, Sample};
/// let text = Sample::Text("Once upon a time".into());
/// let chat = Sample::Chat(ChatSample {
///     messages: vec![Message::new("user", "Hi"), Message::new("assistant", "Hello!")],
///     tools: None,
/// });
/// assert_ne!(text, chat);
/// ```
pub use __bindings::format::tuner::plugin::types::Sample;

/// A conversation to train on.
///
/// ```
/// use tuner_sdk::{ChatSample, Message};
/// let chat = ChatSample { messages: vec![Message::new("user", "2+2?"), Message::new("assistant", "4")], tools: None };
/// assert_eq!(chat.messages.len(), 2);
/// ```
pub use __bindings::format::tuner::plugin::types::ChatSample;

/// One turn of a conversation; [`Message::new`] uses the default loss weight.
///
/// ```
/// use tuner_sdk::Message;
/// let system = Message { loss_weight: Some(0.0), ..Message::new("system", "Be brief.") };
/// assert_eq!(system.role, "system");
/// ```
pub use __bindings::format::tuner::plugin::types::Message;

/// A preference pair: one prompt, a better and a worse answer.
///
/// ```
/// use tuner_sdk::{Message, PreferenceSample};
/// let pair = PreferenceSample {
///     prompt: vec![Message::new("user", "Capital of France?")],
///     chosen: vec![Message::new("assistant", "Paris.")],
///     rejected: vec![Message::new("assistant", "Lyon.")],
/// };
/// assert_eq!(pair.chosen[0].content, "Paris.");
/// ```
pub use __bindings::format::tuner::plugin::types::PreferenceSample;

/// One answer labelled desirable (`label: true`) or undesirable, judged on
/// its own (KTO).
///
/// ```
/// use tuner_sdk::{Message, UnpairedSample};
/// let judged = UnpairedSample {
///     prompt: vec![Message::new("user", "Capital of France?")],
///     completion: vec![Message::new("assistant", "Lyon.")],
///     label: false,
/// };
/// assert!(!judged.label);
/// ```
pub use __bindings::format::tuner::plugin::types::UnpairedSample;

/// A prompt without an answer to imitate (online methods).
///
/// ```
/// use tuner_sdk::{Message, PromptSample};
/// let p = PromptSample { prompt: vec![Message::new("user", "2+3?")], answer: Some("5".into()) };
/// assert!(p.answer.is_some());
/// ```
pub use __bindings::format::tuner::plugin::types::PromptSample;

/// One setting a format or method accepts, with its type, default and
/// description. Build it with the constructors on this type
/// ([`Setting::integer`], [`Setting::number`], ...).
///
/// ```
/// use tuner_sdk::Setting;
/// let rank = Setting::integer("lora_rank", 8)
///     .range(1, 4096)
///     .describe("Rank of the LoRA matrices")
///     .zh("LoRA 矩阵的秩");
/// assert_eq!(rank.name, "lora_rank");
/// ```
pub use __bindings::format::tuner::plugin::types::Setting;

/// A checked setting value, as the host passes it.
///
/// ```
/// use tuner_sdk::SettingValue;
/// assert_eq!(SettingValue::from(8), SettingValue::Integer(8));
/// assert_eq!(SettingValue::from(0.1).to_string(), "0.1");
/// ```
pub use __bindings::format::tuner::plugin::types::SettingValue;

/// What a setting holds; set by the [`Setting`] constructors.
///
/// ```
/// use tuner_sdk::{Setting, SettingKind};
/// assert!(matches!(Setting::boolean("use_rslora", false).kind, SettingKind::Boolean));
/// ```
pub use __bindings::format::tuner::plugin::types::SettingKind;

/// Bounds of a numeric setting; set with [`Setting::range`],
/// [`Setting::min`], [`Setting::max`], [`Setting::above`], [`Setting::below`].
///
/// ```
/// use tuner_sdk::{Bounds, Setting, SettingKind};
/// let s = Setting::number("lora_dropout", 0.05).min(0).below(1);
/// let SettingKind::Number(Bounds { min, max, exclusive_min, exclusive_max }) = s.kind else { panic!() };
/// assert_eq!((min, max, exclusive_min, exclusive_max), (Some(0.0), Some(1.0), false, true));
/// ```
pub use __bindings::format::tuner::plugin::types::Bounds;

impl Message {
    /// A turn with the default loss weight (1.0 for `assistant`, 0.0 for
    /// the other roles).
    ///
    /// ```
    /// let m = tuner_sdk::Message::new("assistant", "Hello!");
    /// assert_eq!(m.loss_weight, None);
    /// ```
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            loss_weight: None,
        }
    }
}

/// Builds a [`PluginInfo`] from the crate's name and version.
///
/// `plugin_info!(Format, "description")`, optionally followed by the network
/// hosts the plugin reaches: `plugin_info!(Source, "…", ["hub.example.com"])`.
///
/// ```
/// let info = tuner_sdk::plugin_info!(Source, "Models from my hub", ["hub.example.com"]);
/// assert_eq!(info.hosts, ["hub.example.com"]);
/// assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
/// ```
#[macro_export]
macro_rules! plugin_info {
    ($kind:ident, $description:expr) => {
        $crate::plugin_info!($kind, $description, [])
    };
    ($kind:ident, $description:expr, [$($host:expr),* $(,)?]) => {
        $crate::PluginInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kind: $crate::PluginKind::$kind,
            description: ($description).to_string(),
            hosts: vec![$(($host).to_string()),*],
        }
    };
}

/// Exports a type as the plugin of this component.
///
/// `export_plugin!(format: MyFormat)` (or `binary_format:` for a
/// [`format::BinaryFormatPlugin`]), `export_plugin!(source: MySource)`,
/// `export_plugin!(method: MyMethod)` or `export_plugin!(reward: MyReward)`;
/// the type implements the matching trait. Use it once per crate.
///
/// ```no_run
/// use tuner_sdk::source::*;
///
/// struct Nowhere;
/// impl SourcePlugin for Nowhere {
///     fn info() -> PluginInfo { tuner_sdk::plugin_info!(Source, "Finds nothing") }
///     fn default_endpoint() -> String { "https://nowhere.example".into() }
///     fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
///         Err(SourceError::NotFound(request.repo))
///     }
/// }
///
/// tuner_sdk::export_plugin!(source: Nowhere);
/// ```
#[macro_export]
macro_rules! export_plugin {
    (format: $ty:ty) => {
        const _: () = {
            struct __TunerFormatExport;
            $crate::__format_glue!(__TunerFormatExport, $ty, $crate::format::TextOnly, Text);
            $crate::__bindings::format::export!(
                __TunerFormatExport with_types_in $crate::__bindings::format
            );
            $crate::__sdk_version_section!();
        };
    };
    (binary_format: $ty:ty) => {
        const _: () = {
            struct __TunerFormatExport;
            $crate::__format_glue!(
                __TunerFormatExport,
                $ty,
                <$ty as $crate::format::BinaryFormatPlugin>::ByteParser,
                Bytes
            );
            $crate::__bindings::format::export!(
                __TunerFormatExport with_types_in $crate::__bindings::format
            );
            $crate::__sdk_version_section!();
        };
    };
    (source: $ty:ty) => {
        const _: () = {
            struct __TunerSourceExport;
            $crate::__source_glue!(__TunerSourceExport, $ty);
            $crate::__bindings::source::export!(
                __TunerSourceExport with_types_in $crate::__bindings::source
            );
            $crate::__sdk_version_section!();
        };
    };
    (method: $ty:ty) => {
        const _: () = {
            struct __TunerMethodExport;
            $crate::__method_glue!(__TunerMethodExport, $ty);
            $crate::__bindings::method::export!(
                __TunerMethodExport with_types_in $crate::__bindings::method
            );
            $crate::__sdk_version_section!();
        };
    };
    (reward: $ty:ty) => {
        const _: () = {
            struct __TunerRewardExport;
            $crate::__reward_glue!(__TunerRewardExport, $ty);
            $crate::__bindings::reward::export!(
                __TunerRewardExport with_types_in $crate::__bindings::reward
            );
            $crate::__sdk_version_section!();
        };
    };
}

/// Stamps the WIT version this SDK targets into the plugin, so the host can
/// say which interface version a plugin was built for.
#[doc(hidden)]
#[macro_export]
macro_rules! __sdk_version_section {
    () => {
        #[cfg(target_arch = "wasm32")]
        #[unsafe(link_section = "tuner-sdk-version")]
        #[used]
        static __TUNER_SDK_VERSION: [u8; $crate::WIT_VERSION.len()] = $crate::__WIT_VERSION_BYTES;
    };
}
