//! Settings schemas ([`Setting`]) and checked values ([`Settings`]).

use std::fmt;

use crate::{Bounds, Setting, SettingKind, SettingValue};

fn open() -> Bounds {
    Bounds {
        min: None,
        max: None,
        exclusive_min: false,
        exclusive_max: false,
    }
}

fn setting(name: &str, kind: SettingKind, default: Option<SettingValue>) -> Setting {
    Setting {
        name: name.to_string(),
        kind,
        default,
        description: String::new(),
        description_zh: None,
    }
}

/// Building a schema. Every constructor takes the key (lowercase
/// `snake_case`) and the default; chain [`Setting::describe`] (and
/// [`Setting::zh`]) for the line `tuner plugins info` shows, bounds for
/// numbers, and [`Setting::no_default`] for a key that may stay unset.
impl Setting {
    /// `true` or `false`.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::boolean("use_rslora", false).describe("Scale by alpha / sqrt(rank)");
    /// assert_eq!(s.default, Some(false.into()));
    /// ```
    pub fn boolean(name: &str, default: bool) -> Setting {
        setting(name, SettingKind::Boolean, Some(default.into()))
    }

    /// A whole number; bound it with [`Setting::range`] and friends.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::integer("lora_rank", 8).range(1, 4096);
    /// assert_eq!(s.default, Some(8.into()));
    /// ```
    pub fn integer(name: &str, default: i64) -> Setting {
        setting(name, SettingKind::Integer(open()), Some(default.into()))
    }

    /// A finite number; bound it with [`Setting::above`] and friends.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::number("lora_alpha", 32.0).above(0);
    /// assert_eq!(s.default, Some(32.0.into()));
    /// ```
    pub fn number(name: &str, default: f64) -> Setting {
        setting(name, SettingKind::Number(open()), Some(default.into()))
    }

    /// Free text.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::text("array_key", "").no_default().describe("Which array holds the records");
    /// assert_eq!(s.default, None);
    /// ```
    pub fn text(name: &str, default: &str) -> Setting {
        setting(name, SettingKind::Text, Some(default.into()))
    }

    /// One of the listed words (passed to the plugin as text).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::choice("split", &["file", "paragraph", "line"], "file");
    /// assert_eq!(s.default, Some("file".into()));
    /// ```
    pub fn choice(name: &str, choices: &[&str], default: &str) -> Setting {
        let choices = choices.iter().map(|c| c.to_string()).collect();
        setting(name, SettingKind::Choice(choices), Some(default.into()))
    }

    /// A list of names; users may also write one comma- or space-separated
    /// string.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::names("target_modules", &["all-linear"]);
    /// assert_eq!(s.default, Some(vec!["all-linear".to_string()].into()));
    /// ```
    pub fn names(name: &str, default: &[&str]) -> Setting {
        let names: Vec<String> = default.iter().map(|n| n.to_string()).collect();
        setting(name, SettingKind::Names, Some(names.into()))
    }

    /// No default: when the user does not set the key, it is absent from
    /// [`Settings`] and the plugin decides.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::text("delimiter", "").no_default();
    /// assert!(s.default.is_none());
    /// ```
    pub fn no_default(mut self) -> Setting {
        self.default = None;
        self
    }

    /// The English description (one line).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::boolean("verbose", false).describe("Log every record");
    /// assert_eq!(s.description, "Log every record");
    /// ```
    pub fn describe(mut self, description: &str) -> Setting {
        self.description = description.to_string();
        self
    }

    /// The Chinese description (one line).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::integer("lora_rank", 8).describe("Rank of the LoRA matrices").zh("LoRA 矩阵的秩");
    /// assert_eq!(s.description_zh.as_deref(), Some("LoRA 矩阵的秩"));
    /// ```
    pub fn zh(mut self, description: &str) -> Setting {
        self.description_zh = Some(description.to_string());
        self
    }

    /// Allowed values `min ..= max`.
    ///
    /// Bounds apply to [`Setting::integer`] and [`Setting::number`] only;
    /// on another kind they panic (a mistake in the plugin's schema).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::integer("lora_rank", 8).range(1, 4096);
    /// # let tuner_sdk::SettingKind::Integer(b) = s.kind else { panic!() };
    /// # assert_eq!((b.min, b.max), (Some(1.0), Some(4096.0)));
    /// ```
    pub fn range(self, min: impl Into<f64>, max: impl Into<f64>) -> Setting {
        self.min(min).max(max)
    }

    /// Values must be at least `min`.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::integer("max_record_bytes", 1 << 20).min(1);
    /// # let tuner_sdk::SettingKind::Integer(b) = s.kind else { panic!() };
    /// # assert_eq!((b.min, b.exclusive_min), (Some(1.0), false));
    /// ```
    pub fn min(self, min: impl Into<f64>) -> Setting {
        self.bounded("min", |b| {
            b.min = Some(min.into());
            b.exclusive_min = false;
        })
    }

    /// Values must be at most `max`.
    ///
    /// ```
    /// let s = tuner_sdk::Setting::number("top_p", 1.0).above(0).max(1);
    /// # let tuner_sdk::SettingKind::Number(b) = s.kind else { panic!() };
    /// # assert_eq!((b.max, b.exclusive_max), (Some(1.0), false));
    /// ```
    pub fn max(self, max: impl Into<f64>) -> Setting {
        self.bounded("max", |b| {
            b.max = Some(max.into());
            b.exclusive_max = false;
        })
    }

    /// Values must be greater than `min` (`min` itself is refused).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::number("lora_alpha", 32.0).above(0);
    /// # let tuner_sdk::SettingKind::Number(b) = s.kind else { panic!() };
    /// # assert_eq!((b.min, b.exclusive_min), (Some(0.0), true));
    /// ```
    pub fn above(self, min: impl Into<f64>) -> Setting {
        self.bounded("above", |b| {
            b.min = Some(min.into());
            b.exclusive_min = true;
        })
    }

    /// Values must be less than `max` (`max` itself is refused).
    ///
    /// ```
    /// let s = tuner_sdk::Setting::number("smoothing", 0.1).min(0).below(1);
    /// # let tuner_sdk::SettingKind::Number(b) = s.kind else { panic!() };
    /// # assert_eq!((b.max, b.exclusive_max), (Some(1.0), true));
    /// ```
    pub fn below(self, max: impl Into<f64>) -> Setting {
        self.bounded("below", |b| {
            b.max = Some(max.into());
            b.exclusive_max = true;
        })
    }

    fn bounded(mut self, what: &str, set: impl FnOnce(&mut Bounds)) -> Setting {
        match &mut self.kind {
            SettingKind::Integer(b) | SettingKind::Number(b) => set(b),
            _ => panic!(
                "setting `{}`: `{what}` applies to integer and number settings only",
                self.name
            ),
        }
        self
    }
}

impl From<bool> for SettingValue {
    fn from(value: bool) -> Self {
        SettingValue::Boolean(value)
    }
}

impl From<i64> for SettingValue {
    fn from(value: i64) -> Self {
        SettingValue::Integer(value)
    }
}

impl From<i32> for SettingValue {
    fn from(value: i32) -> Self {
        SettingValue::Integer(value.into())
    }
}

impl From<u32> for SettingValue {
    fn from(value: u32) -> Self {
        SettingValue::Integer(value.into())
    }
}

impl From<f64> for SettingValue {
    fn from(value: f64) -> Self {
        SettingValue::Number(value)
    }
}

impl From<&str> for SettingValue {
    fn from(value: &str) -> Self {
        SettingValue::Text(value.to_string())
    }
}

impl From<String> for SettingValue {
    fn from(value: String) -> Self {
        SettingValue::Text(value)
    }
}

impl From<Vec<String>> for SettingValue {
    fn from(value: Vec<String>) -> Self {
        SettingValue::Names(value)
    }
}

impl From<&[&str]> for SettingValue {
    fn from(value: &[&str]) -> Self {
        SettingValue::Names(value.iter().map(|n| n.to_string()).collect())
    }
}

/// As a user would write it: `true`, `8`, `0.05`, `paragraph`,
/// `q_proj, v_proj`.
impl fmt::Display for SettingValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingValue::Boolean(b) => write!(f, "{b}"),
            SettingValue::Integer(n) => write!(f, "{n}"),
            SettingValue::Number(x) => write!(f, "{x}"),
            SettingValue::Text(t) => f.write_str(t),
            SettingValue::Names(names) => f.write_str(&names.join(", ")),
        }
    }
}

/// Checked setting values by key, as the host passes them to
/// [`MethodPlugin::configure`](crate::MethodPlugin::configure) and in
/// [`ParseOptions::settings`](crate::format::ParseOptions::settings).
///
/// The host has already checked every value against the plugin's schema
/// (type, bounds, choices) and filled in defaults, so a getter returns
/// `None` only for a key without a value and without a default (or if asked
/// for the wrong type). Keys outside the schema never arrive.
///
/// ```
/// use tuner_sdk::Settings;
/// let settings = Settings::new()
///     .with("lora_rank", 16)
///     .with("lora_alpha", 32.0)
///     .with("use_rslora", false)
///     .with("split", "paragraph")
///     .with("target_modules", &["q_proj", "v_proj"][..]);
/// assert_eq!(settings.integer("lora_rank"), Some(16));
/// assert_eq!(settings.number("lora_alpha"), Some(32.0));
/// assert_eq!(settings.bool("use_rslora"), Some(false));
/// assert_eq!(settings.text("split"), Some("paragraph"));
/// assert_eq!(settings.names("target_modules").map(|n| n.len()), Some(2));
/// assert_eq!(settings.integer("missing"), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings(Vec<(String, SettingValue)>);

impl Settings {
    /// No values.
    ///
    /// ```
    /// assert!(tuner_sdk::Settings::new().get("anything").is_none());
    /// ```
    pub fn new() -> Settings {
        Settings(Vec::new())
    }

    /// The same settings with `key` set to `value` (for tests and examples;
    /// the host builds the real ones).
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("smoothing", 0.2);
    /// assert_eq!(s.number("smoothing"), Some(0.2));
    /// ```
    pub fn with(mut self, key: &str, value: impl Into<SettingValue>) -> Settings {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value.into()));
        self
    }

    /// The value of `key`, of whatever type.
    ///
    /// ```
    /// use tuner_sdk::{SettingValue, Settings};
    /// let s = Settings::new().with("lora_rank", 8);
    /// assert_eq!(s.get("lora_rank"), Some(&SettingValue::Integer(8)));
    /// ```
    pub fn get(&self, key: &str) -> Option<&SettingValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A boolean setting.
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("use_rslora", true);
    /// assert_eq!(s.bool("use_rslora"), Some(true));
    /// ```
    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            SettingValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer setting.
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("lora_rank", 8);
    /// assert_eq!(s.integer("lora_rank").unwrap_or(4), 8);
    /// ```
    pub fn integer(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            SettingValue::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// A number setting (an integer value converts).
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("lora_alpha", 16);
    /// assert_eq!(s.number("lora_alpha"), Some(16.0));
    /// ```
    pub fn number(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            SettingValue::Number(x) => Some(*x),
            SettingValue::Integer(n) => Some(*n as f64),
            _ => None,
        }
    }

    /// A text or choice setting.
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("delimiter", ";");
    /// assert_eq!(s.text("delimiter"), Some(";"));
    /// ```
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            SettingValue::Text(t) => Some(t),
            _ => None,
        }
    }

    /// A list-of-names setting.
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("target_modules", vec!["q_proj".to_string()]);
    /// assert_eq!(s.names("target_modules"), Some(&["q_proj".to_string()][..]));
    /// ```
    pub fn names(&self, key: &str) -> Option<&[String]> {
        match self.get(key)? {
            SettingValue::Names(n) => Some(n),
            _ => None,
        }
    }

    /// Every `(key, value)`, in the order the host gave them.
    ///
    /// ```
    /// let s = tuner_sdk::Settings::new().with("a", 1).with("b", true);
    /// let keys: Vec<&str> = s.iter().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SettingValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// The host's form (`list<tuple<string, setting-value>>`).
///
/// ```
/// use tuner_sdk::{SettingValue, Settings};
/// let s = Settings::from(vec![("lora_rank".to_string(), SettingValue::Integer(8))]);
/// assert_eq!(s.integer("lora_rank"), Some(8));
/// ```
impl From<Vec<(String, SettingValue)>> for Settings {
    fn from(pairs: Vec<(String, SettingValue)>) -> Self {
        Settings(pairs)
    }
}

/// Back to the host's form.
///
/// ```
/// use tuner_sdk::Settings;
/// let pairs: Vec<_> = Settings::new().with("a", 1).into();
/// assert_eq!(pairs.len(), 1);
/// ```
impl From<Settings> for Vec<(String, SettingValue)> {
    fn from(settings: Settings) -> Self {
        settings.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "setting `split`: `min` applies to integer and number settings only")]
    fn bounds_on_text_are_a_schema_mistake() {
        let _ = Setting::choice("split", &["a"], "a").min(1);
    }

    #[test]
    fn later_values_win() {
        let s = Settings::from(vec![
            ("k".to_string(), SettingValue::Integer(1)),
            ("k".to_string(), SettingValue::Integer(2)),
        ]);
        assert_eq!(s.integer("k"), Some(2));
        assert_eq!(s.text("k"), None);
    }

    #[test]
    fn values_display_as_written() {
        let names: SettingValue = vec!["q_proj".to_string(), "v_proj".to_string()].into();
        assert_eq!(names.to_string(), "q_proj, v_proj");
        assert_eq!(SettingValue::Number(32.0).to_string(), "32");
        assert_eq!(SettingValue::Boolean(true).to_string(), "true");
    }
}
