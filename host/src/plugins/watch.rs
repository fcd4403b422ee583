//! Hot reload: watches the plugin folder and reloads when `.wasm` or `.toml`
//! files appear, change or disappear.
//!
//! Events are debounced (a copy produces several), then [`PluginHost::reload`]
//! runs on the watcher's own thread. A file caught half-written fails to
//! load and is retried on the event its last write produces.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::registry::PluginHost;

/// How long the folder must be quiet before a reload.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Keeps the watcher alive; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
}

fn relevant(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm" || e == "toml")
}

/// Starts watching `host`'s plugin folder (creating it if missing).
pub fn watch(host: Arc<PluginHost>) -> anyhow::Result<Option<PluginWatcher>> {
    let Some(dir) = host.plugin_dir().map(Path::to_path_buf) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating plugin folder {}: {e}", dir.display()))?;
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| relevant(p))
        {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    std::thread::Builder::new()
        .name("tuner-plugin-watch".into())
        .spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while rx.recv().is_ok() {
                while rx.recv_timeout(DEBOUNCE).is_ok() {}
                let report = host.reload();
                if !report.is_empty() {
                    tracing::info!(
                        added = ?report.added,
                        updated = ?report.updated,
                        removed = ?report.removed,
                        "plugin folder changed"
                    );
                }
                for f in &report.failed {
                    tracing::warn!(file = %f.file.display(), "plugin not loaded: {}", f.error);
                }
            }
        })?;
    tracing::info!(dir = %dir.display(), "watching plugin folder");
    Ok(Some(PluginWatcher { _watcher: watcher }))
}
