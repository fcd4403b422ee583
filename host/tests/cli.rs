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

/// The promise of the method template: a new objective with its own setting,
/// from `tuner plugins new` to a training run, the setting given in the
/// config file and with `--set`, checked by the host against the plugin's
/// schema.
#[test]
fn a_method_plugin_from_the_template_trains_with_its_own_setting() {
    if let Err(e) = tuner_wasm_build::find_toolchain() {
        eprintln!("SKIPPED a_method_plugin_from_the_template_trains_with_its_own_setting: {e}");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let src = home.path().join("src");
    let run = |args: &[&str]| {
        let out = tuner(home.path(), args);
        assert!(
            out.status.success(),
            "tuner {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    run(&[
        "plugins",
        "new",
        "my-smooth",
        "--kind",
        "method",
        "--dir",
        src.to_str().unwrap(),
    ]);
    let shared_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../wasm-plugins");
    run(&[
        "plugins",
        "build",
        src.join("my-smooth").to_str().unwrap(),
        "--install",
        "--target-dir",
        shared_target.to_str().unwrap(),
    ]);

    // The schema is visible before any training.
    let info = stdout_json(&tuner(
        home.path(),
        &["plugins", "info", "my-smooth", "--json"],
    ));
    let smoothing = &info["settings"][0];
    assert_eq!(smoothing["name"], "smoothing", "{info}");
    assert_eq!(smoothing["default"], 0.1);
    assert_eq!(smoothing["kind"]["type"], "number");

    let model = home.path().join("model");
    run(&[
        "init-model",
        model.to_str().unwrap(),
        "--tokenizer",
        repo.join("tests/fixtures/qwen3").to_str().unwrap(),
    ]);
    let config = home.path().join("smooth.toml");
    std::fs::write(
        &config,
        format!(
            "model_name = {model:?}\ntraining_method = \"my-smooth\"\ndataset = {data:?}\n\
             max_steps = 2\nper_device_train_batch_size = 2\ngradient_accumulation_steps = 1\n\
             max_seq_length = 64\nlogging_steps = 1\nsave_steps = 0\ndevice = \"cpu\"\n\
             output_dir = {out:?}\nsmoothing = 0.2\n",
            model = model.display().to_string(),
            data = repo.join("examples/data/demo.jsonl").display().to_string(),
            out = home.path().join("out").display().to_string(),
        ),
    )
    .unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", config.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        tuner(home.path(), &args)
    };
    let end_of = |out: &Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "end")
            .expect("an end event")
    };
    let first_step = |out: &Output| -> f64 {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["event"] == "step")
            .and_then(|e| e["loss"].as_f64())
            .expect("a step with a loss")
    };

    let from_file = train(&[]);
    let end = end_of(&from_file);
    assert_eq!(end["job"]["status"], "completed", "{end}");
    assert_eq!(end["job"]["config"]["smoothing"], 0.2);

    let second_out = format!("output_dir={}", home.path().join("out-2").display());
    let from_set = train(&["--set", "smoothing=0.6", "--set", &second_out]);
    let end = end_of(&from_set);
    assert_eq!(end["job"]["status"], "completed", "{end}");
    assert_eq!(end["job"]["config"]["smoothing"], 0.6);
    // Same model, data and seed: only the setting differs, and the loss
    // the plugin computed with it does too (more smoothing puts more weight
    // on the near-uniform average over the vocabulary).
    let (a, b) = (first_step(&from_file), first_step(&from_set));
    assert!(
        (a - b).abs() > 1e-6,
        "smoothing 0.2 and 0.6 gave the same loss {a}"
    );

    // A near-miss names the plugin's key; an out-of-range value its rule.
    let out = train(&["--set", "smoothin=0.3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "unknown key \"smoothin\"; did you mean \"smoothing\" (a setting of method \"my-smooth\")?"
        ),
        "{err}"
    );
    let out = train(&["--set", "smoothing=1.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--set: smoothing (method \"my-smooth\"): must be below 1, found 1.5"),
        "{err}"
    );
}
