//! `tuner data` as a process: the `--json` contract and exit statuses.

use std::path::Path;
use std::process::Output;

use tuner_tests::TunerCommand;

/// `tuner` with `home` as `TUNER_HOME` and working folder.
fn tuner(home: &Path, args: &[&str]) -> Output {
    TunerCommand::new(home)
        .args(args)
        .current_dir(home)
        .output()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn data_commands_keep_their_json_contract_and_exit_statuses() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"instruction\": \"问\", \"output\": \"答\"}\n{\"instruction\": \"x\", \"output\": 1}\n",
    )
    .unwrap();

    let out = tuner(dir, &["data", "inspect", "train.jsonl", "--json"]);
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(
        (v["format"].as_str(), v["layout"].as_str()),
        (Some("jsonl"), Some("alpaca"))
    );
    assert_eq!(v["errors"][0]["line"], 2);
    assert_eq!(v["first_samples"][0]["kind"], "chat");
    assert_eq!(v["encoding"], "utf-8");

    let out = tuner(dir, &["data", "validate", "train.jsonl", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a rejected record fails validate"
    );
    let validated = json(&out);
    assert_eq!(validated["rejected"], 1);
    // One spelling of the encoding: validate, inspect, the stored record.
    assert_eq!(validated["encoding"], "utf-8", "{validated}");

    let out = tuner(
        dir,
        &["data", "add", "train.jsonl", "--name", "t", "--strict"],
    );
    assert_eq!(out.status.code(), Some(1));
    let out = tuner(dir, &["data", "list", "--json"]);
    assert_eq!(
        json(&out),
        serde_json::json!([]),
        "strict failure stored nothing"
    );

    let out = tuner(
        dir,
        &["data", "add", "train.jsonl", "--name", "t", "--json"],
    );
    assert!(out.status.success());
    assert_eq!(json(&out)["dataset"]["samples"], 1);
    let out = tuner(dir, &["data", "list", "--json"]);
    assert_eq!(json(&out)[0]["encoding"], validated["encoding"]);
    let out = tuner(
        dir,
        &["data", "convert", "t#3", "-o", "out.jsonl", "--json"],
    );
    assert_eq!(json(&out)["samples"], 3);
    let text = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text.starts_with("{\"messages\":"), "{text}");
    let out = tuner(dir, &["data", "stats", "t", "--json"]);
    assert_eq!(json(&out)["kinds"]["chat"], 1);
    let out = tuner(dir, &["data", "rm", "t", "--json"]);
    assert_eq!(json(&out)["name"], "t");
    let out = tuner(dir, &["data", "rm", "../t"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid dataset name"));
}

/// A format's `--set` keys are checked against the plugin's declared
/// settings, and the plugin's own `check-options` runs, before any record is
/// parsed: the same for a bundled plugin and a user's plugin in the folder.
#[test]
fn format_settings_are_checked_before_parsing_for_bundled_and_user_plugins() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    std::fs::write(dir.join("qa.csv"), "instruction,output\n问,答\n").unwrap();
    // A user plugin: the csv component installed under another name.
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::copy(
        repo.join("plugins/prebuilt/csv.wasm"),
        plugins.join("my-csv.wasm"),
    )
    .unwrap();

    for plugin in ["csv", "my-csv"] {
        let run = |set: &str| {
            tuner(
                dir,
                &[
                    "data", "validate", "qa.csv", "--format", plugin, "--set", set,
                ],
            )
        };
        let out = run("nonsense=1");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{plugin}: {err}");
        assert!(
            err.contains(&format!(
                "format plugin `{plugin}` has no setting `nonsense`"
            )),
            "{plugin}: {err}"
        );
        let out = run("delimter=;");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("delimiter"),
            "{plugin}: a near-miss names the key: {err}"
        );
        // The plugin's own check, before parsing.
        let out = run("delimiter=;;");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("`delimiter`: expected one ASCII character"),
            "{plugin}: {err}"
        );
        let out = run("delimiter=,");
        assert!(
            out.status.success(),
            "{plugin}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `data stats --tokenizer` and `data inspect --tokenizer` render as
/// training does, with its defaults (`enable_thinking = false`: the empty
/// think block before a final answer is prompt, not trained) and with the
/// same settings as flags (`--enable-thinking`, `--system`).
#[test]
fn data_commands_render_what_training_trains() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    std::fs::write(
        dir.join("chat.jsonl"),
        "{\"messages\": [{\"role\": \"user\", \"content\": \"你好\"}, {\"role\": \"assistant\", \"content\": \"你好！\"}]}\n",
    )
    .unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3");
    let fixture = fixture.to_str().unwrap();
    let trained = |extra: &[&str]| -> u64 {
        let mut args = vec![
            "data",
            "stats",
            "chat.jsonl",
            "--tokenizer",
            fixture,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = tuner(dir, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json(&out)["tokens"]["response_tokens"]["sum"]
            .as_u64()
            .unwrap()
    };
    // `你好！<|im_end|>` trains; with thinking on the empty block
    // (`<think>`, `\n\n`, `</think>`, `\n\n`) trains too.
    let off = trained(&[]);
    assert_eq!(trained(&["--enable-thinking"]), off + 4);

    let shown = |extra: &[&str]| -> String {
        let mut args = vec!["data", "inspect", "chat.jsonl", "--tokenizer", fixture];
        args.extend_from_slice(extra);
        let out = tuner(dir, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = shown(&[]);
    assert!(
        text.contains("<|im_start|>assistant\n<think>\n\n</think>\n\n[[你好！<|im_end|>]]"),
        "{text}"
    );
    let text = shown(&["--enable-thinking", "--system", "Be kind."]);
    assert!(
        text.contains("<|im_start|>system\nBe kind.<|im_end|>")
            && text.contains("<|im_start|>assistant\n[[<think>\n\n</think>\n\n你好！<|im_end|>]]"),
        "{text}"
    );
}

/// A field no layout reads is counted and reported, in every format that
/// reads records (JSON Lines, JSON, CSV), never dropped without a word.
#[test]
fn fields_no_sample_comes_from_are_reported() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    // A numeric `label` is no KTO label: these are Alpaca records, and
    // both `id` and `label` are unread.
    let records: Vec<String> = (0..3)
        .map(|i| {
            format!("{{\"id\": {i}, \"instruction\": \"问{i}\", \"output\": \"答\", \"label\": 3}}")
        })
        .collect();
    std::fs::write(dir.join("a.jsonl"), records.join("\n")).unwrap();
    std::fs::write(dir.join("a.json"), format!("[{}]", records.join(","))).unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "id,instruction,output,source\n1,q,a,web\n2,q2,a2,\n",
    )
    .unwrap();
    for (file, expected) in [
        ("a.jsonl", serde_json::json!({"id": 3, "label": 3})),
        ("a.json", serde_json::json!({"id": 3, "label": 3})),
        // An empty cell holds nothing: only the filled `source` is counted.
        ("a.csv", serde_json::json!({"id": 2, "source": 1})),
    ] {
        let out = tuner(dir, &["data", "validate", file, "--json"]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json(&out)["ignored_fields"], expected, "{file}");
    }
    let out = tuner(dir, &["data", "inspect", "a.jsonl"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ignored:  field `label` in 3 records"),
        "{text}"
    );
    // A file whose every field is read reports nothing.
    std::fs::write(
        dir.join("b.jsonl"),
        "{\"instruction\": \"q\", \"output\": \"a\"}\n",
    )
    .unwrap();
    let out = tuner(dir, &["data", "validate", "b.jsonl", "--json"]);
    assert_eq!(json(&out)["ignored_fields"], serde_json::json!({}));
}

/// Parquet files written by pyarrow (`tests/fixtures/parquet/make_parquet.py`)
/// load through the sandboxed `parquet` plugin in every codec: the
/// `list<struct<role, content>>` column as OpenAI messages, two row groups,
/// a nullable column reported as ignored where it holds something, and the
/// row whose `messages` is null rejected by its row number.
#[test]
fn parquet_files_load_in_every_codec() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path();
    let fixtures = tuner_tests::repo_root().join("tests/fixtures/parquet");
    let mut converted = Vec::new();
    for codec in ["none", "snappy", "gzip", "zstd"] {
        let file = fixtures.join(format!("chat-{codec}.parquet"));
        let file = file.to_str().unwrap();
        let out = tuner(dir, &["data", "validate", file, "--json"]);
        assert!(!out.status.success(), "one row is rejected");
        let r = json(&out);
        assert_eq!(
            (&r["format"], &r["encoding"], &r["samples"], &r["rejected"]),
            (&"parquet".into(), &"binary".into(), &5.into(), &1.into()),
            "{codec}: {r}"
        );
        assert_eq!(r["layouts"], serde_json::json!({"openai": 5}), "{codec}");
        assert_eq!(r["errors"][0]["line"], 6, "{codec}: {r}");
        assert_eq!(
            r["ignored_fields"],
            serde_json::json!({"id": 5, "source": 3}),
            "{codec}"
        );
        let target = dir.join(format!("{codec}.jsonl"));
        let out = tuner(
            dir,
            &["data", "convert", file, "-o", target.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        converted.push(std::fs::read_to_string(target).unwrap());
    }
    assert!(converted.iter().all(|c| *c == converted[0]));
    let first: serde_json::Value =
        serde_json::from_str(converted[0].lines().next().unwrap()).unwrap();
    assert_eq!(
        first["messages"],
        serde_json::json!([
            {"role": "user", "content": "你好"},
            {"role": "assistant", "content": "Hello!"}
        ])
    );

    let alpaca = fixtures.join("alpaca.parquet");
    let out = tuner(
        dir,
        &["data", "validate", alpaca.to_str().unwrap(), "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["layouts"], serde_json::json!({"alpaca": 2}), "{r}");
    assert_eq!(r["ignored_fields"], serde_json::json!({}), "{r}");
}
