//! The generated WIT bindings, one module per world. Not public API: use the
//! re-exports in `format`, `source`, `method` and the crate root.
//!
//! The four worlds share `types` and `log`; `with` makes the later
//! generations reuse the first one's modules so there is one `Message`
//! type, not three.
//!
//! The error types are the SDK's own (same shape, so the generated code
//! lifts and lowers them), because the generated ones display as `Debug`.

pub mod format {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/format@0.2.0",
        pub_export_macro: true,
        default_bindings_module: "tuner_sdk::__bindings::format",
        runtime_path: "tuner_sdk::__bindings::rt",
        additional_derives: [PartialEq],
        with: {
            "tuner:plugin/types@0.2.0/plugin-error": crate::PluginError,
            "tuner:plugin/format-plugin@0.2.0/fatal-error": crate::format::FatalError,
        },
    });
}

pub mod source {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/source@0.2.0",
        pub_export_macro: true,
        default_bindings_module: "tuner_sdk::__bindings::source",
        runtime_path: "tuner_sdk::__bindings::rt",
        additional_derives: [PartialEq],
        with: {
            "tuner:plugin/types@0.2.0": crate::__bindings::format::tuner::plugin::types,
            "tuner:plugin/types@0.2.0/plugin-error": crate::PluginError,
            "tuner:plugin/log@0.2.0": crate::__bindings::format::tuner::plugin::log,
        },
    });
}

pub mod method {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/method@0.2.0",
        pub_export_macro: true,
        default_bindings_module: "tuner_sdk::__bindings::method",
        runtime_path: "tuner_sdk::__bindings::rt",
        with: {
            "tuner:plugin/types@0.2.0": crate::__bindings::format::tuner::plugin::types,
            "tuner:plugin/types@0.2.0/plugin-error": crate::PluginError,
            "tuner:plugin/log@0.2.0": crate::__bindings::format::tuner::plugin::log,
            "tuner:plugin/tensors@0.2.0/tensor-error": crate::method::TensorError,
        },
    });
}

pub mod reward {
    wit_bindgen::generate!({
        path: "../wit/0.2.0",
        world: "tuner:plugin/reward@0.2.0",
        pub_export_macro: true,
        default_bindings_module: "tuner_sdk::__bindings::reward",
        runtime_path: "tuner_sdk::__bindings::rt",
        with: {
            "tuner:plugin/types@0.2.0": crate::__bindings::format::tuner::plugin::types,
            "tuner:plugin/types@0.2.0/plugin-error": crate::PluginError,
            "tuner:plugin/log@0.2.0": crate::__bindings::format::tuner::plugin::log,
        },
    });
}

pub use wit_bindgen::rt;
