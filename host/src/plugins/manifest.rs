//! `NAME.toml`: the optional manifest beside `NAME.wasm`.
//!
//! ```toml
//! name = "modelscope"
//! version = "0.1.0"
//! kind = "source"
//! description = "ModelScope hub"
//! hosts = ["modelscope.cn", "*.modelscope.cn"]
//! ```
//!
//! When present it takes precedence over the plugin's `info()`; this is
//! where a user reviews, or narrows, the hosts a plugin may reach.

use serde::Deserialize;

// Public: `manifest::Kind` is the kind a manifest declares (the same type).
pub use super::Kind;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    #[serde(default)]
    pub description: String,
    /// Network hosts the plugin may reach (`example.com`, `*.example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Manifest {
    /// Parses manifest text (a UTF-8 BOM is accepted).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let manifest: Manifest = toml::from_str(text).map_err(|e| e.to_string())?;
        check_name(&manifest.name)?;
        semver::Version::parse(&manifest.version)
            .map_err(|e| format!("version `{}`: {e}", manifest.version))?;
        Ok(manifest)
    }
}

/// Plugin names: 1-64 characters of `a-z`, `0-9`, `-`, `_`, starting with a
/// letter or digit. They appear in URLs and file names.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with(['-', '_'])
        // `/api/plugins/reload` is a route of its own.
        && name != "reload";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{name}` is not valid: use 1-64 characters of a-z, 0-9, `-` and `_`, \
             starting with a letter or digit (`reload` is reserved)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_with_hosts_parses() {
        let m = Manifest::parse(
            "name = \"hub\"\nversion = \"1.2.0\"\nkind = \"source\"\nhosts = [\"a.example\"]",
        )
        .unwrap();
        assert_eq!(m.kind, Kind::Source);
        assert_eq!(m.hosts, vec!["a.example"]);
    }

    #[test]
    fn unknown_manifest_key_is_named() {
        let err =
            Manifest::parse("name = \"x\"\nversion = \"1.0.0\"\nkind = \"format\"\nhost = []")
                .unwrap_err();
        assert!(err.contains("host"), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(check_name("../evil").is_err());
        assert!(check_name("Upper").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("ok-name_2").is_ok());
    }
}
