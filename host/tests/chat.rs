//! `tuner chat` in one-shot mode (`--prompt`, or a prompt piped on stdin) on
//! a tiny random model. The interactive mode needs a terminal (its line
//! editor reads keys), so it is not driven from here.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tuner(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tuner"));
    cmd.env("TUNER_HOME", home)
        .env_remove("TUNER_PLUGIN_DIR")
        .env_remove("MODEL_CACHE_DIR");
    cmd
}

/// A home with a tiny random Qwen3 (the fixture tokenizer and chat template).
fn tiny_model() -> (tempfile::TempDir, PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("model");
    let tokenizer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3");
    let out = tuner(home.path())
        .arg("init-model")
        .arg(&model)
        .arg("--tokenizer")
        .arg(tokenizer)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    (home, model)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn chat(home: &Path, model: &Path, args: &[&str]) -> Output {
    tuner(home)
        .arg("chat")
        .arg(model)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("valid JSON on stdout")
}

#[test]
fn one_prompt_as_json() {
    let (home, model) = tiny_model();
    let answer = json(&chat(
        home.path(),
        &model,
        &[
            "--prompt",
            "hi",
            "--json",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
        ],
    ));
    assert_eq!(answer["model"], model.to_str().unwrap());
    assert!(answer["content"].is_string(), "{answer}");
    assert!(
        ["stop", "length"].contains(&answer["finish_reason"].as_str().unwrap()),
        "{answer}"
    );
    let usage = &answer["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0, "{answer}");
    let completion = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=8).contains(&completion), "{answer}");
    assert!(
        answer["reasoning_content"].is_null() || answer["reasoning_content"].is_string(),
        "{answer}"
    );
}

#[test]
fn the_same_seed_gives_the_same_answer() {
    let (home, model) = tiny_model();
    let args = [
        "--prompt",
        "Tell me a story.",
        "--system",
        "You are terse.",
        "--seed",
        "7",
        "--temperature",
        "1",
        "--max-new-tokens",
        "12",
        "--json",
    ];
    let first = json(&chat(home.path(), &model, &args));
    let second = json(&chat(home.path(), &model, &args));
    assert_eq!(first, second);
    // A system prompt makes the prompt longer than the bare question.
    let bare = json(&chat(
        home.path(),
        &model,
        &[
            "--prompt",
            "Tell me a story.",
            "--max-new-tokens",
            "1",
            "--json",
        ],
    ));
    assert!(
        first["usage"]["prompt_tokens"].as_u64() > bare["usage"]["prompt_tokens"].as_u64(),
        "{first} {bare}"
    );
}

#[test]
fn a_prompt_piped_on_stdin_is_answered_once() {
    let (home, model) = tiny_model();
    let run = |args: &[&str], input: &str| {
        let mut child = tuner(home.path())
            .arg("chat")
            .arg(&model)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let flags = ["--temperature", "0", "--max-new-tokens", "4", "--no-think"];
    let answer = json(&run(&[&flags[..], &["--json"]].concat(), "What is 2+2?\n"));
    assert!(answer["usage"]["completion_tokens"].as_u64().unwrap() <= 4);
    // Plain output is the answer's text and a newline, nothing else.
    let plain = run(&flags, "What is 2+2?\n");
    assert!(plain.status.success(), "{}", stderr(&plain));
    let content = answer["content"].as_str().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&plain.stdout),
        format!("{content}\n")
    );
    // Nothing to answer.
    let empty = run(&["--json"], "  \n");
    assert!(!empty.status.success());
    assert!(stderr(&empty).contains("empty"), "{}", stderr(&empty));
}

#[test]
fn bad_settings_and_missing_files_are_errors() {
    let (home, model) = tiny_model();
    let out = chat(
        home.path(),
        &model,
        &["--prompt", "hi", "--temperature", "5"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("temperature"), "{}", stderr(&out));
    let missing = home.path().join("no-adapter");
    let out = chat(
        home.path(),
        &model,
        &["--prompt", "hi", "--adapter", missing.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("adapter"), "{}", stderr(&out));
    let out = chat(
        home.path(),
        &home.path().join("no-model"),
        &["--prompt", "hi"],
    );
    assert!(!out.status.success());
}

#[test]
fn help_lists_the_commands() {
    let home = tempfile::tempdir().unwrap();
    let out = tuner(home.path())
        .args(["chat", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for text in [
        "--adapter",
        "--prompt",
        "--json",
        "/reset",
        "/system",
        "/think",
        "/exit",
        "stdin",
    ] {
        assert!(help.contains(text), "{text} missing from:\n{help}");
    }
}
