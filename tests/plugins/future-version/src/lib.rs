//! Hostile: built against `tuner:plugin@0.3.0`, newer than the host knows.
wit_bindgen::generate!({ path: "wit", world: "format" });

struct Future;
impl exports::tuner::plugin::format_plugin::Guest for Future {
    fn info() -> String {
        "from the future".into()
    }
}
export!(Future);
