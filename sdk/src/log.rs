//! Logging to the host. Lines appear in tuner's log tagged with the plugin's name.

use crate::__bindings::format::tuner::plugin::log as wit;
pub use crate::__bindings::format::tuner::plugin::log::Level;

/// Writes a line at `level`.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// Whether a line at `level` would be recorded.
pub fn enabled(level: Level) -> bool {
    wit::enabled(level)
}

/// Writes a debug line.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Writes an info line.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Writes a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Writes an error line.
pub fn error(message: &str) {
    log(Level::Error, message);
}
