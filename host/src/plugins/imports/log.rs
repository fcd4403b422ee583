//! `tuner:plugin/log`: plugin log lines go to `tracing`, tagged with the
//! plugin's name (target `tuner::plugin`, field `plugin`).

use crate::plugins::bindings::v0_2_0::format::tuner::plugin::log::{Host, Level};
use crate::plugins::state::PluginState;

/// Longest log line kept; the rest is cut so a plugin cannot flood the log.
const MAX_LINE: usize = 16 * 1024;

impl Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" …(cut)");
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "tuner::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "tuner::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "tuner::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "tuner::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "tuner::plugin", plugin, "{message}"),
        }
    }

    fn enabled(&mut self, level: Level) -> bool {
        match level {
            Level::Trace => tracing::enabled!(target: "tuner::plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "tuner::plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "tuner::plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "tuner::plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "tuner::plugin", tracing::Level::ERROR),
        }
    }
}
