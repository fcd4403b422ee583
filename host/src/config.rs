//! Configuration: the `config.toml` file in the home folder, with
//! environment variables on top.
//!
//! Precedence, highest first: command-line flags (applied by the CLI), then
//! environment variables, then the file, then built-in defaults. The CLI and
//! `tuner serve` read the same file; `PUT /api/config` writes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::home::Home;
use crate::plugins::PluginLimits;

/// The contents of `config.toml`. Every key is optional; unknown keys are an
/// error naming the key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Model sources in the order they are tried, e.g. `["modelscope", "huggingface"]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_order: Option<Vec<String>>,
    /// Where downloaded models live (overridden by `MODEL_CACHE_DIR`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub model_cache_dir: Option<PathBuf>,
    /// Where stored datasets live.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub data_dir: Option<PathBuf>,
    /// The user plugin folder (overridden by `TUNER_PLUGIN_DIR` and `--plugin-dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub plugin_dir: Option<PathBuf>,
    /// Let plugins reach private and loopback addresses (overridden by
    /// `TUNER_ALLOW_PRIVATE_HOSTS`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_hosts: Option<bool>,
    /// The model used when a command names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Hub endpoint per source plugin, e.g. `mirror = "https://hf-mirror.com"`
    /// (overridden by `HF_ENDPOINT`, `MODELSCOPE_DOMAIN`, `TUNER_MIRROR_ENDPOINT`).
    /// The host of a configured endpoint is granted to that plugin.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    /// Sandbox limits for plugins.
    #[serde(skip_serializing_if = "PluginLimitsFile::is_empty")]
    pub plugins: PluginLimitsFile,
    /// `tuner serve` defaults.
    #[serde(skip_serializing_if = "ServerFile::is_empty")]
    pub server: ServerFile,
}

/// `[plugins]` in `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PluginLimitsFile {
    /// Linear memory a plugin instance may use, in MiB (default 512).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u64>,
    /// Time one plugin call may run, in seconds (default 30).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_timeout_secs: Option<f64>,
    /// Time a plugin's `info()` may take while loading, in seconds (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_timeout_secs: Option<f64>,
    /// Time one HTTP request from a plugin may take, in seconds (default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_timeout_secs: Option<f64>,
    /// Largest HTTP response body a plugin may receive, in MiB (default 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_max_body_mib: Option<u64>,
}

impl PluginLimitsFile {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// `[server]` in `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// Address to bind (default `127.0.0.1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port to bind (default 8000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Largest data upload (`POST /api/data/upload`, `/api/data/validate`)
    /// in MiB (default 1024).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_mib: Option<u64>,
}

impl ServerFile {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl ConfigFile {
    /// Reads the file; a missing file is an empty configuration.
    pub fn read(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        toml::from_str(text).with_context(|| format!("in {}", path.display()))
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("serialising the configuration")?;
        tuner_wasm_build::write_atomically(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Overlays the keys set in `patch` onto `self`.
    pub fn merge(&mut self, patch: ConfigFile) {
        macro_rules! take {
            ($($field:ident).+) => {
                if patch.$($field).+.is_some() {
                    self.$($field).+ = patch.$($field).+;
                }
            };
        }
        take!(source_order);
        take!(model_cache_dir);
        take!(data_dir);
        take!(plugin_dir);
        take!(allow_private_hosts);
        take!(default_model);
        self.endpoints.extend(patch.endpoints);
        take!(plugins.memory_limit_mib);
        take!(plugins.call_timeout_secs);
        take!(plugins.load_timeout_secs);
        take!(plugins.http_timeout_secs);
        take!(plugins.http_max_body_mib);
        take!(server.host);
        take!(server.port);
        take!(server.max_upload_mib);
    }

    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<()> {
        if let Some(order) = &self.source_order {
            anyhow::ensure!(
                !order.is_empty(),
                "source_order: must name at least one source"
            );
        }
        if let Some(host) = &self.server.host {
            host.parse::<std::net::IpAddr>().map_err(|_| {
                anyhow::anyhow!("server.host: `{host}` is not an IP address (e.g. 127.0.0.1)")
            })?;
        }
        let p = &self.plugins;
        if let Some(m) = p.http_max_body_mib {
            anyhow::ensure!(
                (1..=4096).contains(&m),
                "plugins.http_max_body_mib: {m} is outside 1..=4096"
            );
        }
        if let Some(m) = p.memory_limit_mib {
            anyhow::ensure!(
                (16..=65536).contains(&m),
                "plugins.memory_limit_mib: {m} is outside 16..=65536"
            );
        }
        for (key, value) in [
            ("plugins.call_timeout_secs", p.call_timeout_secs),
            ("plugins.load_timeout_secs", p.load_timeout_secs),
            ("plugins.http_timeout_secs", p.http_timeout_secs),
        ] {
            if let Some(v) = value {
                anyhow::ensure!(
                    v.is_finite() && v > 0.0 && v <= 86_400.0,
                    "{key}: {v} must be a positive number of seconds (at most a day)"
                );
            }
        }
        Ok(())
    }
}

/// The effective configuration: file, environment and defaults combined.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Settings {
    /// The configuration file these settings were read from.
    #[schema(value_type = String)]
    pub config_file: PathBuf,
    /// `TUNER_HOME`, when set.
    #[schema(value_type = Option<String>)]
    pub home: Option<PathBuf>,
    pub source_order: Vec<String>,
    #[schema(value_type = String)]
    pub model_cache_dir: PathBuf,
    #[schema(value_type = String)]
    pub data_dir: PathBuf,
    #[schema(value_type = String)]
    pub plugin_dir: PathBuf,
    #[schema(value_type = String)]
    pub database: PathBuf,
    #[schema(value_type = String)]
    pub compile_cache_dir: PathBuf,
    pub allow_private_hosts: bool,
    pub default_model: String,
    /// Hub endpoints chosen by the user, per source plugin (file, then
    /// `HF_ENDPOINT` → huggingface, `MODELSCOPE_DOMAIN` → modelscope,
    /// `TUNER_MIRROR_ENDPOINT` → mirror). Sources not listed use their default.
    pub endpoints: BTreeMap<String, String>,
    pub plugins: EffectiveLimits,
    pub server: EffectiveServer,
    /// Keys whose value comes from the environment or the command line,
    /// with the variable or flag that set it.
    pub overridden: BTreeMap<String, String>,
}

/// Plugin limits as applied.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EffectiveLimits {
    pub memory_limit_mib: u64,
    pub call_timeout_secs: f64,
    pub load_timeout_secs: f64,
    pub http_timeout_secs: f64,
    pub http_max_body_mib: u64,
}

/// Server address as applied.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EffectiveServer {
    pub host: String,
    pub port: u16,
    /// Largest data upload, in bytes.
    pub max_upload_bytes: u64,
}

/// The source order when nothing is configured: ModelScope first.
pub const DEFAULT_SOURCE_ORDER: [&str; 2] = ["modelscope", "huggingface"];
/// The model used when nothing is configured.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen3-0.6B";

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn env_flag(key: &str) -> Result<Option<bool>> {
    match env_nonempty(key) {
        None => Ok(None),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => anyhow::bail!("{key}={v}: expected true or false (1/0, yes/no, on/off)"),
        },
    }
}

impl Settings {
    /// Reads the configuration file of `home` and applies the environment.
    pub fn load(home: &Home) -> Result<Self> {
        let file = ConfigFile::read(&home.config_file)?;
        file.validate()
            .with_context(|| format!("in {}", home.config_file.display()))?;
        Self::resolve(home, &file)
    }

    /// Combines `file` with the environment and defaults.
    pub fn resolve(home: &Home, file: &ConfigFile) -> Result<Self> {
        let mut overridden = BTreeMap::new();
        let mut from_env = |key: &str, var: &str| {
            overridden.insert(key.to_string(), format!("environment variable {var}"));
        };

        let mut source_order = file
            .source_order
            .clone()
            .unwrap_or_else(|| DEFAULT_SOURCE_ORDER.map(String::from).to_vec());
        // The original tool's switch: USE_MODELSCOPE=false puts Hugging Face first.
        if let Some(use_modelscope) = env_flag("USE_MODELSCOPE")? {
            let first = if use_modelscope {
                "modelscope"
            } else {
                "huggingface"
            };
            if let Some(pos) = source_order.iter().position(|s| s == first) {
                let s = source_order.remove(pos);
                source_order.insert(0, s);
            }
            from_env("source_order", "USE_MODELSCOPE");
        }

        let model_cache_dir = match env_nonempty("MODEL_CACHE_DIR") {
            Some(dir) => {
                from_env("model_cache_dir", "MODEL_CACHE_DIR");
                PathBuf::from(dir)
            }
            None => file
                .model_cache_dir
                .clone()
                .unwrap_or_else(|| home.model_cache_dir.clone()),
        };
        let plugin_dir = match env_nonempty("TUNER_PLUGIN_DIR") {
            Some(dir) => {
                from_env("plugin_dir", "TUNER_PLUGIN_DIR");
                PathBuf::from(dir)
            }
            None => file
                .plugin_dir
                .clone()
                .unwrap_or_else(|| home.plugin_dir.clone()),
        };
        let allow_private_hosts = match env_flag("TUNER_ALLOW_PRIVATE_HOSTS")? {
            Some(v) => {
                from_env("allow_private_hosts", "TUNER_ALLOW_PRIVATE_HOSTS");
                v
            }
            None => file.allow_private_hosts.unwrap_or(false),
        };

        let mut endpoints = file.endpoints.clone();
        for (source, var) in [
            ("huggingface", "HF_ENDPOINT"),
            ("modelscope", "MODELSCOPE_DOMAIN"),
            ("mirror", "TUNER_MIRROR_ENDPOINT"),
        ] {
            if let Some(v) = env_nonempty(var) {
                let v = v.trim().trim_end_matches('/');
                // MODELSCOPE_DOMAIN is a bare host name in the modelscope SDK.
                let url = if v.contains("://") {
                    v.to_string()
                } else {
                    format!("https://{v}")
                };
                endpoints.insert(source.to_string(), url);
                from_env(&format!("endpoints.{source}"), var);
            }
        }

        let defaults = PluginLimits::default();
        let p = &file.plugins;
        let plugins = EffectiveLimits {
            memory_limit_mib: p.memory_limit_mib.unwrap_or(defaults.memory_bytes >> 20),
            call_timeout_secs: p
                .call_timeout_secs
                .unwrap_or(defaults.call_timeout.as_secs_f64()),
            load_timeout_secs: p
                .load_timeout_secs
                .unwrap_or(defaults.load_timeout.as_secs_f64()),
            http_timeout_secs: p
                .http_timeout_secs
                .unwrap_or(defaults.http_timeout.as_secs_f64()),
            http_max_body_mib: p.http_max_body_mib.unwrap_or(defaults.http_max_body >> 20),
        };

        Ok(Self {
            config_file: home.config_file.clone(),
            home: home.root.clone(),
            source_order,
            model_cache_dir,
            data_dir: file
                .data_dir
                .clone()
                .unwrap_or_else(|| home.data_dir.clone()),
            plugin_dir,
            database: home.database.clone(),
            compile_cache_dir: home.compile_cache_dir.clone(),
            allow_private_hosts,
            default_model: file
                .default_model
                .clone()
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            endpoints,
            plugins,
            server: EffectiveServer {
                host: file
                    .server
                    .host
                    .clone()
                    .unwrap_or_else(|| "127.0.0.1".into()),
                port: file.server.port.unwrap_or(8000),
                max_upload_bytes: file.server.max_upload_mib.unwrap_or(1024) << 20,
            },
            overridden,
        })
    }

    /// The sandbox limits to give the plugin runtime.
    pub fn plugin_limits(&self) -> PluginLimits {
        let p = &self.plugins;
        PluginLimits {
            memory_bytes: p.memory_limit_mib << 20,
            call_timeout: Duration::from_secs_f64(p.call_timeout_secs),
            load_timeout: Duration::from_secs_f64(p.load_timeout_secs),
            http_timeout: Duration::from_secs_f64(p.http_timeout_secs),
            http_max_body: p.http_max_body_mib << 20,
            allow_private_hosts: self.allow_private_hosts,
            ..PluginLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = toml::from_str::<ConfigFile>("sorce_order = []").unwrap_err();
        assert!(err.to_string().contains("sorce_order"), "{err}");
    }

    #[test]
    fn merge_keeps_unset_keys() {
        let mut base: ConfigFile =
            toml::from_str("default_model = \"a\"\n[plugins]\nmemory_limit_mib = 64").unwrap();
        let patch: ConfigFile = toml::from_str("[server]\nport = 9000").unwrap();
        base.merge(patch);
        assert_eq!(base.default_model.as_deref(), Some("a"));
        assert_eq!(base.plugins.memory_limit_mib, Some(64));
        assert_eq!(base.server.port, Some(9000));
    }

    #[test]
    fn validate_names_the_bad_key() {
        let file: ConfigFile = toml::from_str("[plugins]\ncall_timeout_secs = -1").unwrap();
        let err = file.validate().unwrap_err().to_string();
        assert!(err.contains("plugins.call_timeout_secs"), "{err}");
    }

    #[test]
    fn file_values_survive_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        let file: ConfigFile =
            toml::from_str("source_order = [\"huggingface\"]\n[server]\nport = 8123").unwrap();
        file.write(&path).unwrap();
        assert_eq!(ConfigFile::read(&path).unwrap(), file);
    }
}
