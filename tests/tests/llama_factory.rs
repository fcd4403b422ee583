//! A LLaMA-Factory data folder used as it is: `DIR:NAME` specs read
//! `DIR/dataset_info.json` (`tests/fixtures/llama-factory`, one entry per
//! shape LLaMA-Factory registers: Alpaca with renamed columns and
//! `num_samples`, ShareGPT with tools, OpenAI-style tags, ranking pairs, KTO
//! labels, v1 records, pre-training text, a folder of files), in `tuner
//! data` and in a training config; what tuner cannot honour yet is refused
//! by name.

use std::path::Path;

use serde_json::{Value, json};
use tuner_tests::repo_root;
use tuner_tests::training::{offline_tuner, step_events, succeeded, tiny_model, train_json};

fn registry() -> String {
    repo_root()
        .join("tests/fixtures/llama-factory")
        .display()
        .to_string()
}

/// `tuner data stats DIR:NAME --json`.
fn stats(home: &Path, name: &str) -> Value {
    let spec = format!("{}:{name}", registry());
    let out = succeeded(offline_tuner(home, &["data", "stats", &spec, "--json"]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tuner data convert DIR:NAME` as OpenAI-shaped JSON lines.
fn converted(home: &Path, name: &str) -> Vec<Value> {
    let spec = format!("{}:{name}", registry());
    let out = home.join(format!("{name}.jsonl"));
    succeeded(offline_tuner(
        home,
        &["data", "convert", &spec, "-o", out.to_str().unwrap()],
    ));
    std::fs::read_to_string(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_registered_shape_loads_as_llama_factory_reads_it() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    for (name, kind, count) in [
        ("alpaca_demo", "chat", 3),
        ("sharegpt_demo", "chat", 2),
        ("openai_tags_demo", "chat", 1),
        ("dpo_demo", "preference", 2),
        ("kto_demo", "unpaired", 3),
        ("v1_demo", "chat", 2),
        // A .txt file: one record per line, as datasets' text loader reads it.
        ("wiki_demo", "text", 2),
        ("folder_demo", "chat", 2),
        // num_samples = 5 from a file of 2: repeated, as LLaMA-Factory does.
        ("renamed_alpaca", "chat", 5),
    ] {
        let s = stats(home, name);
        assert_eq!(s["kinds"][kind], count, "{name}: {s}");
        assert_eq!(s["samples"], count, "{name}: {s}");
    }
    // `#N` beats num_samples.
    let spec = format!("{}:renamed_alpaca#1", registry());
    let out = succeeded(offline_tuner(home, &["data", "stats", &spec, "--json"]));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["samples"], 1);

    // Renamed Alpaca columns land where they belong.
    let renamed = converted(home, "renamed_alpaca");
    let first = renamed
        .iter()
        .find(|r| r["messages"][0]["content"] == "You are terse.")
        .expect("the persona column is the system prompt");
    assert_eq!(
        first["messages"][1]["content"],
        "Summarise.\nThe cat sat on the mat."
    );
    assert_eq!(first["messages"][2]["content"], "A cat sat.");
    // KTO labels survive; v1 reasoning and tool-call parts are rendered
    // as Qwen3 writes them.
    let kto = converted(home, "kto_demo");
    assert_eq!(
        kto.iter().map(|r| r["label"].clone()).collect::<Vec<_>>(),
        [json!(true), json!(false), json!(true)]
    );
    let v1 = converted(home, "v1_demo");
    assert_eq!(
        v1[0]["messages"][1]["content"],
        "<think>\nTwo and two make four.\n</think>\n\n4"
    );
    assert_eq!(
        v1[1]["messages"][2]["content"],
        "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"北京\"}}\n</tool_call>"
    );
}

#[test]
fn list_registry_shows_each_entry_and_its_problems() {
    let home = tempfile::tempdir().unwrap();
    let out = succeeded(offline_tuner(
        home.path(),
        &["data", "list-registry", &registry(), "--json"],
    ));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by_name = |n: &str| {
        entries
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not listed"))
            .clone()
    };
    assert_eq!(entries.len(), 12);
    assert_eq!(by_name("dpo_demo")["layout"], "preference");
    assert_eq!(by_name("kto_demo")["layout"], "unpaired");
    assert_eq!(by_name("wiki_demo")["layout"], "text");
    // ModelScope is the default first source, so its id is preferred.
    assert_eq!(by_name("hub_demo")["source"]["hub"], "modelscope");
    let mllm = by_name("mllm_demo")["error"].as_str().unwrap().to_string();
    assert!(mllm.contains("images are not supported yet"), "{mllm}");
    let escape = by_name("escape_demo")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(escape.contains("escape_demo.file_name"), "{escape}");

    // A bad name gets a near-miss hint; a folder without a registry says so.
    let spec = format!("{}:alpaca_dem", registry());
    let out = offline_tuner(home.path(), &["data", "stats", &spec]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean `alpaca_demo`?"), "{err}");
    let spec = format!("{}:alpaca_demo", home.path().display());
    let out = offline_tuner(home.path(), &["data", "stats", &spec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no dataset_info.json"), "{err}");
}

/// A training config names a registry entry like any dataset.
#[test]
fn a_training_config_trains_on_a_registry_entry() {
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model(home.path(), false);
    let config = json!({
        "model_name": model,
        "training_method": "lora",
        "dataset": [format!("{}:alpaca_demo", registry())],
        "max_steps": 2,
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "save_steps": 0,
        "device": "cpu",
        "output_dir": home.path().join("out"),
    });
    let out = succeeded(train_json(home.path(), "lf", &config));
    assert_eq!(step_events(&out).len(), 2);
}

/// `tuner data validate/inspect DIR:NAME` read the entry's file with its
/// layout and columns; a folder entry is pointed to `data stats`.
#[test]
fn validate_and_inspect_read_a_registry_entry() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let spec = format!("{}:kto_demo", registry());
    let out = succeeded(offline_tuner(home, &["data", "validate", &spec, "--json"]));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kinds"]["unpaired"], 3, "{report}");
    assert_eq!(report["ignored_fields"], json!({}), "{report}");
    assert!(report["file"].as_str().unwrap().ends_with("kto_demo.json"));
    let out = succeeded(offline_tuner(home, &["data", "inspect", &spec, "-n", "1"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unpaired"));

    let folder = format!("{}:folder_demo", registry());
    let out = offline_tuner(home, &["data", "validate", &folder]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tuner data stats"), "{err}");
}
