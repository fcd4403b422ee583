//! The `tuner` command line, run as a user would.

use std::path::Path;
use std::process::{Command, Output};

fn tuner(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tuner"))
        .args(args)
        .env("TUNER_HOME", home)
        .env_remove("TUNER_PLUGIN_DIR")
        .env_remove("MODEL_CACHE_DIR")
        .output()
        .expect("running tuner")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

#[test]
fn plugins_list_json_shows_the_bundled_plugins() {
    let home = tempfile::tempdir().unwrap();
    let list = stdout_json(&tuner(home.path(), &["plugins", "list", "--json"]));
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    // Sorted, and every kind of bundled plugin is there (the set grows as
    // plugins are added, so this does not pin it exactly).
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    for expected in ["huggingface", "jsonl", "mirror", "modelscope", "sft"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(list["failures"], serde_json::json!([]));
    assert_eq!(
        list["plugin_dir"],
        home.path().join("plugins").display().to_string()
    );
}

#[test]
fn plugins_info_names_what_exists_when_asked_for_what_does_not() {
    let home = tempfile::tempdir().unwrap();
    let info = stdout_json(&tuner(home.path(), &["plugins", "info", "sft", "--json"]));
    assert_eq!(info["kind"], "method");
    let out = tuner(home.path(), &["plugins", "info", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim()
            .starts_with("error: no plugin named `nope` (available: ")
            && err.contains("huggingface, ")
            && err.contains("modelscope")
            && err.contains("sft"),
        "{err}"
    );
}

#[test]
fn plugins_check_rejects_a_non_component_with_exit_code_1() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("bad.wasm");
    std::fs::write(&file, "not wasm").unwrap();
    let out = tuner(
        home.path(),
        &["plugins", "check", file.to_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(1));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["ok"], false);
    assert_eq!(result["error"], "not a WebAssembly file");
}

#[test]
fn a_plugin_from_the_template_builds_checks_and_installs() {
    // Building a plugin crate needs a wasm32 compiler; CI installs one, a
    // user's machine may not have it (tuner itself then uses the prebuilt
    // bundled plugins).
    if let Err(e) = tuner_wasm_build::find_toolchain() {
        eprintln!("SKIPPED a_plugin_from_the_template_builds_checks_and_installs: {e}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("src");
    let out = tuner(
        home.path(),
        &[
            "plugins",
            "new",
            "my-lines",
            "--kind",
            "format",
            "--dir",
            src.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let krate = src.join("my-lines");

    // Share the wasm target folder with the bundled plugins' build, so the
    // wasm32 standard library is not compiled again.
    let shared_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../wasm-plugins");
    let out = tuner(
        home.path(),
        &[
            "plugins",
            "build",
            krate.to_str().unwrap(),
            "--install",
            "--target-dir",
            shared_target.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = krate.join("target/my-lines.wasm");

    let check = stdout_json(&tuner(
        home.path(),
        &["plugins", "check", wasm.to_str().unwrap(), "--json"],
    ));
    assert_eq!(check["ok"], true);
    assert_eq!(check["plugin"]["kind"], "format");
    assert_eq!(check["plugin"]["metadata_from"], "manifest");
    assert_eq!(
        check["plugin"]["description"],
        "One text sample per non-empty line"
    );

    let list = stdout_json(&tuner(home.path(), &["plugins", "list", "--json"]));
    let mine = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "my-lines")
        .expect("installed plugin is listed");
    assert_eq!(mine["origin"], "directory");
}
