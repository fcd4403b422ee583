//! Format-specific settings (`ParseOptions.settings`), with the options every
//! format shares.

use crate::FieldError;

/// Largest record a format buffers before rejecting it, by default. A record
/// this large is almost certainly a mistake (a file without line breaks, a
/// broken quote); refusing it keeps memory bounded.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

/// Parsed `(key, value)` settings. Unknown keys are an error so that a typo
/// (`delimeter`) does not silently do nothing.
#[derive(Debug, Clone)]
pub struct Settings {
    pairs: Vec<(String, String)>,
    /// `max_record_bytes`: the record size cap.
    pub max_record_bytes: usize,
}

impl Settings {
    /// Reads `pairs`, accepting the shared keys plus `known` (the format's own).
    pub fn parse(pairs: &[(String, String)], known: &[&str]) -> Result<Self, FieldError> {
        let mut max_record_bytes = DEFAULT_MAX_RECORD_BYTES;
        for (key, value) in pairs {
            match key.as_str() {
                "max_record_bytes" => {
                    max_record_bytes = value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| {
                            FieldError::new(
                                "settings.max_record_bytes",
                                format!("expected a positive number of bytes, found `{value}`"),
                            )
                        })?;
                }
                k if known.contains(&k) => {}
                k => {
                    let mut all = vec!["max_record_bytes"];
                    all.extend_from_slice(known);
                    return Err(FieldError::new(
                        format!("settings.{k}"),
                        format!("unknown setting; this format knows: {}", all.join(", ")),
                    ));
                }
            }
        }
        Ok(Self {
            pairs: pairs.to_vec(),
            max_record_bytes,
        })
    }

    /// The value of a format-specific key, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn unknown_settings_are_refused_with_the_known_ones() {
        let err = Settings::parse(&pairs(&[("delimeter", ";")]), &["delimiter"]).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("settings.delimeter"));
        assert!(err.message.contains("delimiter"), "{}", err.message);
    }

    #[test]
    fn the_record_cap_is_configurable() {
        let s = Settings::parse(&pairs(&[("max_record_bytes", "1024")]), &[]).unwrap();
        assert_eq!(s.max_record_bytes, 1024);
        assert!(Settings::parse(&pairs(&[("max_record_bytes", "0")]), &[]).is_err());
    }
}
