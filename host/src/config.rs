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
    /// in MiB (default 1024, at most 1048576).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_mib: Option<u64>,
    /// More names this server answers to in the `Host` header (host names or
    /// IP addresses, any port), besides loopback names and the bound address,
    /// e.g. a reverse proxy's public name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,
    /// Web origins (`scheme://host[:port]`) besides the server's own that may
    /// send state-changing requests, e.g. a dashboard on another port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
    /// Heavy requests (uploads, validation, token stats, rendered previews)
    /// served at once; more get 429 (default twice the CPU cores, 1..=1024).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_heavy_requests: Option<u32>,
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
        Self::parse_toml(text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the TOML text of a configuration file. Tables must be tables:
    /// `plugins = [1, 2]` is refused, not read as positional fields.
    pub fn parse_toml(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)?;
        for key in ["plugins", "server", "endpoints"] {
            if let Some(value) = table.get(key)
                && !value.is_table()
            {
                return Err(ConfigError::new(key, "must be a table").into());
            }
        }
        Ok(toml::from_str(text)?)
    }

    /// Parses a JSON configuration (`PUT /api/config`): an object of the
    /// keys of `config.toml`, tables as objects. An array, or an array where
    /// a table belongs, is refused (serde would read it as positional fields).
    pub fn from_json(value: serde_json::Value) -> Result<Self, ConfigError> {
        let Some(object) = value.as_object() else {
            return Err(ConfigError::new(
                "(body)",
                "the configuration must be a JSON object of `config.toml` keys",
            ));
        };
        for key in ["plugins", "server", "endpoints"] {
            if let Some(v) = object.get(key)
                && !(v.is_object() || v.is_null())
            {
                return Err(ConfigError::new(key, "must be an object"));
            }
        }
        serde_json::from_value(value).map_err(|e| {
            let message = e.to_string();
            // serde names the unknown or mistyped key in the message only.
            let key = message
                .split('`')
                .nth(1)
                .filter(|_| message.starts_with("unknown field"))
                .unwrap_or("(body)")
                .to_string();
            ConfigError::new(key, message)
        })
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("serialising the configuration")?;
        Ok(crate::fsio::write_atomically(path, text.as_bytes())?)
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
        take!(server.allowed_hosts);
        take!(server.allowed_origins);
        take!(server.max_heavy_requests);
    }

    /// Rejects values that cannot work or that would be dangerous (a system
    /// folder as the model cache, a cloud metadata address as an endpoint),
    /// naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(order) = &self.source_order {
            if order.is_empty() {
                return Err(ConfigError::new(
                    "source_order",
                    "must name at least one source",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for name in order {
                check_plugin_name("source_order", name)?;
                if !seen.insert(name.as_str()) {
                    return Err(ConfigError::new(
                        "source_order",
                        format!("`{name}` is listed twice"),
                    ));
                }
            }
        }
        for (key, dir) in [
            ("model_cache_dir", &self.model_cache_dir),
            ("data_dir", &self.data_dir),
            ("plugin_dir", &self.plugin_dir),
        ] {
            if let Some(dir) = dir {
                check_dir(key, dir)?;
            }
        }
        if let Some(model) = &self.default_model {
            let model = model.trim();
            if model.is_empty() || model.len() > 512 || model.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    "default_model",
                    "must be a model id such as `Qwen/Qwen3-0.6B` (not empty, at most 512 \
                     characters, no control characters)",
                ));
            }
        }
        for (source, url) in &self.endpoints {
            let key = format!("endpoints.{source}");
            check_plugin_name(&key, source)?;
            check_endpoint(&key, url)?;
        }
        if let Some(host) = &self.server.host {
            host.parse::<std::net::IpAddr>().map_err(|_| {
                ConfigError::new(
                    "server.host",
                    format!("`{host}` is not an IP address (e.g. 127.0.0.1)"),
                )
            })?;
        }
        if self.server.port == Some(0) {
            return Err(ConfigError::new("server.port", "0 is outside 1..=65535"));
        }
        if let Some(m) = self.server.max_upload_mib {
            ensure_range("server.max_upload_mib", m, 1, MAX_UPLOAD_MIB)?;
        }
        if let Some(n) = self.server.max_heavy_requests {
            ensure_range("server.max_heavy_requests", n.into(), 1, 1024)?;
        }
        if let Some(hosts) = &self.server.allowed_hosts {
            for host in hosts {
                check_allowed_host(host)?;
            }
        }
        if let Some(origins) = &self.server.allowed_origins {
            for origin in origins {
                normalize_origin(origin).map_err(|e| {
                    ConfigError::new("server.allowed_origins", format!("`{origin}`: {e}"))
                })?;
            }
        }
        let p = &self.plugins;
        if let Some(m) = p.http_max_body_mib {
            ensure_range("plugins.http_max_body_mib", m, 1, 4096)?;
        }
        if let Some(m) = p.memory_limit_mib {
            ensure_range("plugins.memory_limit_mib", m, 16, 65536)?;
        }
        for (key, value) in [
            ("plugins.call_timeout_secs", p.call_timeout_secs),
            ("plugins.load_timeout_secs", p.load_timeout_secs),
            ("plugins.http_timeout_secs", p.http_timeout_secs),
        ] {
            if let Some(v) = value
                && !(v.is_finite() && v > 0.0 && v <= 86_400.0)
            {
                return Err(ConfigError::new(
                    key,
                    format!("{v} must be a positive number of seconds (at most a day)"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that every source named in `source_order` and `endpoints` is
    /// one of `sources` (the installed source plugins).
    pub fn validate_sources(&self, sources: &[String]) -> Result<(), ConfigError> {
        let known = |key: &str, name: &str| {
            if sources.iter().any(|s| s == name) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    key,
                    format!(
                        "`{name}` is not an installed source plugin (installed: {})",
                        sources.join(", ")
                    ),
                ))
            }
        };
        for name in self.source_order.iter().flatten() {
            known("source_order", name)?;
        }
        for name in self.endpoints.keys() {
            known(&format!("endpoints.{name}"), name)?;
        }
        Ok(())
    }
}

/// Largest `server.max_upload_mib`: 1 TiB.
pub const MAX_UPLOAD_MIB: u64 = 1 << 20;

/// A configuration value that was refused, with the key it was given for
/// (`plugins.memory_limit_mib`). Displays as `key: message`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key, dotted for tables (`server.port`).
    pub key: String,
    /// What is wrong with its value.
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

fn ensure_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("{value} is outside {min}..={max}"),
        ))
    }
}

fn check_plugin_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("`{name}` is not a plugin name (letters, digits, `-`, `_`)"),
        ))
    }
}

/// Folders that may not be used, nor anything inside them.
const SYSTEM_TREES: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/System",
    "/Library",
    "/Applications",
    "/private/etc",
    "/private/var/db",
];
/// Folders that may not be used themselves (their subfolders may); for the
/// ones ending in `/*`, the same goes for each folder directly inside.
const SHARED_ROOTS: &[&str] = &[
    "/",
    "/var",
    "/var/*",
    "/tmp",
    "/home",
    "/home/*",
    "/root",
    "/Users",
    "/Users/*",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
    "/private",
    "/private/tmp",
    "/private/var",
    "/private/var/*",
];

/// Checks a folder setting: absolute, no `..`, not a system folder, not a
/// shared root such as `/`, `/var`, `/tmp` or a home folder itself (tuner
/// creates, fills and deletes inside these folders).
pub fn check_dir(key: &str, dir: &Path) -> Result<(), ConfigError> {
    use std::path::Component;
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    if !dir.is_absolute() {
        return Err(ConfigError::new(
            key,
            format!("`{shown}` is not an absolute path"),
        ));
    }
    if dir.components().any(|c| c == Component::ParentDir) {
        return Err(ConfigError::new(
            key,
            format!("`{shown}` must not contain `..`"),
        ));
    }
    let lexical: PathBuf = dir.components().collect();
    let mut candidates = vec![lexical.clone()];
    // A link to a system folder is refused like the folder itself.
    if let Ok(real) = std::fs::canonicalize(&lexical)
        && real != lexical
    {
        candidates.push(real);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute() && h.components().count() > 1);
    for path in &candidates {
        for tree in SYSTEM_TREES {
            if path.starts_with(tree) {
                return Err(ConfigError::new(
                    key,
                    format!("`{shown}` is inside the system folder {tree}"),
                ));
            }
        }
        let shared = SHARED_ROOTS
            .iter()
            .any(|root| match root.strip_suffix("/*") {
                Some(parent) => path.parent() == Some(Path::new(parent)),
                None => path == Path::new(root),
            })
            || home.as_deref() == Some(path.as_path());
        if shared {
            return Err(ConfigError::new(
                key,
                format!(
                    "`{shown}` is a shared or system folder; use a folder of its own inside it \
                     (e.g. `{}`)",
                    path.join("tuner").display()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a hub endpoint: an `http`/`https` URL without user name or
/// password, not pointing at a link-local or cloud metadata address.
pub fn check_endpoint(key: &str, endpoint: &str) -> Result<(), ConfigError> {
    let err = |m: String| ConfigError::new(key, format!("`{endpoint}`: {m}"));
    let url = url::Url::parse(endpoint.trim()).map_err(|e| err(format!("not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(format!(
            "scheme `{}` is not allowed; use http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(
            "must not carry a user name or password (tokens go in HF_TOKEN or \
             MODELSCOPE_API_TOKEN)"
                .into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err("must not have a query or fragment".into()));
    }
    let blocked = match url.host() {
        None => return Err(err("has no host".into())),
        Some(url::Host::Ipv4(ip)) => {
            ip.is_link_local() || is_metadata_v4(ip) || ip.is_unspecified()
        }
        Some(url::Host::Ipv6(ip)) => {
            let mapped = ip.to_ipv4_mapped();
            (ip.segments()[0] & 0xffc0) == 0xfe80
                || ip.is_unspecified()
                || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
                || mapped.is_some_and(|v4| v4.is_link_local() || is_metadata_v4(v4))
        }
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            matches!(
                name.as_str(),
                "metadata"
                    | "metadata.google.internal"
                    | "instance-data"
                    | "instance-data.ec2.internal"
            )
        }
    };
    if blocked {
        return Err(err(
            "is a link-local or cloud metadata address, which is never a model hub".into(),
        ));
    }
    Ok(())
}

fn is_metadata_v4(ip: std::net::Ipv4Addr) -> bool {
    ip.octets() == [169, 254, 169, 254] || ip.octets() == [100, 100, 100, 200]
}

/// Checks one `server.allowed_hosts` entry: a host name or an IP address,
/// without scheme, port or path.
fn check_allowed_host(host: &str) -> Result<(), ConfigError> {
    let key = "server.allowed_hosts";
    let h = host.trim();
    let bare = h
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(h);
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("`{host}` is not a host name or IP address (no scheme, port or path)"),
        ))
    }
}

/// The canonical form of a web origin (`http://host:port`, lower case, the
/// scheme's default port left out), or why it is not one.
pub fn normalize_origin(origin: &str) -> Result<String, String> {
    let url = url::Url::parse(origin.trim()).map_err(|e| format!("not an origin ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("an origin is http:// or https://".into());
    }
    if url.host().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err("an origin is `scheme://host[:port]`, nothing else".into());
    }
    Ok(url.origin().ascii_serialization())
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
    /// Extra `Host` names accepted besides loopback and the bound address.
    pub allowed_hosts: Vec<String>,
    /// Extra origins allowed to send state-changing requests (normalised).
    pub allowed_origins: Vec<String>,
    /// Heavy requests served at once.
    pub max_heavy_requests: usize,
}

/// Default `server.max_heavy_requests`: twice the CPU cores (at least 2).
pub fn default_max_heavy_requests() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(2)
        .clamp(2, 1024)
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
                max_upload_bytes: file
                    .server
                    .max_upload_mib
                    .unwrap_or(1024)
                    .min(MAX_UPLOAD_MIB)
                    .checked_mul(1 << 20)
                    .context("server.max_upload_mib is too large")?,
                allowed_hosts: file
                    .server
                    .allowed_hosts
                    .iter()
                    .flatten()
                    .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                allowed_origins: file
                    .server
                    .allowed_origins
                    .iter()
                    .flatten()
                    .filter_map(|o| normalize_origin(o).ok())
                    .collect(),
                max_heavy_requests: file
                    .server
                    .max_heavy_requests
                    .map_or_else(default_max_heavy_requests, |n| n.clamp(1, 1024) as usize),
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
    fn system_folders_and_shared_roots_are_refused() {
        for bad in [
            "/",
            "/etc",
            "/etc/tuner",
            "/usr/local/x",
            "/var",
            "/var/lib",
            "/tmp",
            "/home",
            "/home/someone",
            "/proc/self/cwd",
            "rel",
            "/srv/../etc",
            "",
        ] {
            assert!(check_dir("data_dir", Path::new(bad)).is_err(), "{bad}");
        }
        for ok in [
            "/var/lib/tuner",
            "/var/tmp/tuner",
            "/home/someone/models",
            "/srv/tuner/",
        ] {
            assert!(check_dir("data_dir", Path::new(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn endpoints_are_web_urls_away_from_metadata_services() {
        for bad in [
            "gopher://x.example",
            "file:///etc/passwd",
            "http://169.254.169.254/",
            "http://169.254.3.4",
            "http://[fe80::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://metadata.google.internal./",
            "http://100.100.100.200",
            "https://u:p@hub.example",
            "not a url",
        ] {
            assert!(check_endpoint("endpoints.x", bad).is_err(), "{bad}");
        }
        for ok in [
            "https://hf-mirror.com",
            "http://10.0.0.7:8080/hub",
            "http://127.0.0.1:9",
        ] {
            assert!(check_endpoint("endpoints.x", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn tables_and_bodies_must_have_their_shape() {
        assert!(ConfigFile::parse_toml("plugins = [64]").is_err());
        let err = ConfigFile::from_json(serde_json::json!(["modelscope"])).unwrap_err();
        assert_eq!(err.key, "(body)");
        let err = ConfigFile::from_json(serde_json::json!({"server": [1]})).unwrap_err();
        assert_eq!(err.key, "server");
        let big: ConfigFile = toml::from_str("[server]\nmax_upload_mib = 17592186044417").unwrap();
        assert_eq!(big.validate().unwrap_err().key, "server.max_upload_mib");
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
