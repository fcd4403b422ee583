//! Host-side bindings for the three plugin worlds of `tuner:plugin@0.1.0`.
//!
//! The worlds share `types` and `log`; `with` makes `source` and `method`
//! reuse the `format` generation, so one `Host` implementation serves all.
//! The tensor and model resources map to host types that live in the
//! store's resource table.

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
            "tuner:plugin/types": crate::plugins::bindings::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::format::tuner::plugin::log,
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
            "tuner:plugin/types": crate::plugins::bindings::format::tuner::plugin::types,
            "tuner:plugin/log": crate::plugins::bindings::format::tuner::plugin::log,
            "tuner:plugin/tensors.tensor": crate::plugins::imports::tensors::TensorHandle,
            "tuner:plugin/model.batch": crate::plugins::imports::model::BatchHandle,
            "tuner:plugin/model.policy": crate::plugins::imports::model::PolicyHandle,
        },
    });
}

pub use format::tuner::plugin::types::{PluginInfo, PluginKind};
