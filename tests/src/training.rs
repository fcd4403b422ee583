//! What the training suites share: a tiny random Qwen3 written by
//! `tuner init-model`, and `tuner train --json` run offline with its JSON
//! lines read back.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::{TunerCommand, repo_root};

/// Panics with the process's stderr (and stdout) unless it succeeded.
pub fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    out
}

/// `tuner ARGS` offline, with `home` as `TUNER_HOME` and no plugin folder
/// from the environment.
pub fn offline_tuner(home: &Path, args: &[&str]) -> Output {
    TunerCommand::new(home)
        .args(args)
        .env("TUNER_OFFLINE", "1")
        .env_remove("TUNER_PLUGIN_DIR")
        .output()
}

/// Writes a tiny random Qwen3 with the repository's tokenizer fixture to
/// `home/model` and returns that path. `untied` gives it its own output
/// head: a tied random head mostly repeats the last token, which is no use
/// where the model must generate.
pub fn tiny_model(home: &Path, untied: bool) -> PathBuf {
    let model = home.join("model");
    let tokenizer = repo_root().join("tests/fixtures/qwen3");
    let mut args = vec![
        "init-model",
        model.to_str().unwrap(),
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ];
    if untied {
        args.push("--untied");
    }
    succeeded(offline_tuner(home, &args));
    model
}

/// Writes `config` to `home/NAME.json` and runs `tuner train` on it with
/// `--json`; the output, whether it succeeded or not.
pub fn train_json(home: &Path, name: &str, config: &Value) -> Output {
    let path = home.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    offline_tuner(home, &["train", path.to_str().unwrap(), "--json"])
}

/// The `step` events among the JSON lines a `--json` command printed.
pub fn step_events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "step")
        .collect()
}

/// A step event's metric `name`; panics naming it when absent.
pub fn step_metric(step: &Value, name: &str) -> f64 {
    step["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("step has no metric `{name}`: {step}"))
}
