//! Model and dataset downloads against the hub emulator: resume, retries,
//! verification, fallback, host rules, import, shared transfers, datasets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tuner::hub::progress::Silent;
use tuner::hub::{Hub, HubConfig, HubError, Progress, PullRequest, RepoKind, TransferOptions};
use tuner::plugins::PluginLimits;
use tuner::store::Store;
use tuner_tests::hub_emulator::{HubEmulator, pseudo_random};
use tuner_tests::{TestHome, test_limits};

const MIB: usize = 1 << 20;

fn limits() -> PluginLimits {
    PluginLimits {
        allow_private_hosts: true,
        call_timeout: Duration::from_secs(20),
        ..test_limits()
    }
}

fn fast_transfer() -> TransferOptions {
    TransferOptions {
        connections: 4,
        chunk_size: MIB as u64,
        max_attempts: 6,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        ..TransferOptions::default()
    }
}

/// A hub over `home` whose sources all point at `emu`.
fn hub(home: &TestHome, emu: &HubEmulator, order: &[&str]) -> Hub {
    let host = Arc::new(home.start(limits()));
    let store = Arc::new(Store::open(&home.home.database).unwrap());
    let mut endpoints = BTreeMap::new();
    for s in ["huggingface", "modelscope", "mirror"] {
        endpoints.insert(s.to_string(), emu.url());
    }
    Hub::new(
        host,
        Some(store),
        HubConfig {
            cache_dir: home.home.model_cache_dir.clone(),
            source_order: order.iter().map(|s| s.to_string()).collect(),
            endpoints,
            tokens: BTreeMap::new(),
            transfer: fast_transfer(),
        },
    )
}

fn silent() -> Progress {
    Arc::new(Silent)
}

fn model(repo: &str) -> PullRequest {
    PullRequest {
        repo: repo.into(),
        kind: Some(RepoKind::Model),
        ..Default::default()
    }
}

fn qwen_like(emu: &HubEmulator, weights: usize) -> Vec<u8> {
    let w = pseudo_random(weights, 7);
    emu.add_repo(
        "models",
        "Qwen/Tiny",
        &[
            ("config.json", br#"{"model_type":"qwen3"}"#.to_vec()),
            ("model.safetensors", w.clone()),
            ("sub/tokenizer.json", pseudo_random(5000, 3)),
        ],
    );
    w
}

#[tokio::test]
async fn pulls_from_modelscope_into_the_hf_layout() {
    let emu = HubEmulator::start().await;
    let weights = qwen_like(&emu, 3 * MIB + 123);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["modelscope", "huggingface"]);
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(report.source, "modelscope");
    assert_eq!(report.files, 3);
    assert_eq!(report.downloaded_files, 3);
    let snap = home
        .home
        .model_cache_dir
        .join("models--Qwen--Tiny/snapshots")
        .join(&report.commit);
    assert_eq!(report.path, snap);
    assert_eq!(
        std::fs::read(snap.join("model.safetensors")).unwrap(),
        weights
    );
    assert!(snap.join("sub/tokenizer.json").is_file());
    // The snapshot entries are links into blobs/ named by sha256.
    let link = std::fs::read_link(snap.join("model.safetensors")).unwrap();
    assert!(link.starts_with("../../blobs"), "{link:?}");
    let refs = home.home.model_cache_dir.join("models--Qwen--Tiny/refs");
    assert_eq!(
        std::fs::read_to_string(refs.join("master")).unwrap(),
        report.commit
    );
    // ModelScope's default branch is `master`; transformers and
    // huggingface_hub read `refs/main` when given no revision (offline they
    // fail without it), so the pull writes that ref too.
    assert_eq!(
        std::fs::read_to_string(refs.join("main")).unwrap(),
        report.commit
    );
    // A second pull downloads nothing.
    let served = emu.bytes_served();
    let again = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!((again.downloaded_files, again.cached_files), (0, 3));
    assert_eq!(emu.bytes_served(), served);
    // list, verify, export, remove by the underscore name.
    let listed = hub.cache.list(hub.store());
    assert_eq!(listed.len(), 1);
    assert!(listed[0].complete);
    assert_eq!(listed[0].source, "modelscope");
    let repo = hub.cache.find(RepoKind::Model, "Qwen_Tiny").unwrap();
    let v = hub.cache.verify(&repo, hub.store()).unwrap();
    assert_eq!((v.checked, v.corrupt.len(), v.missing.len()), (3, 0, 0));
    let out = tempfile::tempdir().unwrap();
    assert_eq!(hub.cache.export(&repo, None, out.path()).unwrap(), 3);
    assert!(!out.path().join("model.safetensors").is_symlink());
    assert_eq!(
        std::fs::read(out.path().join("model.safetensors")).unwrap(),
        weights
    );
    // Verified at pull time, and re-checked by size and mtime: a blob
    // rewritten with another size is no longer verified.
    let listed = hub.cache.list(hub.store());
    assert!(
        listed[0].verified && listed[0].verified_at.is_some(),
        "{listed:?}"
    );
    assert_eq!(listed[0].revision.as_deref(), Some("master"));
    let blob = std::fs::canonicalize(snap.join("model.safetensors")).unwrap();
    std::fs::write(&blob, b"corrupted").unwrap();
    let listed = hub.cache.list(hub.store());
    assert!(
        !listed[0].verified && listed[0].verified_at.is_none(),
        "{listed:?}"
    );
    let v = hub.cache.verify(&repo, hub.store()).unwrap();
    assert_eq!(v.corrupt, ["model.safetensors"]);
    hub.cache.remove(&repo, hub.store()).unwrap();
    assert!(hub.cache.list(hub.store()).is_empty());
}

#[tokio::test]
async fn resumes_after_connection_drop_without_refetching() {
    let emu = HubEmulator::start().await;
    let size = 6 * MIB;
    let weights = qwen_like(&emu, size);
    // Drop the stream in the middle of the fifth chunk.
    emu.faults(|f| {
        f.drop_at
            .insert("model.safetensors".into(), (4 * MIB + MIB / 2) as u64);
    });
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(
        std::fs::read(report.path.join("model.safetensors")).unwrap(),
        weights
    );
    let total: usize = size + 5000 + 22;
    // Resumed from the byte where it stopped: nothing fetched twice but the
    // one 64 KiB piece that was in flight when the connection died.
    let served = emu.bytes_served();
    assert!(
        served >= total as u64 && served <= (total + 64 * 1024) as u64,
        "served {served} for {total}"
    );
}

#[tokio::test]
async fn a_failed_pull_leaves_partial_chunks_that_the_next_pull_reuses() {
    let emu = HubEmulator::start().await;
    let size = 8 * MIB;
    let weights = qwen_like(&emu, size);
    emu.faults(|f| {
        f.drop_at
            .insert("model.safetensors".into(), (5 * MIB + 10) as u64);
    });
    let home = TestHome::new();
    let mut h = hub(&home, &emu, &["huggingface"]);
    // One attempt only: the drop ends this pull, like a crash would.
    let host = Arc::new(home.start(limits()));
    let mut cfg = h.config().clone();
    cfg.transfer.max_attempts = 1;
    cfg.transfer.connections = 1;
    let store = Arc::new(Store::open(&home.home.database).unwrap());
    let one_shot = Hub::new(host, Some(store), cfg);
    let err = one_shot
        .pull(&model("Qwen/Tiny"), &silent())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("gave up after 1 attempts"),
        "{err}"
    );
    let first = emu.bytes_served();
    assert!(first >= 5 * MIB as u64, "{first}");
    h = hub(&home, &emu, &["huggingface"]);
    let report = h.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(
        std::fs::read(report.path.join("model.safetensors")).unwrap(),
        weights
    );
    // Completed chunks (0..5) were not fetched again: at most the broken chunk is.
    let total = emu.bytes_served();
    assert!(
        total <= (size + MIB + 5022) as u64,
        "served {total} bytes for a {size}-byte file"
    );
}

#[tokio::test]
async fn corrupted_file_is_refetched_and_never_visible() {
    let emu = HubEmulator::start().await;
    let weights = qwen_like(&emu, 300_000);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    // Once corrupt: fetched again, then correct.
    emu.faults(|f| {
        f.corrupt.insert("model.safetensors".into(), 1);
    });
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(
        std::fs::read(report.path.join("model.safetensors")).unwrap(),
        weights
    );

    // Always corrupt: the pull fails and nothing is visible.
    let emu2 = HubEmulator::start().await;
    qwen_like(&emu2, 300_000);
    emu2.faults(|f| {
        f.corrupt.insert("model.safetensors".into(), 100);
    });
    let home2 = TestHome::new();
    let hub2 = self::hub(&home2, &emu2, &["huggingface"]);
    let err = hub2.pull(&model("Qwen/Tiny"), &silent()).await.unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    let repo_dir = home2.home.model_cache_dir.join("models--Qwen--Tiny");
    let snaps = tuner::hub::cache::walk_files(&repo_dir.join("snapshots"));
    assert!(
        !snaps.iter().any(|p| p.ends_with("model.safetensors")),
        "{snaps:?}"
    );
    let blobs = tuner::hub::cache::walk_files(&repo_dir.join("blobs"));
    // Only the two good files are stored; the corrupt data was discarded.
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert!(blobs.iter().all(|b| !b.contains('.')), "{blobs:?}");
}

#[tokio::test]
async fn retries_429_with_retry_after_and_503_bursts() {
    let emu = HubEmulator::start().await;
    let weights = qwen_like(&emu, 100_000);
    emu.faults(|f| {
        f.too_many = (2, 1);
        f.unavailable = 3;
    });
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let started = std::time::Instant::now();
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(
        std::fs::read(report.path.join("model.safetensors")).unwrap(),
        weights
    );
    // Retry-After: 1 was honoured (the backoff alone would be 20 ms).
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(emu.file_requests(), 3 + 5);
}

#[tokio::test]
async fn falls_back_from_failing_modelscope_to_huggingface() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 1000);
    emu.faults(|f| f.modelscope_down = true);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["modelscope", "huggingface"]);
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(report.source, "huggingface");
    assert_eq!(report.failed_sources.len(), 1);
    assert_eq!(report.failed_sources[0].source, "modelscope");
    assert!(
        report.failed_sources[0].error.contains("503"),
        "{:?}",
        report.failed_sources
    );
    // Forcing the failing source reports its reason and tries nothing else.
    let forced = PullRequest {
        source: Some("modelscope".into()),
        force: true,
        ..model("Qwen/Tiny")
    };
    let err = hub.pull(&forced, &silent()).await.unwrap_err();
    assert!(
        matches!(&err, HubError::Source { plugin, .. } if plugin == "modelscope"),
        "{err}"
    );
}

#[tokio::test]
async fn mirror_without_range_or_length_headers_still_works() {
    let emu = HubEmulator::start().await;
    let weights = qwen_like(&emu, 3 * MIB);
    emu.faults(|f| f.mirror_mode = true);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["mirror"]);
    let report = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(report.source, "mirror");
    assert_eq!(
        std::fs::read(report.path.join("model.safetensors")).unwrap(),
        weights
    );
}

#[tokio::test]
async fn the_plugin_cannot_reach_an_undeclared_host() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 1000);
    let home = TestHome::new();
    let host = Arc::new(home.start(limits()));
    // Not configured by the user, so not granted: the plugin's request is refused.
    let plugin = host.source("huggingface").unwrap();
    use tuner::plugins::source as wit;
    let req = wit::ResolveRequest {
        repo: "Qwen/Tiny".into(),
        kind: wit::RepoKind::Model,
        revision: None,
        endpoint: Some(emu.url()),
        token: None,
    };
    let p = plugin.clone();
    let out = tokio::task::spawn_blocking(move || p.resolve(&req))
        .await
        .unwrap()
        .unwrap();
    match out {
        Err(wit::SourceError::Unavailable(m)) => assert!(m.contains("not declared"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(emu.requests().is_empty());

    // A configured endpoint is granted, but a redirect to another host
    // (a "CDN" the plugin does not declare) is refused for the download.
    let cdn = emu.start_cdn("localhost:0").await;
    emu.faults(|f| f.redirect_to = Some(format!("http://localhost:{}", cdn.addr.port())));
    let hub = hub(&home, &emu, &["huggingface"]);
    let err = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap_err();
    assert!(err.to_string().contains("not declared"), "{err}");
    assert_eq!(emu.bytes_served(), 0);
}

#[tokio::test]
async fn import_of_a_hand_copied_folder_makes_pull_download_nothing() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 200_000);
    let repo = emu.add_repo("models", "Qwen/Tiny", &[]);
    let _ = repo;
    // Re-add with content we can copy by hand.
    let files = vec![
        ("config.json", br#"{"model_type":"qwen3"}"#.to_vec()),
        ("model.safetensors", pseudo_random(200_000, 7)),
        ("sub/tokenizer.json", pseudo_random(5000, 3)),
    ];
    emu.add_repo("models", "Qwen/Tiny", &files);
    let copy = tempfile::tempdir().unwrap();
    for (p, d) in &files {
        let to = copy.path().join(p);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, d).unwrap();
    }
    std::fs::write(copy.path().join("stray.txt"), b"not from the hub").unwrap();
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let repo_id = tuner::hub::RepoId::parse(RepoKind::Model, "Qwen/Tiny").unwrap();
    let report = hub
        .import(&repo_id, copy.path(), None, false)
        .await
        .unwrap();
    assert!(report.verified);
    assert!(hub.cache.list(hub.store())[0].verified);
    assert_eq!(report.imported, 3);
    assert_eq!(report.rejected.len(), 1);
    let pulled = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(pulled.downloaded_files, 0);
    assert_eq!(emu.bytes_served(), 0);

    // Offline import: recorded unverified; a later pull reuses the large
    // files by content and fetches only files the hub lists without sha256.
    let home2 = TestHome::new();
    let hub2 = self::hub(&home2, &emu, &["huggingface"]);
    let off = hub2
        .import(&repo_id, copy.path(), None, true)
        .await
        .unwrap();
    assert!(!off.verified);
    let listed = hub2.cache.list(hub2.store());
    assert!(!listed[0].verified && listed[0].complete, "{listed:?}");
    let pulled = hub2.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    assert_eq!(pulled.downloaded_files, 1, "only the small git file");
    assert!(emu.bytes_served() < 100);
}

#[tokio::test]
async fn two_pulls_at_once_share_one_transfer() {
    let emu = HubEmulator::start().await;
    let size = 2 * MIB;
    qwen_like(&emu, size);
    emu.faults(|f| f.rate = 8 << 20);
    let home = TestHome::new();
    let hub = Arc::new(hub(&home, &emu, &["huggingface"]));
    let (req, p1, p2) = (model("Qwen/Tiny"), silent(), silent());
    let (a, b) = tokio::join!(hub.pull(&req, &p1), hub.pull(&req, &p2));
    assert_eq!(a.unwrap().commit, b.unwrap().commit);
    assert_eq!(emu.bytes_served(), (size + 5022) as u64);
}

#[tokio::test]
async fn short_disk_is_refused_with_numbers() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 1000);
    emu.faults(|f| f.fake_size = Some(1 << 60));
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let err = hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::DiskFull { .. }), "{msg}");
    assert!(msg.contains("needed") && msg.contains("available"), "{msg}");
    assert_eq!(emu.bytes_served(), 0);
}

#[tokio::test]
async fn include_and_exclude_globs_select_files() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 1000);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let req = PullRequest {
        include: vec!["*.safetensors".into(), "*.json".into()],
        exclude: vec!["sub/*".into()],
        ..model("Qwen/Tiny")
    };
    let report = hub.pull(&req, &silent()).await.unwrap();
    assert_eq!(report.files, 2);
    assert!(!report.path.join("sub/tokenizer.json").exists());
}

#[tokio::test]
async fn pulls_datasets_from_both_protocols() {
    let emu = HubEmulator::start().await;
    let rows = b"{\"instruction\":\"hi\",\"output\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"}\n".repeat(100);
    emu.add_repo(
        "datasets",
        "AI-ModelScope/alpaca-gpt4-data-zh",
        &[("train.jsonl", rows.clone())],
    );
    for source in ["modelscope", "huggingface"] {
        let home = TestHome::new();
        let hub = hub(&home, &emu, &[source]);
        let req = PullRequest {
            repo: "AI-ModelScope/alpaca-gpt4-data-zh".into(),
            kind: Some(RepoKind::Dataset),
            ..Default::default()
        };
        let report = hub.pull(&req, &silent()).await.unwrap();
        assert_eq!(report.source, source);
        assert!(
            report.path.starts_with(
                home.home
                    .model_cache_dir
                    .join("datasets--AI-ModelScope--alpaca-gpt4-data-zh")
            )
        );
        assert_eq!(
            std::fs::read(report.path.join("train.jsonl")).unwrap(),
            rows
        );
    }
}

#[tokio::test]
async fn a_hub_dataset_spec_with_a_sample_count_is_fetched_and_cached() {
    let emu = HubEmulator::start().await;
    let rows = b"{\"text\":\"x\"}\n".repeat(600);
    emu.add_repo(
        "datasets",
        "AI-ModelScope/alpaca-gpt4-data-zh",
        &[("data.jsonl", rows.clone())],
    );
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["modelscope", "huggingface"]);
    let spec = tuner::hub::HubDatasetSpec::parse("AI-ModelScope/alpaca-gpt4-data-zh#500").unwrap();
    assert_eq!(spec.samples, Some(500));
    assert!(tuner::hub::HubDatasetSpec::parse("a/b#x").is_err());
    let report = hub.fetch_dataset(&spec, false, &silent()).await.unwrap();
    assert_eq!(std::fs::read(report.path.join("data.jsonl")).unwrap(), rows);
    let n = emu.requests().len();
    let again = hub.fetch_dataset(&spec, true, &silent()).await.unwrap();
    assert_eq!((again.source.as_str(), again.path), ("cache", report.path));
    assert_eq!(emu.requests().len(), n);
}

#[tokio::test]
async fn offline_mode_uses_only_the_cache() {
    let emu = HubEmulator::start().await;
    qwen_like(&emu, 1000);
    let home = TestHome::new();
    let hub = hub(&home, &emu, &["huggingface"]);
    let offline = PullRequest {
        offline: true,
        ..model("Qwen/Tiny")
    };
    assert!(matches!(
        hub.pull(&offline, &silent()).await.unwrap_err(),
        HubError::NotCached(_)
    ));
    hub.pull(&model("Qwen/Tiny"), &silent()).await.unwrap();
    let n = emu.requests().len();
    let report = hub.pull(&offline, &silent()).await.unwrap();
    assert_eq!(report.source, "cache");
    assert_eq!(emu.requests().len(), n);
    let repo = tuner::hub::RepoId::parse(tuner::hub::RepoKind::Model, "Qwen/Tiny").unwrap();
    assert_eq!(hub.cached_snapshot(&repo).unwrap(), report.path);
}
