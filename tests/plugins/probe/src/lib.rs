//! Probe for benchmarks and tests: `detect("host-calls:N", _)` makes N calls
//! to the host (`log.enabled`) and returns 0.5; `detect("log", msg)` logs `msg`.
use support::NoParser;
use tuner_sdk::format::*;

struct Probe;

impl FormatPlugin for Probe {
    type Parser = NoParser;
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "measures call costs")
    }
    fn detect(file_name: &str, head: &str) -> f32 {
        if file_name == "log" {
            tuner_sdk::log::warn(head);
        } else if let Some(n) = file_name.strip_prefix("host-calls:") {
            let n: u32 = n.parse().unwrap_or(0);
            for _ in 0..n {
                std::hint::black_box(tuner_sdk::log::enabled(tuner_sdk::log::Level::Trace));
            }
        }
        0.5
    }
}

tuner_sdk::export_plugin!(format: Probe);
