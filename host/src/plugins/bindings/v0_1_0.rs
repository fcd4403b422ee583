//! Bindings for `tuner:plugin@0.1.0`, kept so plugins built for it still
//! load: the 0.1.0 adapter.
//!
//! Nothing here implements behaviour. The host's import implementations are
//! written once, for 0.2.0; `imports::v0_1_0` makes the 0.1.0 import traits
//! delegate to them, and [`Convert`] turns the generated types of one
//! version into the other's (they differ only in the Rust path: the records
//! and variants 0.1.0 has are unchanged in 0.2.0). Resources (tensors,
//! batches, policies) are the same host types in both.
//!
//! What 0.1.0 lacks is made up for by the host: its methods declare no
//! settings, so [`legacy_method_settings`] stands in for them, and its
//! formats take free-form text settings.

use serde_json::{Map, Value};
use wasmtime::component::Resource;

use super::v0_2_0 as new;
use crate::plugins::imports::model::BatchHandle;
use crate::plugins::imports::tensors::TensorHandle;
use crate::plugins::settings::{Bounds, Setting, SettingKind, SettingValue, Values};

pub mod format {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "tuner:plugin/format",
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "tuner:plugin/source",
        with: {
            "tuner:plugin/types": crate::plugins::bindings::v0_1_0::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::v0_1_0::format::tuner::plugin::log,
        },
    });
}

pub mod method {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "tuner:plugin/method",
        imports: {
            "tuner:plugin/tensors": trappable,
            "tuner:plugin/model": trappable,
        },
        with: {
            "tuner:plugin/types": crate::plugins::bindings::v0_1_0::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::v0_1_0::format::tuner::plugin::log,
            "tuner:plugin/tensors.tensor": crate::plugins::imports::tensors::TensorHandle,
            "tuner:plugin/model.batch": crate::plugins::imports::model::BatchHandle,
            "tuner:plugin/model.policy": crate::plugins::imports::model::PolicyHandle,
        },
    });
}

// ---------------------------------------------------------------- settings

/// The settings of every 0.1.0 method plugin, as the 0.1.0 adapter shows
/// them: the LoRA keys the 0.1.0 host configuration knew, with its
/// defaults. 0.1.0 methods declare no settings of their own; they read
/// these keys from the flat JSON `configure` receives (and ignore those
/// they do not use, as `sft` does the LoRA keys).
pub fn legacy_method_settings() -> Vec<Setting> {
    let setting = |name: &str, kind, default, en: &str, zh: &str| Setting {
        name: name.into(),
        kind,
        default: Some(default),
        description: en.into(),
        description_zh: Some(zh.into()),
    };
    vec![
        setting(
            "lora_rank",
            SettingKind::Integer {
                bounds: Bounds {
                    min: Some(1.0),
                    max: Some(4096.0),
                    ..Bounds::default()
                },
            },
            SettingValue::Integer(8),
            "LoRA rank r.",
            "LoRA 的秩 r。",
        ),
        setting(
            "lora_alpha",
            SettingKind::Number {
                bounds: Bounds {
                    min: Some(0.0),
                    exclusive_min: true,
                    ..Bounds::default()
                },
            },
            SettingValue::Number(32.0),
            "LoRA scaling alpha (the update is scaled by alpha / r).",
            "LoRA 缩放系数 alpha（更新量乘以 alpha / r）。",
        ),
        setting(
            "lora_dropout",
            SettingKind::Number {
                bounds: Bounds {
                    min: Some(0.0),
                    max: Some(1.0),
                    exclusive_max: true,
                    ..Bounds::default()
                },
            },
            SettingValue::Number(0.05),
            "Dropout on the LoRA input.",
            "LoRA 输入的 dropout 比例。",
        ),
        setting(
            "target_modules",
            SettingKind::Names,
            SettingValue::Names(vec!["all-linear".into()]),
            "Modules that get adapters (q_proj, v_proj, ...), or all-linear.",
            "加适配器的模块（q_proj、v_proj 等），或 all-linear。",
        ),
        setting(
            "use_rslora",
            SettingKind::Boolean,
            SettingValue::Boolean(false),
            "Scale by alpha / sqrt(r) (rank-stabilised LoRA).",
            "按 alpha / sqrt(r) 缩放（rsLoRA）。",
        ),
        setting(
            "load_in_4bit",
            SettingKind::Boolean,
            SettingValue::Boolean(false),
            "Keep the frozen base in 4-bit NF4 (QLoRA).",
            "以 4 位 NF4 存放冻结的基座（QLoRA）。",
        ),
        setting(
            "load_in_8bit",
            SettingKind::Boolean,
            SettingValue::Boolean(false),
            "Keep the frozen base in 8-bit.",
            "以 8 位存放冻结的基座。",
        ),
    ]
}

/// The JSON object a 0.1.0 method's `configure` reads: the job's keys with
/// the checked settings laid over them as plain JSON values. A job that is
/// not a JSON object is passed on as it is, so the plugin names the problem.
pub fn legacy_config_json(values: &Values, job_json: &str) -> String {
    match serde_json::from_str::<Value>(job_json) {
        Ok(Value::Object(mut job)) => {
            for (key, value) in values {
                job.insert(key.clone(), value.to_json());
            }
            Value::Object(job).to_string()
        }
        _ if job_json.trim().is_empty() => {
            let map: Map<String, Value> = values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect();
            Value::Object(map).to_string()
        }
        _ => job_json.to_string(),
    }
}

/// A checked setting as the text a 0.1.0 format reads (`--set key=value`).
pub fn setting_text(value: &SettingValue) -> String {
    match value {
        SettingValue::Boolean(b) => b.to_string(),
        SettingValue::Integer(i) => i.to_string(),
        SettingValue::Number(n) => n.to_string(),
        SettingValue::Text(t) => t.clone(),
        SettingValue::Names(names) => names.join(","),
    }
}

// ---------------------------------------------------------------- types

/// Conversion between the generated types of the two versions (`From`
/// cannot be used for `Vec` and `Option` of them).
pub trait Convert<T> {
    fn convert(self) -> T;
}

impl<A: Convert<B>, B> Convert<Vec<B>> for Vec<A> {
    fn convert(self) -> Vec<B> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<A: Convert<B>, B> Convert<Option<B>> for Option<A> {
    fn convert(self) -> Option<B> {
        self.map(Convert::convert)
    }
}

impl<A: Convert<C>, B: Convert<D>, C, D> Convert<(C, D)> for (A, B) {
    fn convert(self) -> (C, D) {
        (self.0.convert(), self.1.convert())
    }
}

macro_rules! same {
    ($($t:ty),*) => {
        $(impl Convert<$t> for $t {
            fn convert(self) -> $t {
                self
            }
        })*
    };
}

same!(
    String,
    bool,
    u8,
    u16,
    u32,
    u64,
    f32,
    f64,
    Resource<TensorHandle>,
    Resource<BatchHandle>
);

/// A record whose fields have the same names in both versions.
macro_rules! record {
    ($from:ty => $to:ty { $($field:ident),* $(,)? }) => {
        impl Convert<$to> for $from {
            fn convert(self) -> $to {
                type To = $to;
                To { $($field: self.$field.convert()),* }
            }
        }
    };
}

/// An enum or variant whose cases have the same names in both versions.
macro_rules! cases {
    ($from:ty => $to:ty { $($case:ident $(($x:ident))?),* $(,)? }) => {
        impl Convert<$to> for $from {
            fn convert(self) -> $to {
                type To = $to;
                match self {
                    $(Self::$case $(($x))? => To::$case $(($x.convert()))?),*
                }
            }
        }
    };
}

mod old {
    pub use super::format::exports::tuner::plugin::format_plugin as format;
    pub use super::format::tuner::plugin::log;
    pub use super::format::tuner::plugin::types;
    pub use super::method::exports::tuner::plugin::method_plugin as method;
    pub use super::method::tuner::plugin::{model, tensors};
    pub use super::source::exports::tuner::plugin::source_plugin as source;
    pub use super::source::tuner::plugin::http;
}

mod cur {
    pub use super::new::format::exports::tuner::plugin::format_plugin as format;
    pub use super::new::format::tuner::plugin::log;
    pub use super::new::format::tuner::plugin::types;
    pub use super::new::method::exports::tuner::plugin::method_plugin as method;
    pub use super::new::method::tuner::plugin::{model, tensors};
    pub use super::new::source::exports::tuner::plugin::source_plugin as source;
    pub use super::new::source::tuner::plugin::http;
}

// What a 0.1.0 plugin returns, as 0.2.0 types.
cases!(old::types::PluginKind => cur::types::PluginKind { Format, Source, Method });
record!(old::types::PluginInfo => cur::types::PluginInfo { name, version, kind, description, hosts });
record!(old::types::PluginError => cur::types::PluginError { field, message });
record!(old::types::Message => cur::types::Message { role, content, loss_weight });
record!(old::types::ChatSample => cur::types::ChatSample { messages, tools });
record!(old::types::PreferenceSample => cur::types::PreferenceSample { prompt, chosen, rejected });
record!(old::types::PromptSample => cur::types::PromptSample { prompt, answer });
cases!(old::types::Sample => cur::types::Sample { Text(x), Chat(x), Preference(x), Prompt(x) });
record!(old::format::Location => cur::format::Location { line, index });
// 0.1.0 plugins do not say which fields they left unread.
impl Convert<cur::format::ParsedSample> for old::format::ParsedSample {
    fn convert(self) -> cur::format::ParsedSample {
        cur::format::ParsedSample {
            location: self.location.convert(),
            sample: self.sample.convert(),
            layout: self.layout,
            ignored_fields: Vec::new(),
        }
    }
}
record!(old::format::RejectedRecord => cur::format::RejectedRecord { location, field, message });
cases!(old::format::RecordOutcome => cur::format::RecordOutcome { Sample(x), Rejected(x) });
record!(old::format::FatalError => cur::format::FatalError { location, message });
record!(old::source::RemoteFile => cur::source::RemoteFile { path, size, sha256, url, headers });
record!(old::source::Listing => cur::source::Listing { repo, revision, commit, files });
cases!(old::source::SourceError => cur::source::SourceError {
    NotFound(x),
    Unauthorized(x),
    Unavailable(x),
    InvalidResponse(x),
});
cases!(old::method::Trainable => cur::method::Trainable { Full, Adapters });
cases!(old::method::Quantization => cur::method::Quantization { None, Nf4, Int8 });
cases!(old::model::BatchKind => cur::model::BatchKind { Chat, Preference, Prompt, Text });
record!(old::method::AdapterSpec => cur::method::AdapterSpec {
    rank,
    alpha,
    dropout,
    target_modules,
    rslora,
});
record!(old::method::Plan => cur::method::Plan {
    trains,
    adapter,
    base_quantization,
    needs_reference,
    needs_generation,
    accepts,
});

// What the host passes to a 0.1.0 plugin's exports.
cases!(cur::source::RepoKind => old::source::RepoKind { Model, Dataset });
record!(cur::source::ResolveRequest => old::source::ResolveRequest {
    repo,
    kind,
    revision,
    endpoint,
    token,
});

// The host's imports: 0.1.0 arguments in, 0.2.0 answers out.
cases!(old::log::Level => cur::log::Level { Trace, Debug, Info, Warn, Error });
cases!(old::http::Method => cur::http::Method { Get, Head, Post, Put, Delete });
record!(old::http::Request => cur::http::Request { method, url, headers, body, timeout_ms });
record!(cur::http::Response => old::http::Response { status, headers, body, final_url });
cases!(cur::http::HttpError => old::http::HttpError {
    Denied(x),
    InvalidUrl(x),
    Timeout(x),
    TooLarge(x),
    Transport(x),
});
cases!(old::tensors::Dtype => cur::tensors::Dtype { F32, Bf16, F16, I64, U32 });
cases!(cur::tensors::Dtype => old::tensors::Dtype { F32, Bf16, F16, I64, U32 });
cases!(cur::tensors::TensorError => old::tensors::TensorError {
    NotImplemented(x),
    Shape(x),
    Dtype(x),
    Invalid(x),
    Limit(x),
    Device(x),
});
// 0.1.0 has no `unpaired` kind. The host never hands such a batch to a
// 0.1.0 plugin (a batch's kind is always one the plan accepts, and a 0.1.0
// plan cannot name `unpaired`), so that case is unreachable; it answers
// `preference`, the kind with the same two-rows-per-sample layout, rather
// than trapping inside a host call.
impl Convert<old::model::BatchKind> for cur::model::BatchKind {
    fn convert(self) -> old::model::BatchKind {
        use cur::model::BatchKind as Cur;
        use old::model::BatchKind as Old;
        match self {
            Cur::Chat => Old::Chat,
            Cur::Preference | Cur::Unpaired => Old::Preference,
            Cur::Prompt => Old::Prompt,
            Cur::Text => Old::Text,
        }
    }
}
record!(old::model::Sampling => cur::model::Sampling {
    max_new_tokens,
    temperature,
    top_p,
    top_k,
    samples_per_prompt,
});
record!(cur::model::Completion => old::model::Completion { prompt_row, text, tokens, finished });
record!(cur::model::Rollout => old::model::Rollout { completions, batch });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::settings;

    #[test]
    fn the_legacy_method_schema_is_valid_and_has_the_0_1_0_defaults() {
        let schema = legacy_method_settings();
        settings::check_schema(&schema).unwrap();
        let values = settings::check(&schema, &Map::new()).unwrap();
        let json: Map<String, Value> = values
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        assert_eq!(
            Value::Object(json),
            serde_json::json!({
                "lora_rank": 8, "lora_alpha": 32.0, "lora_dropout": 0.05,
                "target_modules": ["all-linear"], "use_rslora": false,
                "load_in_4bit": false, "load_in_8bit": false,
            })
        );
    }

    #[test]
    fn the_legacy_config_lays_the_values_over_the_job() {
        let values = vec![
            ("lora_rank".to_string(), SettingValue::Integer(16)),
            (
                "target_modules".to_string(),
                SettingValue::Names(vec!["q_proj".into()]),
            ),
        ];
        let json = legacy_config_json(&values, r#"{"learning_rate": 0.001, "lora_rank": 4}"#);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"learning_rate": 0.001, "lora_rank": 16, "target_modules": ["q_proj"]})
        );
        assert_eq!(legacy_config_json(&values, "[1]"), "[1]");
        assert_eq!(
            setting_text(&SettingValue::Names(vec!["a".into(), "b".into()])),
            "a,b"
        );
        assert_eq!(setting_text(&SettingValue::Number(0.5)), "0.5");
    }

    #[test]
    fn samples_convert_field_by_field() {
        let old = old::format::RecordOutcome::Sample(old::format::ParsedSample {
            location: old::format::Location { line: 3, index: 2 },
            sample: old::types::Sample::Chat(old::types::ChatSample {
                messages: vec![old::types::Message {
                    role: "user".into(),
                    content: "hi".into(),
                    loss_weight: Some(0.5),
                }],
                tools: Some("[]".into()),
            }),
            layout: "sharegpt".into(),
        });
        let new: cur::format::RecordOutcome = old.convert();
        let cur::format::RecordOutcome::Sample(s) = new else {
            panic!("{new:?}")
        };
        assert_eq!(
            (s.location.line, s.location.index, s.layout.as_str()),
            (3, 2, "sharegpt")
        );
        let cur::types::Sample::Chat(chat) = s.sample else {
            panic!()
        };
        assert_eq!(chat.messages[0].content, "hi");
        assert_eq!(chat.messages[0].loss_weight, Some(0.5));
        assert_eq!(chat.tools.as_deref(), Some("[]"));
    }
}
