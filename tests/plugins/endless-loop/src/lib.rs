//! Hostile: `detect` never returns, and neither does its parser's `feed`.
//! The host must stop it at the deadline.
use tuner_sdk::format::*;

struct EndlessLoop;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// A parser that spins on the first text it is given.
struct Spinner;

impl RecordParser for Spinner {
    fn new(_: ParseOptions) -> Result<Self, FatalError> {
        Ok(Spinner)
    }
    fn feed(&mut self, _: &str, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        spin()
    }
    fn finish(&mut self, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        Ok(())
    }
}

impl FormatPlugin for EndlessLoop {
    type Parser = Spinner;
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Format, "spins forever in detect and parse")
    }
    fn detect(_file_name: &str, _head: &str) -> f32 {
        spin()
    }
}

tuner_sdk::export_plugin!(format: EndlessLoop);
