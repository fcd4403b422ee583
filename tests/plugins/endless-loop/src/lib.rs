//! Hostile: `detect` never returns. The host must stop it at the deadline.
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

struct NoParser;
impl RecordParser for NoParser {
    fn new(_: ParseOptions) -> Result<Self, FatalError> {
        Ok(NoParser)
    }
    fn feed(&mut self, _: &str, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        Ok(())
    }
    fn finish(&mut self, _: &mut Vec<RecordOutcome>) -> Result<(), FatalError> {
        Ok(())
    }
}

tuner_sdk::export_plugin!(format: EndlessLoop);
