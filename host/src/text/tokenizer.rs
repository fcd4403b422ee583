//! The model's tokenizer: Hugging Face `tokenizer.json` through the
//! `tokenizers` crate (pure-Rust regex, no C build), with byte offsets so
//! trained character spans map onto tokens.

use std::path::{Path, PathBuf};

/// What can go wrong loading or using a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.json` could not be read or parsed.
    #[error("{}: cannot load tokenizer: {message}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Encoding failed (the tokenizer rejected the text).
    #[error("tokenizing: {0}")]
    Encode(String),
    /// Decoding failed (unknown ids).
    #[error("decoding tokens: {0}")]
    Decode(String),
}

/// Token ids of a text with the byte range each one came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Byte range of the source text per token (`start..end`).
    pub offsets: Vec<(usize, usize)>,
}

/// A loaded `tokenizer.json`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| TokenizerError::Load {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer { inner })
    }

    /// Loads `tokenizer.json` from a model directory.
    pub fn from_model_dir(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Encodes text as it appears in a rendered template: special tokens
    /// written in the text (`<|im_start|>`) become their ids, and nothing is
    /// added around it (the template already wrote any BOS), like
    /// transformers' `apply_chat_template(tokenize=True)`.
    pub fn encode(&self, text: &str) -> Result<Encoded, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(Encoded {
            ids: encoding.get_ids().to_vec(),
            offsets: encoding.get_offsets().to_vec(),
        })
    }

    /// Number of tokens of `text` (see [`Tokenizer::encode`]).
    pub fn count(&self, text: &str) -> Result<usize, TokenizerError> {
        Ok(self.encode(text)?.ids.len())
    }

    /// Text of token ids, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Text of token ids as a reader sees it: special tokens (`<|im_end|>`)
    /// are left out, as generation output is by default.
    pub fn decode_text(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The vocabulary entry of `id` (byte-level, e.g. `Ġhello`), if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token (`<|im_end|>`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
