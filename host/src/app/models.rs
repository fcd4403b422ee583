//! Naming a model: a local folder or a hub id, decided by one rule, then
//! found in the cache or pulled.
//!
//! Every face that takes a model (`tuner pull`, `tuner data stats
//! --tokenizer`, `?model=` on the data routes, a training config's
//! `model_name_or_path`, `tuner export --base`) goes through
//! [`ModelSpec::parse`], so the same text means the same model everywhere.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::App;
use crate::hub::{HubError, Progress, PullRequest, RepoId, RepoKind};
use crate::text::ModelFiles;

/// What a user typed to name a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A model folder on this machine (it may not exist).
    Folder(PathBuf),
    /// A repository id on a hub (`Qwen/Qwen3-0.6B`), validated.
    Hub(RepoId),
}

/// Why a model could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ModelLookupError {
    #[error("`model` is empty: give a local model folder or a model id (`Qwen/Qwen3-0.6B`)")]
    Empty,
    #[error("no model folder at `{0}`")]
    NoFolder(String),
    #[error("`{name}` is neither a model folder nor a model id: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(
        "`{name}` is neither a model folder nor a model in the cache ({cache}), nor complete \
         in the Hugging Face or ModelScope caches; download it first (`tuner pull {name}` or \
         POST /api/models/download)"
    )]
    NotCached { name: String, cache: String },
    #[error(
        "{dir}: no {file}; token statistics and rendering need the model's tokenizer.json and \
         tokenizer_config.json (with its chat template)"
    )]
    NoTokenizer { dir: String, file: &'static str },
    #[error("loading the tokenizer and chat template of `{name}`: {message}")]
    BadTokenizer { name: String, message: String },
    #[error("getting model {name}: {source}")]
    Pull {
        name: String,
        #[source]
        source: HubError,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ModelSpec {
    /// The one rule. An existing folder is that folder. Text that reads as
    /// a path (starts with `/`, `.` or `~`, has a backslash or more than one
    /// `/`, or is absolute) is a folder, even one that does not exist. Any
    /// other text is a hub id, and must be a valid one.
    pub fn parse(text: &str) -> Result<Self, ModelLookupError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ModelLookupError::Empty);
        }
        let path = Path::new(text);
        if path.is_dir() || looks_like_path(text) {
            return Ok(ModelSpec::Folder(path.to_path_buf()));
        }
        RepoId::parse(RepoKind::Model, text)
            .map(ModelSpec::Hub)
            .map_err(|e| ModelLookupError::InvalidName {
                name: text.to_string(),
                reason: match e {
                    HubError::InvalidName { reason, .. } => reason,
                    other => other.to_string(),
                },
            })
    }
}

/// Whether `text` is meant as a folder path rather than a hub id.
fn looks_like_path(text: &str) -> bool {
    text.starts_with(['/', '.', '~'])
        || text.contains('\\')
        || text.matches('/').count() > 1
        || Path::new(text).is_absolute()
}

/// What to do when a hub model is not in the cache.
pub enum WhenMissing<'a> {
    /// Answer [`ModelLookupError::NotCached`] (the data routes: a request
    /// never starts a download by the way).
    Fail,
    /// Pull it as `tuner pull` does, reporting to `progress`.
    Pull(&'a Progress),
}

impl App {
    /// The folder of the model `text` names: a folder as is, a hub id as its
    /// cached snapshot, pulled first when `missing` says so.
    pub fn model_dir(
        &self,
        text: &str,
        missing: WhenMissing<'_>,
    ) -> Result<PathBuf, ModelLookupError> {
        let repo = match ModelSpec::parse(text)? {
            ModelSpec::Folder(dir) if dir.is_dir() => return Ok(dir),
            ModelSpec::Folder(_) => return Err(ModelLookupError::NoFolder(text.to_string())),
            ModelSpec::Hub(repo) => repo,
        };
        let hub = self.hub()?;
        if let Some(dir) = hub.cached_snapshot(&repo) {
            return Ok(dir);
        }
        // Downloaded by transformers or the ModelScope SDK: used where it is.
        if let Some(copy) = hub.external_copy(&repo) {
            tracing::info!(
                "{}: using the copy in the {} cache, {}",
                repo.id,
                copy.origin.as_str(),
                copy.path.display()
            );
            return Ok(copy.path);
        }
        let progress = match missing {
            WhenMissing::Fail => {
                return Err(ModelLookupError::NotCached {
                    name: text.to_string(),
                    cache: hub.cache.root.display().to_string(),
                });
            }
            WhenMissing::Pull(progress) => progress,
        };
        let request = PullRequest {
            repo: repo.id.clone(),
            ..Default::default()
        };
        let report = crate::blocking::block_on(hub.pull(&request, progress))
            .map_err(|e| ModelLookupError::Other(e.into()))?
            .map_err(|source| ModelLookupError::Pull {
                name: text.to_string(),
                source,
            })?;
        Ok(report.path)
    }

    /// The chat template and tokenizer of the model `text` names (nothing
    /// is downloaded), loaded once and shared, and the folder they came from.
    pub fn model_files(&self, text: &str) -> Result<(PathBuf, Arc<ModelFiles>), ModelLookupError> {
        let dir = self.model_dir(text, WhenMissing::Fail)?;
        for file in ["tokenizer.json", "tokenizer_config.json"] {
            if !dir.join(file).is_file() {
                return Err(ModelLookupError::NoTokenizer {
                    dir: dir.display().to_string(),
                    file,
                });
            }
        }
        let files =
            self.model_files_cache()
                .get(&dir)
                .map_err(|e| ModelLookupError::BadTokenizer {
                    name: text.trim().to_string(),
                    message: e.to_string(),
                })?;
        Ok((dir, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_folders_and_hub_ids() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSpec::parse(existing).unwrap(),
            ModelSpec::Folder(dir.path().to_path_buf())
        );
        for path in ["./m", "../m", "/no/such", "~/m", "a/b/c", "a\\b"] {
            assert!(
                matches!(ModelSpec::parse(path).unwrap(), ModelSpec::Folder(_)),
                "{path}"
            );
        }
        match ModelSpec::parse(" Qwen/Qwen3-0.6B ").unwrap() {
            ModelSpec::Hub(repo) => assert_eq!(repo.id, "Qwen/Qwen3-0.6B"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ModelSpec::parse("Qwen/bad name"),
            Err(ModelLookupError::InvalidName { .. })
        ));
        assert!(matches!(
            ModelSpec::parse("  "),
            Err(ModelLookupError::Empty)
        ));
    }
}
