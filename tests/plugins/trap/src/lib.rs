//! Hostile: `detect("panic", _)` traps; any other call works.
use support::NoParser;
use tuner_sdk::format::*;

struct Trap;

impl FormatPlugin for Trap {
    type Parser = NoParser;
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "panics in detect when asked to")
    }
    fn detect(file_name: &str, _head: &str) -> f32 {
        if file_name == "panic" {
            panic!("asked to panic");
        }
        0.25
    }
}

tuner_sdk::export_plugin!(format: Trap);
