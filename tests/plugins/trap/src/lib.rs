//! Hostile: `detect("panic", _)` traps; any other call works.
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

tuner_sdk::export_plugin!(format: Trap);
