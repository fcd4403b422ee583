//! Repository names: validation and the cache folder they map to.

use serde::Serialize;
use utoipa::ToSchema;

use super::HubError;

/// Whether a repository holds a model or a dataset: the source plugins'
/// `repo-kind`, which the cache also lays out by.
pub use crate::plugins::source::RepoKind;

impl RepoKind {
    /// The Hugging Face cache folder prefix (`models`, `datasets`).
    pub fn folder_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A validated hub repository id, `org/name` (or a bare `name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub struct RepoId {
    pub kind: RepoKind,
    /// As the user wrote it, normalised to `org/name`.
    pub id: String,
}

impl RepoId {
    /// Parses `Qwen/Qwen3-0.6B`, also the original tool's `Qwen_Qwen3-0.6B`
    /// (first `_` as the separator, when there is no `/`). Refuses `..`,
    /// absolute paths, backslashes, empty parts and odd characters.
    pub fn parse(kind: RepoKind, text: &str) -> Result<Self, HubError> {
        let t = text.trim();
        let bad = |why: &str| HubError::InvalidName {
            name: text.to_string(),
            reason: why.to_string(),
        };
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if t.starts_with('/') || t.contains('\\') || t.contains(':') {
            return Err(bad(
                "absolute paths and drive letters are not repository ids",
            ));
        }
        let parts: Vec<&str> = t.split('/').collect();
        if parts.len() > 2 {
            return Err(bad("expected `org/name`"));
        }
        for p in &parts {
            if p.is_empty() || *p == "." || *p == ".." || p.contains("..") {
                return Err(bad("`..`, `.` and empty parts are not allowed"));
            }
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(bad("only letters, digits, `-`, `_` and `.` are allowed"));
            }
            if p.len() > 96 {
                return Err(bad("a part is longer than 96 characters"));
            }
        }
        // Implied by the rules above; kept so an edit of them cannot let a
        // name out of the cache folder.
        crate::paths::check_relative("repository id", t).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            kind,
            id: t.to_string(),
        })
    }

    /// Parses a name the original tool may have written as `org_name`:
    /// if `text` has no `/`, the caller may try [`RepoId::underscore_alias`].
    pub fn underscore_alias(&self) -> Option<Self> {
        if self.id.contains('/') {
            return None;
        }
        let (org, name) = self.id.split_once('_')?;
        Self::parse(self.kind, &format!("{org}/{name}")).ok()
    }

    /// The cache folder name: `models--Qwen--Qwen3-0.6B`.
    pub fn folder(&self) -> String {
        format!(
            "{}--{}",
            self.kind.folder_prefix(),
            self.id.replace('/', "--")
        )
    }

    /// The inverse of [`RepoId::folder`].
    pub fn from_folder(folder: &str) -> Option<Self> {
        let (kind, rest) = if let Some(r) = folder.strip_prefix("models--") {
            (RepoKind::Model, r)
        } else if let Some(r) = folder.strip_prefix("datasets--") {
            (RepoKind::Dataset, r)
        } else {
            return None;
        };
        Self::parse(kind, &rest.replacen("--", "/", 1)).ok()
    }
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// Checks a path inside a repository (from a hub listing) before it is
/// joined to a folder: relative, `/`-separated, no `..`
/// ([`crate::paths::check_relative`]).
pub fn check_repo_path(path: &str) -> Result<(), HubError> {
    crate::paths::check_relative("file path", path).map_err(HubError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(RepoId::parse(RepoKind::Model, "Qwen/Qwen3-0.6B").is_ok());
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../b",
            "a/b/c",
            "",
            "a\\b",
            "C:x",
            "a/..",
        ] {
            assert!(RepoId::parse(RepoKind::Model, bad).is_err(), "{bad}");
        }
        let r = RepoId::parse(RepoKind::Model, "Qwen_Qwen3-0.6B").unwrap();
        assert_eq!(r.underscore_alias().unwrap().id, "Qwen/Qwen3-0.6B");
    }

    #[test]
    fn folder_round_trips() {
        let r = RepoId::parse(RepoKind::Dataset, "AI-ModelScope/alpaca-gpt4-data-zh").unwrap();
        assert_eq!(r.folder(), "datasets--AI-ModelScope--alpaca-gpt4-data-zh");
        assert_eq!(RepoId::from_folder(&r.folder()).unwrap(), r);
        assert!(check_repo_path("a/../b").is_err());
        assert!(check_repo_path("sub/model.safetensors").is_ok());
    }
}
