//! The setting every format shares: `max_record_bytes`, the record size cap.
//! Each format declares it with [`with_shared_settings`] and reads it with
//! [`max_record_bytes`]; the host checks the value against the schema.

use tuner_sdk::{Setting, Settings};

/// Largest record a format buffers before rejecting it, by default. A record
/// this large is almost certainly a mistake (a file without line breaks, a
/// broken quote); refusing it keeps memory bounded.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

/// The format's own settings followed by the shared ones, for
/// `FormatPlugin::settings`.
pub fn with_shared_settings(own: Vec<Setting>) -> Vec<Setting> {
    let mut all = own;
    all.push(
        Setting::integer("max_record_bytes", DEFAULT_MAX_RECORD_BYTES as i64)
            .min(1)
            .describe("Largest record (line, element, row) in bytes; a larger one is rejected and skipped")
            .zh("单条记录（行、元素、数据行）的最大字节数；超过的记录会被拒绝并跳过"),
    );
    all
}

/// The record size cap from checked settings (the default when absent).
pub fn max_record_bytes(settings: &Settings) -> usize {
    match settings.integer("max_record_bytes") {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => DEFAULT_MAX_RECORD_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_cap_is_declared_and_read() {
        let all = with_shared_settings(vec![Setting::text("delimiter", "").no_default()]);
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["delimiter", "max_record_bytes"]);
        assert_eq!(max_record_bytes(&Settings::new()), DEFAULT_MAX_RECORD_BYTES);
        let s = Settings::new().with("max_record_bytes", 1024);
        assert_eq!(max_record_bytes(&s), 1024);
    }
}
