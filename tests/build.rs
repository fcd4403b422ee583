//! Provides the test-only plugins in `tests/plugins/*` as components for the
//! suites and benchmarks: built from source with a wasm32 toolchain, else
//! the committed, hash-checked set in `tests/plugins/prebuilt/`.

use std::path::PathBuf;

use tuner_wasm_build::{Origin, PluginSet, components_for_build_script};

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = here.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("plugins");
    let set = PluginSet::tests(&root);
    let (_plugins, origin) = match components_for_build_script(&set, &out_dir) {
        Ok(found) => found,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(1);
        }
    };
    // The suites find the plugins by name in one folder.
    let dir = match origin {
        Origin::Source => out_dir,
        Origin::Prebuilt => set.prebuilt_dir.clone(),
    };
    println!("cargo:rustc-env=TUNER_TEST_PLUGINS={}", dir.display());
}
