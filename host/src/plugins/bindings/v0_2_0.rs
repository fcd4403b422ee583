//! Bindings for `tuner:plugin@0.2.0`, the newest interface: the host's own
//! import implementations (`imports::*`) are written against these.
//!
//! The worlds share `types` and `log`; `with` makes `source` and `method`
//! reuse the `format` generation, so one `Host` implementation serves all.
//! The tensor and model resources map to host types that live in the
//! store's resource table (shared with the 0.1.0 bindings).

use crate::plugins::settings;

pub mod format {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/format",
        imports: {
            "tuner:plugin/input": trappable,
        },
        with: {
            "tuner:plugin/input.input-file": crate::plugins::imports::input::InputFile,
        },
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/source",
        with: {
            "tuner:plugin/types": crate::plugins::bindings::v0_2_0::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::v0_2_0::format::tuner::plugin::log,
        },
    });
}

pub mod method {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/method",
        imports: {
            "tuner:plugin/tensors": trappable,
            "tuner:plugin/model": trappable,
        },
        with: {
            "tuner:plugin/types": crate::plugins::bindings::v0_2_0::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::v0_2_0::format::tuner::plugin::log,
            "tuner:plugin/tensors.tensor": crate::plugins::imports::tensors::TensorHandle,
            "tuner:plugin/model.batch": crate::plugins::imports::model::BatchHandle,
            "tuner:plugin/model.policy": crate::plugins::imports::model::PolicyHandle,
        },
    });
}

pub mod reward {
    wasmtime::component::bindgen!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/reward",
        with: {
            "tuner:plugin/types": crate::plugins::bindings::v0_2_0::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::v0_2_0::format::tuner::plugin::log,
        },
    });
}

use format::tuner::plugin::types as wit;

// ---------------------------------------------------------------- settings
// The host's own settings types (`plugins::settings`) and the WIT ones.

impl From<wit::Bounds> for settings::Bounds {
    fn from(b: wit::Bounds) -> Self {
        Self {
            min: b.min,
            max: b.max,
            exclusive_min: b.exclusive_min,
            exclusive_max: b.exclusive_max,
        }
    }
}

impl From<wit::SettingKind> for settings::SettingKind {
    fn from(k: wit::SettingKind) -> Self {
        match k {
            wit::SettingKind::Boolean => Self::Boolean,
            wit::SettingKind::Integer(b) => Self::Integer { bounds: b.into() },
            wit::SettingKind::Number(b) => Self::Number { bounds: b.into() },
            wit::SettingKind::Text => Self::Text,
            wit::SettingKind::Choice(choices) => Self::Choice { choices },
            wit::SettingKind::Names => Self::Names,
        }
    }
}

impl From<wit::SettingValue> for settings::SettingValue {
    fn from(v: wit::SettingValue) -> Self {
        match v {
            wit::SettingValue::Boolean(b) => Self::Boolean(b),
            wit::SettingValue::Integer(i) => Self::Integer(i),
            wit::SettingValue::Number(n) => Self::Number(n),
            wit::SettingValue::Text(t) => Self::Text(t),
            wit::SettingValue::Names(n) => Self::Names(n),
        }
    }
}

impl From<settings::SettingValue> for wit::SettingValue {
    fn from(v: settings::SettingValue) -> Self {
        match v {
            settings::SettingValue::Boolean(b) => Self::Boolean(b),
            settings::SettingValue::Integer(i) => Self::Integer(i),
            settings::SettingValue::Number(n) => Self::Number(n),
            settings::SettingValue::Text(t) => Self::Text(t),
            settings::SettingValue::Names(n) => Self::Names(n),
        }
    }
}

impl From<wit::Setting> for settings::Setting {
    fn from(s: wit::Setting) -> Self {
        Self {
            name: s.name,
            kind: s.kind.into(),
            default: s.default.map(Into::into),
            description: s.description,
            description_zh: s.description_zh,
        }
    }
}

/// Checked values as the WIT `settings` list.
pub fn wit_values(values: &settings::Values) -> Vec<(String, wit::SettingValue)> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect()
}
