//! Logging to the host. Lines appear in tuner's log (target `tuner::plugin`)
//! tagged with the plugin's name; `println!` output goes nowhere.
//!
//! ```no_run
//! tuner_sdk::log::info("loaded 3 layouts");
//! if tuner_sdk::log::enabled(tuner_sdk::log::Level::Debug) {
//!     tuner_sdk::log::debug(&format!("state: {:?}", (1, 2)));
//! }
//! ```

use crate::__bindings::format::tuner::plugin::log as wit;

/// Severity of a log line.
///
/// ```no_run
/// tuner_sdk::log::log(tuner_sdk::log::Level::Trace, "detail");
/// ```
pub use crate::__bindings::format::tuner::plugin::log::Level;

/// Writes a line at `level`. Lines over 16 KiB are cut.
///
/// ```no_run
/// use tuner_sdk::log::{Level, log};
/// log(Level::Warn, "column `input` is empty in every record");
/// ```
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// Whether a line at `level` would be recorded; skip building expensive
/// messages when not.
///
/// ```no_run
/// use tuner_sdk::log::{Level, enabled};
/// if enabled(Level::Trace) { /* format the whole record */ }
/// ```
pub fn enabled(level: Level) -> bool {
    wit::enabled(level)
}

/// Writes a debug line.
///
/// ```no_run
/// tuner_sdk::log::debug("header: prompt, answer");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info line.
///
/// ```no_run
/// tuner_sdk::log::info("using delimiter `;`");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning.
///
/// ```no_run
/// tuner_sdk::log::warn("no `sha256` in the listing; downloads are not verified");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error line.
///
/// ```no_run
/// tuner_sdk::log::error("the hub answered HTTP 500");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message);
}
