//! A training dataset spec may name a hub dataset (`org/name#N`, as ms-swift
//! users write it): it is fetched into the cache like a model, its data files
//! are loaded, and N samples are taken.

use tuner_tests::TunerCommand;
use tuner_tests::hub_emulator::HubEmulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_dataset_spec_is_fetched_once_and_sampled() {
    tokio::task::spawn_blocking(tuner_tests::tuner_bin)
        .await
        .unwrap();
    let emu = HubEmulator::start().await;
    let records: Vec<String> = (0..5)
        .map(|i| {
            format!("{{\"instruction\": \"问题 {i}\", \"input\": \"\", \"output\": \"答案 {i}\"}}")
        })
        .collect();
    emu.add_repo(
        "datasets",
        "AI-ModelScope/alpaca-mini",
        &[
            (
                "alpaca_mini.json",
                format!("[{}]", records.join(",")).into_bytes(),
            ),
            // Metadata beside the data must not be read as samples.
            ("dataset_info.json", b"{\"description\": \"tiny\"}".to_vec()),
            ("README.md", b"# alpaca mini".to_vec()),
        ],
    );
    let home = tempfile::tempdir().unwrap();
    let convert = |out: &std::path::Path| {
        let out = out.to_path_buf();
        let (home, url) = (home.path().to_path_buf(), emu.url());
        move || {
            TunerCommand::new(&home)
                .args(["data", "convert", "AI-ModelScope/alpaca-mini#3", "-o"])
                .arg(&out)
                .hub_emulator(&url)
                .env("MODELSCOPE_DOMAIN", &url)
                .env("USE_MODELSCOPE", "false")
                .stdin_null()
                .output()
        }
    };
    let first = home.path().join("first.jsonl");
    let out = tokio::task::spawn_blocking(convert(&first)).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&first)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for l in &lines {
        let answer = l["messages"][1]["content"].as_str().unwrap();
        assert!(answer.starts_with("答案 "), "{l}");
    }
    let served = emu.bytes_served();
    assert!(served > 0);

    // Second time: from the cache, same seed, same samples, nothing downloaded.
    let second = home.path().join("second.jsonl");
    let out = tokio::task::spawn_blocking(convert(&second)).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    assert_eq!(
        emu.bytes_served(),
        served,
        "the cached dataset was downloaded again"
    );
}
