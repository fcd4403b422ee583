//! The SDK for writing tuner plugins: data formats, model sources and
//! training methods, compiled to WebAssembly components.
//!
//! Implement one trait ([`FormatPlugin`], [`SourcePlugin`] or
//! [`MethodPlugin`]) and register the type with [`export_plugin!`]:
//!
//! ```ignore
//! use tuner_sdk::format::*;
//!
//! struct Lines;
//! impl FormatPlugin for Lines {
//!     type Parser = LineParser;
//!     fn info() -> PluginInfo { tuner_sdk::plugin_info!(Format, "one sample per line") }
//!     fn detect(file_name: &str, _head: &str) -> f32 {
//!         if file_name.ends_with(".lines") { 0.9 } else { 0.0 }
//!     }
//! }
//! // ... `LineParser` implements `RecordParser` ...
//! tuner_sdk::export_plugin!(format: Lines);
//! ```
//!
//! Build with `tuner plugins build DIR` (or `cargo build --target
//! wasm32-unknown-unknown` followed by componentisation) and drop the `.wasm`
//! into the plugin directory. `docs/plugin-authoring.md` walks through it.
//!
//! The generated WIT bindings stay private; this crate re-exports an explicit
//! list of their types so that the public API is small and documented.

// Lets the bindings' paths (`tuner_sdk::...`) resolve inside this crate too.
extern crate self as tuner_sdk;

/// The version of the `tuner:plugin` WIT package this SDK targets. Stamped
/// into every plugin (custom section `tuner-sdk-version`).
pub const WIT_VERSION: &str = "0.1.0";

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
pub mod source;

mod lines;

pub use format::FormatPlugin;
pub use method::MethodPlugin;
pub use source::SourcePlugin;

// Types every plugin kind uses.
pub use __bindings::format::tuner::plugin::types::{
    ChatSample, Message, PluginError, PluginInfo, PluginKind, PreferenceSample, PromptSample,
    Sample,
};

impl PluginError {
    /// An error about one field or key.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error not tied to a field.
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

impl Message {
    /// A turn with the default loss weight.
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
/// `export_plugin!(format: MyFormat)`, `export_plugin!(source: MySource)` or
/// `export_plugin!(method: MyMethod)`; the type implements the matching
/// trait. Use it once per crate.
#[macro_export]
macro_rules! export_plugin {
    (format: $ty:ty) => {
        const _: () = {
            struct __TunerFormatExport;
            $crate::__format_glue!(__TunerFormatExport, $ty);
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

pub use lines::Lines;
