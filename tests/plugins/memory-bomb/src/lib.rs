//! Hostile: `detect` allocates until the host refuses more memory.
use support::NoParser;
use tuner_sdk::format::*;

struct MemoryBomb;

impl FormatPlugin for MemoryBomb {
    type Parser = NoParser;
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "allocates without bound in detect")
    }
    fn detect(_file_name: &str, _head: &str) -> f32 {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![7u8; 8 << 20]));
        }
    }
}

tuner_sdk::export_plugin!(format: MemoryBomb);
