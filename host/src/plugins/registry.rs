//! The set of loaded plugins: discovery (bundled and plugin folder),
//! loading, reloading, and validation of single files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::bundled::BUNDLED;
use super::imports::http::{HostPatterns, HttpGate};
use super::inspect;
use super::manifest::{Manifest, check_name};
use super::plugin::{MetadataSource, Origin, Plugin, PluginMeta};
use super::runtime::{CompileSource, Runtime};
use super::{FormatPlugin, MethodPlugin, RewardPlugin, SourcePlugin};
use super::{Kind, LoadError, PluginLimits};

/// A file in the plugin folder that failed to load, and why.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoadFailure {
    #[schema(value_type = String)]
    pub file: PathBuf,
    pub error: String,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ReloadReport {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    pub failed: Vec<LoadFailure>,
}

impl ReloadReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }
}

#[derive(Default)]
struct Loaded {
    bundled: BTreeMap<String, Arc<Plugin>>,
    directory: BTreeMap<String, Entry>,
    failures: Vec<LoadFailure>,
}

/// All plugins of a running tuner.
///
/// Lookups hand out `Arc<Plugin>`: a reload swaps entries in the map, while
/// calls already holding the old plugin finish with it.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    plugin_dir: Option<PathBuf>,
    loaded: RwLock<Loaded>,
    /// One reload at a time (the watcher and the API may both ask).
    reloading: Mutex<()>,
}

/// Inputs for one plugin load.
struct Candidate<'a> {
    name: &'a str,
    bytes: &'a [u8],
    manifest: Option<(&'a str, String)>,
    origin: Origin,
    path: Option<PathBuf>,
}

impl PluginHost {
    /// Creates the runtime and loads the bundled plugins and the plugin
    /// folder. Files that fail to load are reported by [`PluginHost::failures`],
    /// not fatal: one bad plugin must not stop tuner.
    pub fn start(
        limits: PluginLimits,
        plugin_dir: Option<PathBuf>,
        compile_cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let runtime = Runtime::new(limits, compile_cache_dir)?;
        let host = Self {
            runtime,
            plugin_dir,
            loaded: RwLock::new(Loaded::default()),
            reloading: Mutex::new(()),
        };
        let mut bundled = BTreeMap::new();
        for b in BUNDLED {
            let candidate = Candidate {
                name: b.name,
                bytes: b.wasm,
                manifest: b
                    .manifest
                    .map(|m| (m, format!("{}.toml (bundled)", b.name))),
                origin: Origin::Bundled,
                path: None,
            };
            // A broken bundled plugin is a build defect, not user input.
            let plugin = host
                .load(candidate, true)
                .map_err(|e| anyhow::anyhow!("bundled plugin `{}`: {e}", b.name))?;
            bundled.insert(b.name.to_string(), Arc::new(plugin));
        }
        host.loaded.write().unwrap().bundled = bundled;
        let report = host.reload();
        for f in &report.failed {
            tracing::warn!(file = %f.file.display(), "plugin not loaded: {}", f.error);
        }
        Ok(host)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn plugin_dir(&self) -> Option<&Path> {
        self.plugin_dir.as_deref()
    }

    /// The plugin called `name`: a folder plugin shadows a bundled one.
    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        let loaded = self.loaded.read().unwrap();
        loaded
            .directory
            .get(name)
            .map(|e| &e.plugin)
            .or_else(|| loaded.bundled.get(name))
            .cloned()
    }

    /// The format plugin called `name` (`None` when there is none, or the
    /// plugin of that name is of another kind).
    pub fn format(&self, name: &str) -> Option<FormatPlugin> {
        self.get(name)?.as_format()
    }

    /// The source plugin called `name`.
    pub fn source(&self, name: &str) -> Option<SourcePlugin> {
        self.get(name)?.as_source()
    }

    /// The method plugin called `name`.
    pub fn method(&self, name: &str) -> Option<MethodPlugin> {
        self.get(name)?.as_method()
    }

    /// The reward plugin called `name`.
    pub fn reward(&self, name: &str) -> Option<RewardPlugin> {
        self.get(name)?.as_reward()
    }

    /// Every active reward plugin, sorted by name.
    pub fn rewards(&self) -> Vec<RewardPlugin> {
        self.list().iter().filter_map(Plugin::as_reward).collect()
    }

    /// Every active format plugin, sorted by name.
    pub fn formats(&self) -> Vec<FormatPlugin> {
        self.list().iter().filter_map(Plugin::as_format).collect()
    }

    /// Every active source plugin, sorted by name.
    pub fn sources(&self) -> Vec<SourcePlugin> {
        self.list().iter().filter_map(Plugin::as_source).collect()
    }

    /// Every active method plugin, sorted by name.
    pub fn methods(&self) -> Vec<MethodPlugin> {
        self.list().iter().filter_map(Plugin::as_method).collect()
    }

    /// Every active plugin, sorted by name.
    pub fn list(&self) -> Vec<Arc<Plugin>> {
        let loaded = self.loaded.read().unwrap();
        let mut all: BTreeMap<&str, &Arc<Plugin>> = BTreeMap::new();
        for (name, p) in &loaded.bundled {
            all.insert(name, p);
        }
        for (name, e) in &loaded.directory {
            all.insert(name, &e.plugin);
        }
        all.into_values().cloned().collect()
    }

    /// Files in the plugin folder that failed to load at the last (re)load.
    pub fn failures(&self) -> Vec<LoadFailure> {
        self.loaded.read().unwrap().failures.clone()
    }

    /// Rescans the plugin folder: loads new and changed `.wasm` files (a
    /// changed `.toml` counts as a change), drops removed ones. Unchanged
    /// plugins are kept as they are, instance and all; a changed file that
    /// fails to load leaves the previous version active.
    pub fn reload(&self) -> ReloadReport {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = ReloadReport::default();
        let Some(dir) = &self.plugin_dir else {
            return report;
        };
        let files = match list_wasm_files(dir) {
            Ok(files) => files,
            Err(e) => {
                if dir.exists() {
                    report.failed.push(LoadFailure {
                        file: dir.clone(),
                        error: format!("cannot list the plugin folder: {e}"),
                    });
                }
                Vec::new()
            }
        };
        let current = self.loaded.read().unwrap().directory.clone();
        let mut next = BTreeMap::new();
        for path in files {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match self.load_file(&name, &path, current.get(&name)) {
                Ok(LoadOutcome::Unchanged(entry)) => {
                    next.insert(name, entry);
                }
                Ok(LoadOutcome::Loaded(entry)) => {
                    if current.contains_key(&name) {
                        report.updated.push(name.clone());
                    } else {
                        report.added.push(name.clone());
                    }
                    next.insert(name, entry);
                }
                Err(err) => {
                    // A broken replacement must not take a working plugin away:
                    // keep the last good version and report the failure.
                    if let Some(entry) = current.get(&name) {
                        next.insert(name, entry.clone());
                    }
                    report.failed.push(LoadFailure {
                        file: path.clone(),
                        error: err.to_string(),
                    });
                }
            }
        }
        report.removed = current
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        let mut loaded = self.loaded.write().unwrap();
        loaded.directory = next;
        loaded.failures = report.failed.clone();
        report
    }

    /// Validates a `.wasm` file as a plugin without installing it: the same
    /// checks as loading, including calling `info()`. The manifest beside it
    /// (`NAME.toml`), if any, is checked too.
    pub fn check_file(&self, path: &Path) -> Result<PluginMeta, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read(e.to_string()))?;
        let manifest_path = path.with_extension("toml");
        let manifest = read_optional(&manifest_path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let candidate = Candidate {
            name: &name,
            bytes: &bytes,
            manifest: manifest
                .as_deref()
                .map(|m| (m, manifest_path.display().to_string())),
            origin: Origin::File,
            path: Some(path.to_path_buf()),
        };
        self.load(candidate, false).map(|p| p.meta)
    }

    fn load_file(
        &self,
        name: &str,
        path: &Path,
        current: Option<&Entry>,
    ) -> Result<LoadOutcome, LoadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read(e.to_string()))?;
        let manifest_path = path.with_extension("toml");
        let manifest = read_optional(&manifest_path)?;
        let fingerprint = format!(
            "{}:{}",
            sha256_hex(&bytes),
            manifest
                .as_deref()
                .map(|m| sha256_hex(m.as_bytes()))
                .unwrap_or_default()
        );
        if let Some(entry) = current.filter(|e| e.fingerprint == fingerprint) {
            return Ok(LoadOutcome::Unchanged(entry.clone()));
        }
        let candidate = Candidate {
            name,
            bytes: &bytes,
            manifest: manifest
                .as_deref()
                .map(|m| (m, manifest_path.display().to_string())),
            origin: Origin::Directory,
            path: Some(path.to_path_buf()),
        };
        let plugin = Arc::new(self.load(candidate, true)?);
        Ok(LoadOutcome::Loaded(Entry {
            plugin,
            fingerprint,
        }))
    }

    /// The one loading path: checks, compiles, reads metadata, calls `info()`.
    fn load(&self, c: Candidate<'_>, use_cache: bool) -> Result<Plugin, LoadError> {
        check_name(c.name).map_err(LoadError::Inconsistent)?;
        inspect::precheck(c.bytes)?;
        let sha256 = sha256_hex(c.bytes);
        let (component, compiled) = if use_cache {
            self.runtime.compile(c.bytes, &sha256)?
        } else {
            (
                self.runtime.compile_uncached(c.bytes)?,
                CompileSource::Uncached,
            )
        };
        let inspection = inspect::inspect(&self.runtime.engine, &component)?;
        let kind = inspection.kind;

        let manifest = match &c.manifest {
            Some((text, file)) => {
                let m = Manifest::parse(text).map_err(|message| LoadError::Manifest {
                    file: file.clone(),
                    message,
                })?;
                if m.name != c.name {
                    return Err(LoadError::Manifest {
                        file: file.clone(),
                        message: format!(
                            "name `{}` does not match the plugin's file name `{}.wasm`",
                            m.name, c.name
                        ),
                    });
                }
                if m.kind != kind {
                    return Err(LoadError::Manifest {
                        file: file.clone(),
                        message: format!(
                            "kind `{}` does not match the component, which is a {kind} plugin",
                            m.kind
                        ),
                    });
                }
                Some(m)
            }
            None => None,
        };

        let mut meta = PluginMeta {
            name: c.name.to_string(),
            version: String::new(),
            kind,
            description: String::new(),
            hosts: Vec::new(),
            origin: c.origin,
            path: c.path.clone(),
            sha256,
            size_bytes: c.bytes.len() as u64,
            wit_version: inspection.wit_version.to_string(),
            sdk_version: inspect::sdk_version(c.bytes),
            metadata_from: MetadataSource::Info,
            compiled,
        };
        if let Some(m) = &manifest {
            meta.version = m.version.clone();
            meta.description = m.description.clone();
            meta.hosts = m.hosts.clone();
            meta.metadata_from = MetadataSource::Manifest;
        }

        // Call `info()` in a sandbox without network, whatever the hosts.
        let probe = Plugin::new(
            meta.clone(),
            inspection.wit,
            component.clone(),
            self.runtime.clone(),
            None,
        );
        let info = probe.info().map_err(|e| LoadError::Info(e.to_string()))?;
        let info_kind = Kind::from(info.kind);
        if info_kind != kind {
            return Err(LoadError::Inconsistent(format!(
                "`info()` says it is a {info_kind} plugin, but the component is a {kind} plugin"
            )));
        }
        if manifest.is_none() {
            meta.version = info.version;
            meta.description = info.description;
            meta.hosts = info.hosts;
        }
        let hosts = HostPatterns::new(&meta.hosts).map_err(LoadError::Inconsistent)?;
        meta.hosts = hosts.as_slice().to_vec();

        let http = if kind == Kind::Source {
            Some(
                HttpGate::new(
                    Arc::from(meta.name.as_str()),
                    hosts,
                    &self.runtime.limits,
                    self.runtime.http.clone(),
                )
                .map_err(LoadError::Setup)?,
            )
        } else {
            if !meta.hosts.is_empty() {
                tracing::warn!(plugin = %meta.name, "declares network hosts, but {kind} plugins get no network access");
            }
            None
        };
        Ok(Plugin::new(
            meta,
            inspection.wit,
            component,
            self.runtime.clone(),
            http,
        ))
    }
}

/// A plugin from the folder, with the hash of its `.wasm` and manifest, so
/// a reload can tell whether anything changed.
#[derive(Clone)]
struct Entry {
    plugin: Arc<Plugin>,
    fingerprint: String,
}

enum LoadOutcome {
    Unchanged(Entry),
    Loaded(Entry),
}

fn list_wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    files.sort();
    Ok(files)
}

fn read_optional(path: &Path) -> Result<Option<String>, LoadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LoadError::Read(format!("{}: {e}", path.display()))),
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
