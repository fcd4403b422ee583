//! A training job whose model is a hub id not in the cache pulls it through
//! the app's hub, so the pull is recorded like one made by `tuner pull`
//! (source, revision) and the next job finds it in the cache.

use std::path::{Path, PathBuf};

use tuner_tests::hub_emulator::HubEmulator;
use tuner_tests::{TestHome, TunerCommand};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_pulled_by_a_training_job_is_recorded_in_the_cache() {
    tokio::task::spawn_blocking(tuner_tests::tuner_bin)
        .await
        .unwrap();
    let emu = HubEmulator::start().await;
    let home = TestHome::new();
    let dir = home.dir.path().to_path_buf();
    let url = emu.url();
    let tuner = {
        let (dir, url) = (dir.clone(), url.clone());
        move |args: Vec<String>| {
            TunerCommand::new(&dir)
                .args(&args)
                .hub_emulator(&url)
                .env("MODELSCOPE_DOMAIN", &url)
                .env("USE_MODELSCOPE", "false")
                .stdin_null()
                .output()
        }
    };
    let run = |args: Vec<String>| {
        let tuner = tuner.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || tuner(args.clone()))
                .await
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out
        }
    };
    // A tiny model, served by the emulator as `org/tiny-qwen`.
    let local = dir.join("tiny");
    run(vec![
        "init-model".into(),
        local.display().to_string(),
        "--tokenizer".into(),
        repo().join("tests/fixtures/qwen3").display().to_string(),
    ])
    .await;
    let files = files_of(&local);
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    emu.add_repo("models", "org/tiny-qwen", &refs);

    let config = dir.join("train.toml");
    std::fs::write(
        &config,
        format!(
            "model_name = \"org/tiny-qwen\"\ntraining_method = \"lora\"\ndataset = {data:?}\n\
             max_steps = 1\nper_device_train_batch_size = 2\ngradient_accumulation_steps = 1\n\
             max_seq_length = 64\nsave_steps = 0\ndevice = \"cpu\"\noutput_dir = {out:?}\n",
            data = repo()
                .join("examples/data/demo.jsonl")
                .display()
                .to_string(),
            out = dir.join("out").display().to_string(),
        ),
    )
    .unwrap();
    run(vec!["train".into(), config.display().to_string()]).await;
    let served = emu.requests().len();
    assert!(served > 0, "the job downloaded nothing");

    // Recorded like a `tuner pull`: the source that served it, not "unknown".
    let out = run(vec!["cache".into(), "list".into(), "--json".into()]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let repos = list["repos"].as_array().unwrap_or_else(|| panic!("{list}"));
    let entry = repos
        .iter()
        .find(|r| r["name"] == "org/tiny-qwen")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(entry["source"], "huggingface", "{entry}");

    // A second job finds it in the cache: nothing more is downloaded.
    run(vec!["train".into(), config.display().to_string()]).await;
    assert_eq!(emu.requests().len(), served);
}
