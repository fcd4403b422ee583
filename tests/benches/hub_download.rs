//! Download benchmark on loopback against the hub emulator:
//!
//! 1. one large file (default 1 GiB; `TUNER_BENCH_MIB` changes it): tuner's
//!    pull (8 connections, 16 MiB chunks, sha256 verified before the file
//!    becomes visible) against `curl -o` of the same URL (one stream, no
//!    verification);
//! 2. the emulator capping each connection at 20 MB/s, 4 files of 40 MiB:
//!    tuner with 8 connections against tuner with 1, the speed-up from
//!    parallelism.
//!
//! `cargo bench -p tuner-tests --bench hub_download` prints a table. Compare
//! ratios from one run, not absolute figures across machines.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tuner::hub::progress::Silent;
use tuner::hub::{Hub, HubConfig, PullRequest, RepoKind, TransferOptions};
use tuner::plugins::PluginLimits;
use tuner_tests::TestHome;
use tuner_tests::hub_emulator::{HubEmulator, pseudo_random};

const MIB: usize = 1 << 20;

fn hub(home: &TestHome, emu: &HubEmulator, connections: usize) -> Hub {
    let host = Arc::new(home.start(PluginLimits {
        allow_private_hosts: true,
        ..PluginLimits::default()
    }));
    let mut endpoints = BTreeMap::new();
    endpoints.insert("huggingface".to_string(), emu.url());
    Hub::new(
        host,
        None,
        HubConfig {
            cache_dir: home.home.model_cache_dir.clone(),
            source_order: vec!["huggingface".into()],
            endpoints,
            tokens: BTreeMap::new(),
            transfer: TransferOptions {
                connections,
                ..TransferOptions::default()
            },
        },
    )
}

async fn pull(hub: &Hub, repo: &str) -> Duration {
    let t = Instant::now();
    let req = PullRequest {
        repo: repo.into(),
        kind: Some(RepoKind::Model),
        ..Default::default()
    };
    hub.pull(&req, &(Arc::new(Silent) as _)).await.unwrap();
    t.elapsed()
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let big_mib: usize = std::env::var("TUNER_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let emu = HubEmulator::start().await;
    let big = pseudo_random(big_mib * MIB, 1);
    let repo = emu.add_repo("models", "bench/big", &[("model.safetensors", big)]);

    // curl: one stream to a file.
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "{}/bench/big/resolve/{}/model.safetensors",
        emu.url(),
        repo.commit
    );
    let out = dir.path().join("curl.bin");
    let t = Instant::now();
    let st = Command::new("curl")
        .args(["-s", "-f", "-o"])
        .arg(&out)
        .arg(&url)
        .status();
    let curl = t.elapsed();
    let curl_ok = st.is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&out);

    let home = TestHome::new();
    let tuner = pull(&hub(&home, &emu, 8), "bench/big").await;
    drop(home);

    // Capped links: 4 files, 20 MB/s per connection.
    emu.faults(|f| f.rate = 20_000_000);
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("model-{i}.safetensors"),
                pseudo_random(40 * MIB, 10 + i),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    emu.add_repo("models", "bench/four", &refs);
    let home1 = TestHome::new();
    let one = pull(&hub(&home1, &emu, 1), "bench/four").await;
    let home8 = TestHome::new();
    let eight = pull(&hub(&home8, &emu, 8), "bench/four").await;

    let big_bytes = big_mib * MIB;
    let four_bytes = 4 * 40 * MIB;
    println!("hub download benchmark (loopback, hub emulator)\n");
    println!("| case | time | throughput | ratio |");
    println!("|---|---:|---:|---:|");
    if curl_ok {
        println!(
            "| {big_mib} MiB, curl -o (1 stream, no hash check) | {:.2} s | {:.0} MB/s | 1.00 |",
            curl.as_secs_f64(),
            mbps(big_bytes, curl)
        );
    } else {
        println!("| {big_mib} MiB, curl | not run (curl missing or failed) | | |");
    }
    println!(
        "| {big_mib} MiB, tuner pull (8 conns, sha256 verified) | {:.2} s | {:.0} MB/s | {:.2} |",
        tuner.as_secs_f64(),
        mbps(big_bytes, tuner),
        curl.as_secs_f64() / tuner.as_secs_f64()
    );
    println!(
        "| 4 x 40 MiB at 20 MB/s per connection, tuner 1 conn | {:.2} s | {:.0} MB/s | 1.00 |",
        one.as_secs_f64(),
        mbps(four_bytes, one)
    );
    println!(
        "| 4 x 40 MiB at 20 MB/s per connection, tuner 8 conns | {:.2} s | {:.0} MB/s | {:.2} |",
        eight.as_secs_f64(),
        mbps(four_bytes, eight),
        one.as_secs_f64() / eight.as_secs_f64()
    );
    println!("\nratio: throughput relative to the first row of its group (higher is faster)");
}
