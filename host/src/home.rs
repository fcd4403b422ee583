//! The home folder: every piece of state tuner keeps, in one place.
//!
//! By default the platform's usual folders are used (on Linux
//! `~/.config/tuner`, `~/.local/share/tuner`, `~/.cache/tuner`). Setting
//! `TUNER_HOME` relocates all of it under one folder, which tests and users
//! with several setups rely on. `MODEL_CACHE_DIR` still moves the model cache
//! alone, and `TUNER_PLUGIN_DIR` the user plugin folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Resolved locations of tuner's files. Settings from the config file
/// (`model_cache_dir`, `data_dir`, `plugin_dir`) are applied by
/// [`crate::config::Settings`], on top of these defaults.
#[derive(Debug, Clone)]
pub struct Home {
    /// `TUNER_HOME`, when set.
    pub root: Option<PathBuf>,
    /// `config.toml`.
    pub config_file: PathBuf,
    /// The SQLite database.
    pub database: PathBuf,
    /// Stored datasets.
    pub data_dir: PathBuf,
    /// Downloaded models (Hugging Face hub layout).
    pub model_cache_dir: PathBuf,
    /// User plugins (`NAME.wasm` + optional `NAME.toml`).
    pub plugin_dir: PathBuf,
    /// Compiled plugin code, keyed by wasm hash and engine.
    pub compile_cache_dir: PathBuf,
    /// Cargo target folders shared by every `tuner plugins build`, one per
    /// wasm toolchain, so `std` and common dependencies are built once.
    pub wasm_build_cache_dir: PathBuf,
}

impl Home {
    /// Reads `TUNER_HOME` or falls back to the platform folders.
    pub fn from_env() -> Result<Self> {
        match std::env::var_os("TUNER_HOME") {
            Some(root) if !root.is_empty() => Ok(Self::at(Path::new(&root))),
            _ => Self::platform(),
        }
    }

    /// Everything under one folder.
    pub fn at(root: &Path) -> Self {
        Self {
            root: Some(root.to_path_buf()),
            config_file: root.join("config.toml"),
            database: root.join("tuner.db"),
            data_dir: root.join("data"),
            model_cache_dir: root.join("models"),
            plugin_dir: root.join("plugins"),
            compile_cache_dir: root.join("cache").join("compiled-plugins"),
            wasm_build_cache_dir: root.join("cache").join("wasm-build"),
        }
    }

    /// The platform's configuration, data and cache folders.
    pub fn platform() -> Result<Self> {
        let dirs = directories::ProjectDirs::from("", "", "tuner").context(
            "cannot find a home directory for tuner's files; set TUNER_HOME to a folder",
        )?;
        let data = dirs.data_dir();
        let cache = dirs.cache_dir();
        Ok(Self {
            root: None,
            config_file: dirs.config_dir().join("config.toml"),
            database: data.join("tuner.db"),
            data_dir: data.join("datasets"),
            model_cache_dir: cache.join("models"),
            plugin_dir: data.join("plugins"),
            compile_cache_dir: cache.join("compiled-plugins"),
            wasm_build_cache_dir: cache.join("wasm-build"),
        })
    }
}
