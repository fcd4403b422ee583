//! Hostile: `detect` never returns. The host must stop it at the deadline.
use support::NoParser;
use tuner_sdk::format::*;

struct EndlessLoop;

impl FormatPlugin for EndlessLoop {
    type Parser = NoParser;
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "spins forever in detect")
    }
    fn detect(_file_name: &str, _head: &str) -> f32 {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

tuner_sdk::export_plugin!(format: EndlessLoop);
