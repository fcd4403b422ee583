//! A small cache of loaded [`ModelFiles`], so that requests naming the same
//! model share one tokenizer and chat template instead of each loading its
//! own (a Qwen3 tokenizer is tens of MiB in memory).
//!
//! Entries are keyed by the model folder and the size and modification time
//! of `tokenizer.json` and `tokenizer_config.json`: a changed file is loaded
//! again. The least recently used entry goes when the cache is full. Loads
//! happen under the cache's lock, so concurrent requests for one model load
//! it once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{ModelError, ModelFiles};

type Stamp = [(u64, Option<SystemTime>); 2];

/// Loaded model files, least recently used last.
#[derive(Debug)]
pub struct ModelFilesCache {
    capacity: usize,
    entries: Mutex<Vec<(PathBuf, Stamp, Arc<ModelFiles>)>>,
}

impl Default for ModelFilesCache {
    fn default() -> Self {
        Self::new(4)
    }
}

impl ModelFilesCache {
    /// A cache holding up to `capacity` models (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The files of the model in `dir`, loaded now or earlier.
    pub fn get(&self, dir: &Path) -> Result<Arc<ModelFiles>, ModelError> {
        let key = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let stamp = stamp(&key);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pos) = entries
            .iter()
            .position(|(d, s, _)| *d == key && *s == stamp)
        {
            let entry = entries.remove(pos);
            let files = entry.2.clone();
            entries.insert(0, entry);
            return Ok(files);
        }
        entries.retain(|(d, _, _)| *d != key);
        let files = Arc::new(ModelFiles::from_dir(&key)?);
        entries.insert(0, (key, stamp, files.clone()));
        entries.truncate(self.capacity);
        Ok(files)
    }

    /// Number of models held.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether no model is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn stamp(dir: &Path) -> Stamp {
    ["tokenizer.json", "tokenizer_config.json"]
        .map(|f| std::fs::metadata(dir.join(f)).map_or((0, None), |m| (m.len(), m.modified().ok())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3")
    }

    #[test]
    fn one_load_is_shared_and_a_changed_file_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["tokenizer.json", "tokenizer_config.json"] {
            std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
        }
        let cache = ModelFilesCache::new(2);
        let a = cache.get(dir.path()).unwrap();
        let b = cache.get(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.len(), 1);
        // A different size counts as a change even within one mtime tick.
        let config = dir.path().join("tokenizer_config.json");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push('\n');
        std::fs::write(&config, text).unwrap();
        let c = cache.get(dir.path()).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(cache.len(), 1);
    }
}
