//! Record layouts shared by tuner's format plugins.
//!
//! A file format (JSON Lines, JSON, CSV) yields records as JSON objects; this
//! crate decides which layout a record is in (Alpaca, ShareGPT, OpenAI
//! messages, preference pairs, labelled answers, prompts, raw text) and turns it into one of
//! the five normalised [`Sample`] kinds. Errors name the field in the file's
//! own spelling (`conversations[2].from`) so a user can find it.
//!
//! It also holds the helpers every format needs: the shared
//! `max_record_bytes` setting ([`with_shared_settings`],
//! [`max_record_bytes`]) and [`BoundedLines`] (a line splitter that refuses
//! to buffer a line larger than the cap).
//!
//! Plain Rust, no WebAssembly specifics: `cargo test --manifest-path
//! plugins/Cargo.toml -p layouts` runs its tests natively.

mod fast;
mod lines;
mod normalise;
mod scan;
mod settings;
mod size_class;

pub use lines::{BoundedLines, LineEvent};
pub use normalise::{FieldError, Layout, Normalised, Normaliser};
pub use settings::{DEFAULT_MAX_RECORD_BYTES, max_record_bytes, with_shared_settings};
pub use size_class::SizeClassAlloc;
pub use tuner_sdk::{ChatSample, Message, PreferenceSample, PromptSample, Sample, UnpairedSample};

/// The JSON type name used in messages (`expected string, found number`).
pub fn type_name(value: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A human size for messages: `64 MiB`, `512 KiB`, `100 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}
