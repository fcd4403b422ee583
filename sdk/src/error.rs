//! The error a plugin reports for bad input.

use std::fmt;

/// An error a plugin reports for bad input: a setting, a parse option, a
/// configuration the schema cannot express. The host shows it as
/// ``plugin `NAME` failed in `configure`: `lora_rank`: ...``.
///
/// Displays as a sentence: the field in backticks, then the message.
///
/// ```
/// use tuner_sdk::PluginError;
/// let err = PluginError::field("lora_rank", "must be at least 1");
/// assert_eq!(err.to_string(), "`lora_rank`: must be at least 1");
/// assert_eq!(PluginError::msg("no data").to_string(), "no data");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginError {
    /// The offending field or key, when there is one.
    pub field: Option<String>,
    /// What is wrong, for a human.
    pub message: String,
}

impl PluginError {
    /// An error about one field or key.
    ///
    /// ```
    /// let err = tuner_sdk::PluginError::field("delimiter", "expected one character");
    /// assert_eq!(err.field.as_deref(), Some("delimiter"));
    /// ```
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error not tied to a field.
    ///
    /// ```
    /// let err = tuner_sdk::PluginError::msg("the batch has no rows");
    /// assert_eq!(err.field, None);
    /// ```
    pub fn msg(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "`{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PluginError {}
