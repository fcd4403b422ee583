//! The CLI and the HTTP API are two faces of one service layer: asked the
//! same question about the same data, they give the same answer.
//!
//! (Before the service layer, each face computed token statistics its own
//! way and they drifted apart in `over_max_seq_len`.)

use std::path::{Path, PathBuf};

use serde_json::Value;
use tuner_tests::TestHome;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A model folder with the Qwen3 tokenizer and chat template.
fn tokenizer() -> String {
    repo().join("tests/fixtures/qwen3").display().to_string()
}

fn cli_json(home: &TestHome, args: &[&str]) -> Value {
    let out = home.tuner().args(args).output();
    assert!(
        out.status.success(),
        "tuner {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_and_api_agree_on_token_statistics_and_rendered_previews() {
    let home = TestHome::new();
    let file = repo().join("examples/data/demo.jsonl");
    let file = file.to_str().unwrap();
    let model = tokenizer();
    // The CLI first (blocking, before the server runs): store the file,
    // measure it with a limit small enough that some samples are over it
    // (in tokens), and render it.
    cli_json(&home, &["data", "add", file, "--name", "demo", "--json"]);
    let cli_stats = cli_json(
        &home,
        &[
            "data",
            "stats",
            "demo",
            "--tokenizer",
            &model,
            "--max-seq-len",
            "29",
            "--json",
        ],
    );
    let cli_inspect = cli_json(
        &home,
        &[
            "data",
            "inspect",
            file,
            "-n",
            "4",
            "--tokenizer",
            &model,
            "--json",
        ],
    );

    let server = home.server().start().await;
    let encoded: String = url_encode(&model);
    let (status, api_stats) = server
        .get_json(&format!(
            "/api/data/demo/stats?model={encoded}&max_seq_len=29"
        ))
        .await;
    assert_eq!(status, 200, "{api_stats}");
    assert_eq!(cli_stats, api_stats);
    let over = api_stats["tokens"]["over_max_seq_len"].as_u64().unwrap();
    assert!(
        over > 0 && over < 4,
        "the limit should cut some samples: {api_stats}"
    );

    let (status, preview) = server
        .get_json(&format!("/api/data/demo/preview?n=4&model={encoded}"))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["samples"], cli_inspect["first_samples"]);
    assert_eq!(preview["rendered"], cli_inspect["rendered"]);
    assert_eq!(preview["rendered"].as_array().unwrap().len(), 4);
}

#[test]
fn a_path_is_never_taken_for_a_hub_id_on_either_face() {
    let home = TestHome::new();
    // `./no-such-model` reads as a path: the answer is "no folder", not a
    // download attempt or a hub-id error.
    let out = home.tuner().args(["pull", "./no-such-model"]).output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no model folder at `./no-such-model`"),
        "{err}"
    );
    let out = home
        .tuner()
        .args([
            "data",
            "stats",
            repo().join("examples/data/demo.jsonl").to_str().unwrap(),
            "--tokenizer",
            "./no-such-model",
        ])
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no model folder at `./no-such-model`"),
        "{err}"
    );
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
