//! `tuner pull` as a process: killed with SIGKILL mid-transfer, then run
//! again, it completes correctly without fetching finished chunks again.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tuner_tests::hub_emulator::{HubEmulator, pseudo_random};

const MIB: usize = 1 << 20;

fn pull(bin: &PathBuf, home: &std::path::Path, emu: &HubEmulator) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "pull",
        "Qwen/Tiny",
        "--source",
        "huggingface",
        "--connections",
        "2",
        "--chunk-mib",
        "1",
        "--json",
    ])
    .env("TUNER_HOME", home)
    .env("HF_ENDPOINT", emu.url())
    .env("TUNER_ALLOW_PRIVATE_HOSTS", "1")
    .env_remove("MODEL_CACHE_DIR")
    .env_remove("HF_TOKEN")
    .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transfer_then_rerun_completes() {
    let bin = tokio::task::spawn_blocking(tuner_tests::tuner_bin)
        .await
        .unwrap();
    let emu = HubEmulator::start().await;
    let size = 8 * MIB;
    let weights = pseudo_random(size, 11);
    emu.add_repo(
        "models",
        "Qwen/Tiny",
        &[
            ("config.json", b"{}".to_vec()),
            ("model.safetensors", weights.clone()),
        ],
    );
    emu.faults(|f| f.rate = MIB as u64);
    let home = tempfile::tempdir().unwrap();
    let mut child = pull(&bin, home.path(), &emu)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while emu.bytes_served() < (3 * MIB + MIB / 4) as u64 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "transfer never got going"
        );
        assert!(child.try_wait().unwrap().is_none(), "tuner exited early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first = emu.bytes_served();
    let repo = home.path().join("models/models--Qwen--Tiny");
    let blobs = tuner::hub::cache::walk_files(&repo.join("blobs"));
    assert!(
        blobs.iter().any(|b| b.ends_with(".incomplete")),
        "{blobs:?}"
    );
    let snaps = tuner::hub::cache::walk_files(&repo.join("snapshots"));
    assert!(
        !snaps.iter().any(|p| p.ends_with("model.safetensors")),
        "{snaps:?}"
    );

    emu.faults(|f| f.rate = 0);
    let out = tokio::task::spawn_blocking({
        let mut c = pull(&bin, home.path(), &emu);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = PathBuf::from(report["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(path.join("model.safetensors")).unwrap(),
        weights
    );
    // Chunks finished before the kill were kept: the rerun fetched at most
    // the rest plus the two chunks that were in flight.
    let total = emu.bytes_served();
    assert!(
        total <= (size + 2 * MIB + 64 * 1024 + 2) as u64,
        "served {total} in all (first run {first}) for an {size}-byte file"
    );
    assert!(total - first < size as u64, "the rerun started over");
}
