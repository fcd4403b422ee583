//! Shared by the test plugins: a parser for plugins that only exercise
//! `detect` and never read records.
use tuner_sdk::format::*;

/// Accepts any input and produces no records.
pub struct NoParser;

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
