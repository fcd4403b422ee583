//! Plugin settings: the schema a plugin declares (`settings()` in
//! `tuner:plugin@0.2.0`) and the host's checking of user values against it.
//!
//! A method plugin owns every training-config key the host does not act on
//! itself (`lora_rank`, `beta`, `smoothing`, ...); a format plugin owns its
//! `--set` keys. The host reads the user's values leniently (`"0.2"` is a
//! number, `"yes"` is true, `"q_proj, v_proj"` is a list of names), checks
//! type, bounds and choices, fills in defaults, and only then calls the
//! plugin, so every plugin gets the same clear messages for free and the
//! web UI can build a form from the schema.
//!
//! These are the host's own types; `bindings` converts them to and from
//! each WIT version's generated ones.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Bounds of a numeric setting; `None` leaves that side open.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Bounds {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `min` itself is not allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive_min: bool,
    /// `max` itself is not allowed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive_max: bool,
}

impl Bounds {
    /// `None` when `value` is inside, else the rule it breaks, in words.
    fn violation(&self, value: f64) -> Option<String> {
        let below = match self.min {
            Some(min) if self.exclusive_min && value <= min => Some(format!("greater than {min}")),
            Some(min) if value < min => Some(format!("at least {min}")),
            _ => None,
        };
        let above = match self.max {
            Some(max) if self.exclusive_max && value >= max => Some(format!("below {max}")),
            Some(max) if value > max => Some(format!("at most {max}")),
            _ => None,
        };
        below
            .or(above)
            .map(|rule| format!("must be {rule}, found {value}"))
    }

    /// `[1, 4096]`, `(0, ∞)`, `[0, 1)`: the allowed range in interval notation.
    pub fn describe(&self) -> String {
        let open = if self.exclusive_min || self.min.is_none() {
            '('
        } else {
            '['
        };
        let close = if self.exclusive_max || self.max.is_none() {
            ')'
        } else {
            ']'
        };
        let min = self.min.map_or("-∞".to_string(), |v| v.to_string());
        let max = self.max.map_or("∞".to_string(), |v| v.to_string());
        format!("{open}{min}, {max}{close}")
    }
}

/// What a setting holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SettingKind {
    Boolean,
    Integer {
        #[serde(flatten)]
        bounds: Bounds,
    },
    Number {
        #[serde(flatten)]
        bounds: Bounds,
    },
    Text,
    Choice {
        choices: Vec<String>,
    },
    Names,
}

impl SettingKind {
    /// The type in a few words, for tables and messages.
    pub fn describe(&self) -> String {
        match self {
            SettingKind::Boolean => "true/false".into(),
            SettingKind::Integer { bounds } if bounds == &Bounds::default() => "integer".into(),
            SettingKind::Integer { bounds } => format!("integer in {}", bounds.describe()),
            SettingKind::Number { bounds } if bounds == &Bounds::default() => "number".into(),
            SettingKind::Number { bounds } => format!("number in {}", bounds.describe()),
            SettingKind::Text => "text".into(),
            SettingKind::Choice { choices } => format!("one of {}", choices.join(", ")),
            SettingKind::Names => "list of names".into(),
        }
    }
}

/// A checked setting value. Serialises as plain JSON (`8`, `0.05`, `true`,
/// `"cosine"`, `["q_proj"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SettingValue {
    Boolean(bool),
    Integer(i64),
    Number(f64),
    Text(String),
    Names(Vec<String>),
}

impl SettingValue {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a setting value always serialises")
    }
}

/// One setting a plugin declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Setting {
    /// The key, e.g. `lora_rank`.
    pub name: String,
    pub kind: SettingKind,
    /// Used when the key is not given; `None` means unset.
    pub default: Option<SettingValue>,
    /// One line in English.
    pub description: String,
    /// The same line in Chinese, when the plugin gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description_zh: Option<String>,
}

/// Checked values by key, in schema order: what `configure` receives.
pub type Values = Vec<(String, SettingValue)>;

/// A value that does not fit its setting: the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// Checks the values given for `schema`'s keys (keys of `given` outside the
/// schema are the caller's business) and fills in defaults. Every bad value
/// is reported, not just the first.
pub fn check(schema: &[Setting], given: &Map<String, Value>) -> Result<Values, Vec<Problem>> {
    let mut values = Vec::new();
    let mut problems = Vec::new();
    for setting in schema {
        match given.get(&setting.name).filter(|v| !v.is_null()) {
            Some(raw) => match read_value(&setting.kind, raw) {
                Ok(v) => values.push((setting.name.clone(), v)),
                Err(message) => problems.push(Problem {
                    key: setting.name.clone(),
                    message,
                }),
            },
            None => {
                if let Some(d) = &setting.default {
                    values.push((setting.name.clone(), d.clone()));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// Reads one user value as `kind`, leniently: strings are parsed, since
/// `--set key=value`, YAML and web forms all produce them.
pub fn read_value(kind: &SettingKind, raw: &Value) -> Result<SettingValue, String> {
    let text = raw.as_str().map(str::trim);
    match kind {
        SettingKind::Boolean => {
            let b = match (raw, text.map(str::to_ascii_lowercase).as_deref()) {
                (Value::Bool(b), _) => Some(*b),
                (_, Some("true" | "yes" | "on" | "1")) => Some(true),
                (_, Some("false" | "no" | "off" | "0")) => Some(false),
                _ => None,
            };
            b.map(SettingValue::Boolean)
                .ok_or_else(|| format!("expected true or false, found {raw}"))
        }
        SettingKind::Integer { bounds } => {
            let n = match raw {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                }),
                Value::String(_) => text.and_then(|t| t.parse::<i64>().ok()),
                _ => None,
            }
            .ok_or_else(|| format!("expected a whole number, found {raw}"))?;
            match bounds.violation(n as f64) {
                Some(v) => Err(v),
                None => Ok(SettingValue::Integer(n)),
            }
        }
        SettingKind::Number { bounds } => {
            let f = match raw {
                Value::Number(n) => n.as_f64(),
                Value::String(_) => text.and_then(|t| t.parse::<f64>().ok()),
                _ => None,
            }
            .filter(|f| f.is_finite())
            .ok_or_else(|| format!("expected a number, found {raw}"))?;
            match bounds.violation(f) {
                Some(v) => Err(v),
                None => Ok(SettingValue::Number(f)),
            }
        }
        SettingKind::Text => match raw {
            Value::String(s) => Ok(SettingValue::Text(s.clone())),
            Value::Number(n) => Ok(SettingValue::Text(n.to_string())),
            Value::Bool(b) => Ok(SettingValue::Text(b.to_string())),
            _ => Err(format!("expected text, found {raw}")),
        },
        SettingKind::Choice { choices } => {
            let word = match raw {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "expected one of {}, found {raw}",
                        choices.join(", ")
                    ));
                }
            };
            match choices.iter().find(|c| c.eq_ignore_ascii_case(&word)) {
                Some(c) => Ok(SettingValue::Text(c.clone())),
                None => {
                    let hint = closest(&word, choices.iter().map(String::as_str))
                        .map(|c| format!("; did you mean \"{c}\"?"))
                        .unwrap_or_default();
                    Err(format!(
                        "expected one of {}, found \"{word}\"{hint}",
                        choices.join(", ")
                    ))
                }
            }
        }
        SettingKind::Names => {
            let names: Vec<String> = match raw {
                Value::String(s) => s
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s.trim().to_string()),
                        other => Err(format!("expected names (strings), found {other}")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(format!("expected a list of names, found {raw}")),
            };
            if names.is_empty() || names.iter().any(String::is_empty) {
                return Err("the list of names is empty".into());
            }
            Ok(SettingValue::Names(names))
        }
    }
}

/// Checks a plugin's schema itself: names are well-formed and unique, and
/// each default fits its own kind. A plugin whose schema fails this is
/// refused with the message, rather than surprising users later.
pub fn check_schema(schema: &[Setting]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for s in schema {
        let well_formed = !s.name.is_empty()
            && s.name.len() <= 64
            && s.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !well_formed {
            return Err(format!(
                "setting name \"{}\" is not lowercase snake_case (a-z, 0-9, _)",
                s.name.escape_debug()
            ));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(format!("setting \"{}\" is declared twice", s.name));
        }
        if let SettingKind::Choice { choices } = &s.kind
            && choices.is_empty()
        {
            return Err(format!(
                "setting \"{}\" is a choice with no choices",
                s.name
            ));
        }
        if let Some(d) = &s.default
            && let Err(e) = read_value(&s.kind, &d.to_json())
        {
            return Err(format!(
                "the default of setting \"{}\" does not fit: {e}",
                s.name
            ));
        }
    }
    Ok(())
}

/// The candidate closest to `unknown` by edit distance, if close enough to
/// be a likely typo (case and `-`/`_` are ignored).
pub fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .min_by_key(|(d, _)| *d)
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rank() -> Setting {
        Setting {
            name: "lora_rank".into(),
            kind: SettingKind::Integer {
                bounds: Bounds {
                    min: Some(1.0),
                    max: Some(4096.0),
                    ..Bounds::default()
                },
            },
            default: Some(SettingValue::Integer(8)),
            description: "rank".into(),
            description_zh: None,
        }
    }

    fn dropout() -> Setting {
        Setting {
            name: "lora_dropout".into(),
            kind: SettingKind::Number {
                bounds: Bounds {
                    min: Some(0.0),
                    max: Some(1.0),
                    exclusive_max: true,
                    ..Bounds::default()
                },
            },
            default: Some(SettingValue::Number(0.05)),
            description: "dropout".into(),
            description_zh: None,
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn defaults_fill_in_and_strings_are_read_leniently() {
        let schema = [rank(), dropout()];
        let values = check(&schema, &map(json!({"lora_rank": "16"}))).unwrap();
        assert_eq!(
            values,
            vec![
                ("lora_rank".into(), SettingValue::Integer(16)),
                ("lora_dropout".into(), SettingValue::Number(0.05)),
            ]
        );
        let values = check(
            &schema,
            &map(json!({"lora_rank": 4.0, "lora_dropout": "0.2"})),
        )
        .unwrap();
        assert_eq!(values[0].1, SettingValue::Integer(4));
        assert_eq!(values[1].1, SettingValue::Number(0.2));
    }

    #[test]
    fn every_bad_value_is_reported_with_its_rule() {
        let schema = [rank(), dropout()];
        let problems =
            check(&schema, &map(json!({"lora_rank": 0, "lora_dropout": 1.0}))).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].key, "lora_rank");
        assert_eq!(problems[0].message, "must be at least 1, found 0");
        assert_eq!(problems[1].message, "must be below 1, found 1");
        let problems = check(&schema, &map(json!({"lora_rank": "eight"}))).unwrap_err();
        assert!(
            problems[0].message.contains("expected a whole number"),
            "{problems:?}"
        );
    }

    #[test]
    fn names_choices_and_booleans() {
        let names = read_value(&SettingKind::Names, &json!("q_proj, v_proj")).unwrap();
        assert_eq!(
            names,
            SettingValue::Names(vec!["q_proj".into(), "v_proj".into()])
        );
        assert!(read_value(&SettingKind::Names, &json!([])).is_err());
        let kind = SettingKind::Choice {
            choices: vec!["sigmoid".into(), "hinge".into(), "ipo".into()],
        };
        assert_eq!(
            read_value(&kind, &json!("IPO")).unwrap(),
            SettingValue::Text("ipo".into())
        );
        let err = read_value(&kind, &json!("sigmod")).unwrap_err();
        assert!(err.contains("did you mean \"sigmoid\""), "{err}");
        assert_eq!(
            read_value(&SettingKind::Boolean, &json!("yes")).unwrap(),
            SettingValue::Boolean(true)
        );
        assert!(read_value(&SettingKind::Boolean, &json!(2)).is_err());
    }

    #[test]
    fn schemas_with_bad_names_or_defaults_are_refused() {
        let mut bad = rank();
        bad.default = Some(SettingValue::Integer(0));
        assert!(check_schema(&[bad]).unwrap_err().contains("default"));
        let mut upper = rank();
        upper.name = "Rank".into();
        assert!(check_schema(&[upper]).is_err());
        assert!(
            check_schema(&[rank(), rank()])
                .unwrap_err()
                .contains("twice")
        );
        assert!(check_schema(&[rank(), dropout()]).is_ok());
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["lora_rank", "lora_alpha", "smoothing"];
        assert_eq!(closest("lora_rnak", keys), Some("lora_rank"));
        assert_eq!(closest("smoothnig", keys), Some("smoothing"));
        assert_eq!(closest("learning_rate", keys), None);
    }

    #[test]
    fn values_serialise_as_plain_json() {
        assert_eq!(SettingValue::Integer(8).to_json(), json!(8));
        assert_eq!(
            SettingValue::Names(vec!["a".into()]).to_json(),
            json!(["a"])
        );
        let s = serde_json::to_value(rank()).unwrap();
        assert_eq!(
            s["kind"],
            json!({"type": "integer", "min": 1.0, "max": 4096.0})
        );
    }
}
