//! Generated token ids to text, one token at a time: incremental decoding
//! that never emits half a UTF-8 character, and stop strings that cut the
//! text exactly before the match even when the match spans tokens.
//!
//! Decoding follows text-generation-inference's scheme: decode a short
//! window of recent ids twice (with and without the newest) and emit the
//! difference once it no longer ends in U+FFFD. Stop strings are matched in
//! the accumulated text; anything that could still be the start of a stop
//! string is held back until the next token decides it.

use crate::text::{Tokenizer, TokenizerError};

/// What one pushed token produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// Text released to the reader (possibly empty).
    pub text: String,
    /// A stop string matched: the sequence is over (the match is not in `text`).
    pub stopped: bool,
}

/// The decoded text of one sequence.
#[derive(Debug)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Start of the window decoded for context.
    prefix_offset: usize,
    /// End of the ids already turned into text.
    read_offset: usize,
    /// All text decoded so far.
    text: String,
    /// Bytes of `text` released to the reader.
    released: usize,
    stop: Vec<String>,
}

impl TextStream {
    /// A stream that ends at any of `stop`.
    pub fn new(stop: Vec<String>) -> Self {
        TextStream {
            ids: Vec::new(),
            prefix_offset: 0,
            read_offset: 0,
            text: String::new(),
            released: 0,
            stop,
        }
    }

    /// The text released so far.
    pub fn released(&self) -> &str {
        &self.text[..self.released]
    }

    /// Adds one generated token.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Pushed, TokenizerError> {
        self.ids.push(id);
        let before = tokenizer.decode_text(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = tokenizer.decode_text(&self.ids[self.prefix_offset..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            let new = match after.get(before.len()..) {
                Some(tail) if after.starts_with(&before) => tail,
                // A decoder that rewrote earlier text (rare): take the
                // common-prefix difference at a character boundary.
                _ => after.get(common_prefix(&before, &after)..).unwrap_or(""),
            };
            self.text.push_str(new);
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        } else if after == before {
            // The token has no text (a special token): skip past it, so a run
            // of such tokens does not widen every later decode.
            self.prefix_offset = self.ids.len();
            self.read_offset = self.ids.len();
        }
        Ok(self.release())
    }

    /// Releases everything still held back (the sequence ended for another
    /// reason than a stop string).
    pub fn finish(&mut self) -> String {
        let out = self.text[self.released..].to_string();
        self.released = self.text.len();
        out
    }

    fn release(&mut self) -> Pushed {
        // Earliest stop-string match that is not already released.
        let search_from = floor_char_boundary(
            &self.text,
            self.released.saturating_sub(self.longest_stop()),
        );
        let hit = self
            .stop
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            let at = at.max(self.released);
            let text = self.text[self.released..at].to_string();
            self.text.truncate(at);
            self.released = at;
            return Pushed {
                text,
                stopped: true,
            };
        }
        // Hold back the longest tail that could still begin a stop string.
        let mut keep_from = self.text.len();
        for (i, _) in self.text[self.released..].char_indices().rev() {
            let at = self.released + i;
            let tail = &self.text[at..];
            if tail.len() >= self.longest_stop() {
                break;
            }
            if self.stop.iter().any(|s| s.starts_with(tail)) {
                keep_from = at;
            }
        }
        let text = self.text[self.released..keep_from].to_string();
        self.released = keep_from;
        Pushed {
            text,
            stopped: false,
        }
    }

    fn longest_stop(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn common_prefix(a: &str, b: &str) -> usize {
    let mut n = 0;
    for ((i, x), y) in a.char_indices().zip(b.chars()) {
        if x != y {
            return i;
        }
        n = i + x.len_utf8();
    }
    n
}

/// The bytes a token stands for. Byte-level BPE (Qwen's) spells each byte
/// as a printable character (GPT-2's `bytes_to_unicode`); this is the
/// inverse map, used when a token is part of a multi-byte character and
/// has no text of its own.
pub fn token_bytes(tokenizer: &Tokenizer, id: u32) -> Vec<u8> {
    if let Ok(text) = tokenizer.decode(&[id])
        && !text.contains('\u{FFFD}')
    {
        return text.into_bytes();
    }
    let Some(piece) = tokenizer.id_to_token(id) else {
        return Vec::new();
    };
    piece.chars().filter_map(byte_of_char).collect()
}

/// GPT-2's `bytes_to_unicode` inverted: printable bytes stand for
/// themselves, the other 68 are shifted to U+0100 onwards in byte order.
fn byte_of_char(c: char) -> Option<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let code = c as u32;
    if code < 256 && printable(code as u8) {
        return Some(code as u8);
    }
    let shifted = code.checked_sub(256)? as usize;
    (0u8..=255).filter(|b| !printable(*b)).nth(shifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_inverse_covers_all_bytes() {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut n = 0u32;
        for b in 0u8..=255 {
            let c = if printable(b) {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            };
            assert_eq!(byte_of_char(c), Some(b), "byte {b}");
        }
        assert_eq!(byte_of_char('Ġ'), Some(b' '));
    }

    #[test]
    fn common_prefix_stops_at_a_character_boundary() {
        assert_eq!(common_prefix("héllo", "hélp"), "hél".len());
        assert_eq!(common_prefix("", "x"), 0);
    }
}
