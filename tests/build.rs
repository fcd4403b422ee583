//! Builds the test-only plugins in `tests/plugins/*` into components under
//! `$OUT_DIR/plugins`, for the suites and benchmarks.

use std::path::PathBuf;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = here.parent().unwrap().to_path_buf();
    let plugins = here.join("plugins");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("plugins");
    let watch = [root.join("sdk"), root.join("wit")];
    if let Err(err) = tuner_wasm_build::build_for_build_script(
        &plugins.join("Cargo.toml"),
        std::slice::from_ref(&plugins),
        &watch,
        &out_dir,
    ) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
    println!("cargo:rustc-env=TUNER_TEST_PLUGINS={}", out_dir.display());
}
