//! Decoding data files to text before they reach a format plugin.
//!
//! A BOM decides first (UTF-8, UTF-16 LE/BE). Without one the file must be
//! valid UTF-8; if it is not, GB18030 (a superset of GBK, which Excel uses
//! for Chinese CSV) is tried. Bytes valid in neither are an error naming
//! the byte offset: mojibake never reaches training silently.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use encoding_rs::{DecoderResult, Encoding, GB18030, UTF_8, UTF_16BE, UTF_16LE};
use serde::Serialize;
use utoipa::ToSchema;

/// Bytes read and decoded per chunk handed to a plugin.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The text encoding of a file, as reported to users.
///
/// One spelling everywhere (`data validate`/`inspect`, the stored dataset
/// record, the API and the docs): the WHATWG Encoding Standard's labels, as
/// encoding_rs knows them, in lower case (`utf-8`, `utf-16le`, `utf-16be`,
/// `gb18030`), plus `utf-8-bom` for UTF-8 that starts with a byte order mark.
/// The serde names are the same strings as [`TextEncoding::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum TextEncoding {
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "utf-8-bom")]
    Utf8Bom,
    #[serde(rename = "utf-16le")]
    Utf16le,
    #[serde(rename = "utf-16be")]
    Utf16be,
    #[serde(rename = "gb18030")]
    Gb18030,
    /// Not text: a binary format (Parquet) read by its bytes.
    #[serde(rename = "binary")]
    Binary,
}

impl std::fmt::Display for TextEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TextEncoding {
    /// Every encoding tuner reads.
    pub const ALL: [TextEncoding; 5] = [
        TextEncoding::Utf8,
        TextEncoding::Utf8Bom,
        TextEncoding::Utf16le,
        TextEncoding::Utf16be,
        TextEncoding::Gb18030,
    ];

    /// The name users see (see the type's docs).
    pub fn name(self) -> &'static str {
        match self {
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Utf8Bom => "utf-8-bom",
            TextEncoding::Utf16le => "utf-16le",
            TextEncoding::Utf16be => "utf-16be",
            TextEncoding::Gb18030 => "gb18030",
            TextEncoding::Binary => "binary",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            TextEncoding::Utf8 | TextEncoding::Utf8Bom => UTF_8,
            TextEncoding::Utf16le => UTF_16LE,
            TextEncoding::Utf16be => UTF_16BE,
            TextEncoding::Gb18030 => GB18030,
            // `sniff` never answers `Binary`: binary files go to a byte
            // parser undecoded (`load::load_bytes`), never through `Chunks`.
            TextEncoding::Binary => unreachable!("binary files are not decoded"),
        }
    }
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: invalid {encoding} at byte offset {offset}{hint}; re-save the file as UTF-8")]
    Invalid {
        path: String,
        encoding: &'static str,
        offset: u64,
        hint: &'static str,
    },
}

/// Determines the encoding of the file at `path` (reading it once when it
/// has no BOM, to check it is valid UTF-8 throughout).
pub fn sniff(path: &Path) -> Result<TextEncoding, DecodeError> {
    let io = |source| DecodeError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = BufReader::with_capacity(CHUNK_BYTES, File::open(path).map_err(io)?);
    let mut head = [0u8; 3];
    let mut got = 0;
    while got < 3 {
        let n = file.read(&mut head[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    match &head[..got] {
        [0xEF, 0xBB, 0xBF] => return Ok(TextEncoding::Utf8Bom),
        [0xFF, 0xFE, ..] => return Ok(TextEncoding::Utf16le),
        [0xFE, 0xFF, ..] => return Ok(TextEncoding::Utf16be),
        _ => {}
    }
    // Without a BOM: UTF-8 if every byte is, else GB18030 if every byte is.
    match first_invalid_utf8(path)? {
        None => Ok(TextEncoding::Utf8),
        Some(utf8_offset) => match first_invalid(path, GB18030)? {
            None => Ok(TextEncoding::Gb18030),
            Some(_) => Err(DecodeError::Invalid {
                path: path.display().to_string(),
                encoding: "UTF-8",
                offset: utf8_offset,
                hint: " (not GB18030/GBK either)",
            }),
        },
    }
}

/// The offset of the first byte that is not UTF-8, if any. Validates the
/// raw bytes in place (no decoding into a new buffer): this pass runs over
/// every file without a BOM.
fn first_invalid_utf8(path: &Path) -> Result<Option<u64>, DecodeError> {
    let io = |source| DecodeError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    // Bytes of a sequence cut by the previous read, moved to the front.
    let mut carry = 0usize;
    let mut offset = 0u64;
    loop {
        let n = match file.read(&mut buf[carry..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if n == 0 {
            return Ok((carry > 0).then_some(offset));
        }
        let len = carry + n;
        // encoding_rs validates with SIMD (simdutf8); `str::from_utf8` falls
        // back to a byte loop on non-ASCII text and made this pass cost as
        // much as the parse on Chinese data.
        let valid = Encoding::utf8_valid_up_to(&buf[..len]);
        if valid == len {
            offset += len as u64;
            carry = 0;
            continue;
        }
        // Invalid, or a sequence cut by the end of the read: the bytes from
        // `valid` on tell which (`error_len` is `None` for a cut sequence).
        match std::str::from_utf8(&buf[valid..len]) {
            Err(e) if e.error_len().is_some() => {
                return Ok(Some(offset + (valid + e.valid_up_to()) as u64));
            }
            _ => {
                buf.copy_within(valid..len, 0);
                carry = len - valid;
                offset += valid as u64;
            }
        }
    }
}

/// The offset of the first byte `encoding` rejects, if any.
fn first_invalid(path: &Path, encoding: &'static Encoding) -> Result<Option<u64>, DecodeError> {
    let mut chunks = Chunks::open(path, encoding, false)?;
    for chunk in chunks.by_ref() {
        drop(chunk);
    }
    match chunks.error.take() {
        None => Ok(None),
        Some(DecodeError::Invalid { offset, .. }) => Ok(Some(offset)),
        Some(other) => Err(other),
    }
}

/// Decoded text of a file in chunks of about [`CHUNK_BYTES`]. Iteration
/// stops at the first error, which is then in [`Chunks::error`].
pub struct Chunks {
    path: String,
    reader: Box<dyn Read + Send>,
    decoder: encoding_rs::Decoder,
    encoding_name: &'static str,
    buf: Vec<u8>,
    offset: u64,
    done: bool,
    /// What stopped the iteration early.
    pub error: Option<DecodeError>,
}

impl Chunks {
    /// Opens `path` for decoding as `encoding` (its BOM, if any, removed).
    pub fn file(path: &Path, encoding: TextEncoding) -> Result<Self, DecodeError> {
        Self::open(path, encoding.encoding(), true)
    }

    fn open(path: &Path, encoding: &'static Encoding, bom: bool) -> Result<Self, DecodeError> {
        let file = File::open(path).map_err(|source| DecodeError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.display().to_string(),
            reader: Box::new(file),
            decoder: if bom {
                encoding.new_decoder_with_bom_removal()
            } else {
                encoding.new_decoder_without_bom_handling()
            },
            encoding_name: encoding.name(),
            buf: vec![0; CHUNK_BYTES],
            offset: 0,
            done: false,
            error: None,
        })
    }

    fn decode(&mut self, n: usize, last: bool) -> Option<String> {
        let mut out = String::with_capacity(n + n / 2 + 16);
        let mut input = &self.buf[..n];
        loop {
            let needed = self
                .decoder
                .max_utf8_buffer_length_without_replacement(input.len())
                .unwrap_or(input.len() * 3 + 16);
            out.reserve(needed);
            let (result, read) = self
                .decoder
                .decode_to_string_without_replacement(input, &mut out, last);
            match result {
                DecoderResult::InputEmpty => {
                    self.offset += read as u64;
                    return Some(out);
                }
                DecoderResult::OutputFull => {
                    self.offset += read as u64;
                    input = &input[read..];
                }
                DecoderResult::Malformed(bad, after) => {
                    let at = self.offset + read as u64 - bad as u64 - after as u64;
                    self.error = Some(DecodeError::Invalid {
                        path: self.path.clone(),
                        encoding: self.encoding_name,
                        offset: at,
                        hint: "",
                    });
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if self.done {
                return None;
            }
            let mut n = 0;
            while n < self.buf.len() {
                match self.reader.read(&mut self.buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        self.error = Some(DecodeError::Io {
                            path: self.path.clone(),
                            source,
                        });
                        self.done = true;
                        return None;
                    }
                }
            }
            let last = n < self.buf.len();
            if last {
                self.done = true;
            }
            let text = self.decode(n, last)?;
            if !text.is_empty() {
                return Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    fn text(bytes: &[u8]) -> (TextEncoding, String) {
        let f = write(bytes);
        let enc = sniff(f.path()).unwrap();
        let chunks = Chunks::file(f.path(), enc).unwrap();
        (enc, chunks.collect())
    }

    #[test]
    fn boms_and_gb18030_are_recognised() {
        assert_eq!(
            text("\u{feff}你好".as_bytes()),
            (TextEncoding::Utf8Bom, "你好".into())
        );
        let mut le = vec![0xFF, 0xFE];
        le.extend("hé".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(text(&le), (TextEncoding::Utf16le, "hé".into()));
        let mut be = vec![0xFE, 0xFF];
        be.extend("hé".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(text(&be), (TextEncoding::Utf16be, "hé".into()));
        let (gbk, _, _) = GB18030.encode("指令,输出\n你好,世界\n");
        assert_eq!(
            text(&gbk),
            (TextEncoding::Gb18030, "指令,输出\n你好,世界\n".into())
        );
        assert_eq!(text(b"plain"), (TextEncoding::Utf8, "plain".into()));
    }

    #[test]
    fn json_and_messages_spell_encodings_the_same_whatwg_way() {
        for enc in TextEncoding::ALL {
            // What `data validate --json` and the API show is what the
            // dataset record stores (`name`), and it is the WHATWG label of
            // the encoding decoded with, lower-cased (the BOM variant apart).
            assert_eq!(serde_json::to_value(enc).unwrap(), enc.name(), "{enc:?}");
            assert_eq!(enc.to_string(), enc.name());
            let whatwg = enc.encoding().name().to_ascii_lowercase();
            match enc {
                TextEncoding::Utf8Bom => assert_eq!(enc.name(), "utf-8-bom"),
                _ => assert_eq!(enc.name(), whatwg, "{enc:?}"),
            }
        }
    }

    #[test]
    fn invalid_bytes_are_reported_with_their_offset() {
        // 0xFF is invalid in UTF-8 and in GB18030.
        let f = write(b"abc\xFF\xFFdef");
        let err = sniff(f.path()).unwrap_err().to_string();
        assert!(err.contains("byte offset 3"), "{err}");
        // A BOM-declared UTF-8 file with a bad byte fails while streaming.
        let f = write(b"\xEF\xBB\xBFab\xC3");
        let mut chunks = Chunks::file(f.path(), TextEncoding::Utf8Bom).unwrap();
        let _: Vec<String> = chunks.by_ref().collect();
        let err = chunks.error.unwrap().to_string();
        assert!(err.contains("byte offset 5"), "{err}");
    }
}
