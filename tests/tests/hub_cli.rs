//! `tuner pull` as a process: killed with SIGKILL mid-transfer, then run
//! again, it completes correctly without fetching finished chunks again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tuner_tests::TunerCommand;
use tuner_tests::hub_emulator::{HubEmulator, pseudo_random};

const MIB: usize = 1 << 20;

fn pull(home: &Path, emu: &HubEmulator) -> TunerCommand {
    TunerCommand::new(home)
        .args([
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
        .hub_emulator(&emu.url())
        .env_remove("HF_TOKEN")
        .stdin_null()
}

/// An emulator serving `Qwen/Tiny` (a `config.json` and `size`
/// pseudo-random bytes of weights, returned) at 1 MiB/s per connection,
/// once the tuner binary is built.
async fn throttled_repo(size: usize, seed: u64) -> (HubEmulator, Vec<u8>) {
    tokio::task::spawn_blocking(tuner_tests::tuner_bin)
        .await
        .unwrap();
    let emu = HubEmulator::start().await;
    let weights = pseudo_random(size, seed);
    emu.add_repo(
        "models",
        "Qwen/Tiny",
        &[
            ("config.json", b"{}".to_vec()),
            ("model.safetensors", weights.clone()),
        ],
    );
    emu.faults(|f| f.rate = MIB as u64);
    (emu, weights)
}

/// Runs the pull to its end at full speed; returns the snapshot folder.
async fn finish_pull(home: &Path, emu: &HubEmulator) -> PathBuf {
    emu.faults(|f| f.rate = 0);
    let out = tokio::task::spawn_blocking({
        let c = pull(home, emu);
        move || c.output()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    PathBuf::from(report["path"].as_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transfer_then_rerun_completes() {
    let size = 8 * MIB;
    let (emu, weights) = throttled_repo(size, 11).await;
    let home = tempfile::tempdir().unwrap();
    let mut child = pull(home.path(), &emu).spawn_quiet();
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

    let path = finish_pull(home.path(), &emu).await;
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

/// Ten SIGKILLs at random moments, each landing mid-chunk on a throttled
/// link, then a run to the end: progress within chunks is synced and logged
/// as it goes, so each kill costs at most a little per chunk in flight, not
/// the whole chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kills_mid_chunk_refetch_little() {
    use sha2::{Digest, Sha256};

    // 1 MiB/s per connection, two connections, 1 MiB chunks: a chunk takes
    // a second, so the kills land inside chunks (whole-chunk resume would
    // lose about half a chunk per connection each time, ~1.3x in all).
    let size = 32 * MIB;
    let (emu, weights) = throttled_repo(size, 23).await;
    let home = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let start = Instant::now();
    for kill in 0..10 {
        let before = emu.bytes_served();
        let mut child = pull(home.path(), &emu).spawn_quiet();
        // Once this run is transferring, wait a random 50-800 ms.
        while emu.bytes_served() < before + 64 * 1024 {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "transfer never got going"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "tuner exited before kill {kill}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + next() % 750)).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let killed = emu.bytes_served();
    assert!(killed < size as u64, "finished before the last kill");

    let path = finish_pull(home.path(), &emu).await;
    let got = std::fs::read(path.join("model.safetensors")).unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&got)),
        hex::encode(Sha256::digest(&weights))
    );
    let total = emu.bytes_served();
    eprintln!(
        "served {:.3}x the file over ten kills and a rerun ({:?})",
        total as f64 / size as f64,
        start.elapsed()
    );
    assert!(
        total as f64 <= 1.1 * size as f64,
        "served {total} bytes ({:.2}x; {killed} before the last run) for a {size}-byte file",
        total as f64 / size as f64
    );
}

/// `tuner cache list` reads a cache made by huggingface_hub from its folder
/// (`refs/main`, `snapshots/<commit>`, `blobs/`): complete, at revision
/// `main`; `verified` only after `tuner cache verify`, with the time, and
/// no longer once a blob is rewritten.
#[test]
fn cache_list_reads_a_huggingface_hub_cache_from_its_folder() {
    use sha2::Digest;
    let home = tempfile::tempdir().unwrap();
    let cache = home.path().join("hf-hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--Qwen--Tiny");
    let weights = pseudo_random(10_000, 5);
    let blob = repo
        .join("blobs")
        .join(hex::encode(sha2::Sha256::digest(&weights)));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::write(&blob, &weights).unwrap();
    std::os::unix::fs::symlink(
        Path::new("../../blobs").join(blob.file_name().unwrap()),
        repo.join("snapshots")
            .join(commit)
            .join("model.safetensors"),
    )
    .unwrap();

    let tuner = |args: &[&str]| {
        let mut all = vec!["cache"];
        all.extend_from_slice(args);
        all.extend(["--cache-dir", cache.to_str().unwrap(), "--json"]);
        TunerCommand::new(home.path())
            .args(all)
            .stdin_null()
            .output()
    };
    let listed = || -> serde_json::Value {
        let out = tuner(&["list"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["repos"][0].clone()
    };
    let r = listed();
    assert_eq!(
        (&r["name"], &r["revision"], &r["commit"], &r["complete"]),
        (
            &"Qwen/Tiny".into(),
            &"main".into(),
            &commit.into(),
            &true.into()
        ),
        "{r}"
    );
    assert_eq!(
        (&r["verified"], &r["verified_at"]),
        (&false.into(), &serde_json::Value::Null)
    );

    let out = tuner(&["verify", "Qwen/Tiny"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r = listed();
    assert_eq!(r["verified"], true, "{r}");
    assert!(
        r["verified_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{r}"
    );

    // A corrupted copy: rewritten with another size.
    std::fs::write(&blob, &weights[..5000]).unwrap();
    let r = listed();
    assert_eq!(
        (&r["verified"], &r["verified_at"]),
        (&false.into(), &serde_json::Value::Null),
        "{r}"
    );
    let out = tuner(&["verify", "Qwen/Tiny"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Models that transformers (the Hugging Face hub cache) or the ModelScope
/// SDK (its cache, a dotted name written `___`, with its `.mv` and `.msc`)
/// downloaded are used where they are, offline, and listed by `cache list
/// --all`; an incomplete copy is listed but not used.
#[test]
fn models_other_tools_downloaded_are_used_where_they_are() {
    use tuner_tests::repo_root;
    use tuner_tests::training::tiny_model;
    let home = tempfile::tempdir().unwrap();
    let model = tiny_model(home.path(), false);
    let copy_model = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(&model).unwrap().flatten() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    };
    let hf = home.path().join("hf-hub");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    copy_model(&hf.join("models--Qwen--Tiny/snapshots").join(commit));
    std::fs::create_dir_all(hf.join("models--Qwen--Tiny/refs")).unwrap();
    std::fs::write(hf.join("models--Qwen--Tiny/refs/main"), commit).unwrap();
    let ms = home.path().join("ms-hub");
    let ms_model = ms.join("models/Qwen/Tiny-0___5B");
    copy_model(&ms_model);
    std::fs::write(ms_model.join(".mv"), "Revision:master,CreatedAt:1745893530").unwrap();
    std::fs::copy(
        repo_root().join("tests/fixtures/modelscope/msc.pickle"),
        ms_model.join(".msc"),
    )
    .unwrap();
    let data = home.path().join("d.jsonl");
    std::fs::write(&data, "{\"instruction\": \"q\", \"output\": \"a\"}\n").unwrap();

    let tuner = |args: &[&str]| {
        TunerCommand::new(home.path())
            .args(args)
            .env("TUNER_OFFLINE", "1")
            .env("HF_HUB_CACHE", &hf)
            .env("MODELSCOPE_CACHE", &ms)
            .stdin_null()
            .output()
    };
    let stats = |id: &str| {
        tuner(&[
            "data",
            "stats",
            data.to_str().unwrap(),
            "--tokenizer",
            id,
            "--json",
        ])
    };
    for id in ["Qwen/Tiny", "Qwen/Tiny-0.5B"] {
        let out = stats(id);
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["tokens"]["samples"], 1, "{id}: {v}");
    }

    let list = || -> serde_json::Value {
        let out = tuner(&["cache", "list", "--all", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let external = list()["external"].clone();
    let by_name = |v: &serde_json::Value, name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {v}"))
            .clone()
    };
    let hf_entry = by_name(&external, "Qwen/Tiny");
    assert_eq!(
        (
            &hf_entry["origin"],
            &hf_entry["revision"],
            &hf_entry["complete"]
        ),
        (&"huggingface".into(), &"main".into(), &true.into()),
        "{hf_entry}"
    );
    let ms_entry = by_name(&external, "Qwen/Tiny-0.5B");
    assert_eq!(
        (
            &ms_entry["origin"],
            &ms_entry["revision"],
            &ms_entry["complete"]
        ),
        (&"modelscope".into(), &"master".into(), &true.into()),
        "{ms_entry}"
    );
    // Nothing of them is in tuner's own cache.
    assert_eq!(list()["repos"], serde_json::json!([]));

    // A file the `.msc` lists is gone: listed as incomplete, not used.
    std::fs::remove_file(ms_model.join("tokenizer_config.json")).unwrap();
    assert_eq!(
        by_name(&list()["external"], "Qwen/Tiny-0.5B")["complete"],
        false
    );
    let out = stats("Qwen/Tiny-0.5B");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nor complete in the Hugging Face or ModelScope caches"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
