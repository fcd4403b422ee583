//! A hand-written JSON reader for the common record shape ([`Record`]).
//!
//! It scans strings eight bytes at a time (u64 words are native in
//! WebAssembly; serde_json's scan works a `usize`, four bytes on wasm32, at a
//! time, and goes through its generic state machine per token), and borrows
//! every string without escapes. Anything it is not sure about (an unknown or
//! repeated key, a value of another type, a key with an escape, a raw control
//! character, bytes after the object) makes it answer `None`, and the caller
//! takes the general path, serde_json into a `Value`, which then accepts or
//! rejects the record itself. Escaped strings are decoded by serde_json. So
//! it never accepts what serde_json would not, and the tests in `fast` check
//! both paths give the same samples.

use std::borrow::Cow;

use tuner_sdk::Message;

use crate::fast::{Record, openai_role, sharegpt_role};

/// Reads `text` as a [`Record`], or `None` to leave it to serde.
pub(crate) fn record(text: &str) -> Option<Record<'_>> {
    let mut s = Scanner { text, at: 0 };
    let mut record = Record::default();
    let mut seen = 0u32;
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        loop {
            let key = s.key()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            let bit = match key {
                "messages" => {
                    record.messages = s.nullable(|s| {
                        s.list(|s| {
                            let (role, content) = s.pair("role", "content")?;
                            Some(Message::new(openai_role(&role)?, content.into_owned()))
                        })
                    })?;
                    1
                }
                "conversations" => {
                    record.conversations = s.nullable(|s| {
                        s.list(|s| {
                            let (from, value) = s.pair("from", "value")?;
                            Some(Message::new(sharegpt_role(&from)?, value.into_owned()))
                        })
                    })?;
                    2
                }
                "instruction" => {
                    record.instruction = s.nullable(Scanner::string)?;
                    4
                }
                "input" => {
                    record.input = s.nullable(Scanner::string)?;
                    8
                }
                "output" => {
                    record.output = s.nullable(Scanner::string)?;
                    16
                }
                "system" => {
                    record.system = s.nullable(Scanner::string)?;
                    32
                }
                "text" => {
                    record.text = s.nullable(Scanner::string)?;
                    64
                }
                _ => return None,
            };
            // serde refuses a repeated field; leave it to the general path.
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            s.ws();
            if s.eat(b',').is_some() {
                s.ws();
                continue;
            }
            s.eat(b'}')?;
            break;
        }
    }
    s.ws();
    (s.at == text.len()).then_some(record)
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// JSON whitespace: space, tab, line feed, carriage return.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.bytes().get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// `null` as `None`, else `value`.
    fn nullable<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.bytes()[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        value(self).map(Some)
    }

    /// An object key: a string without escapes (a key with one is left to serde).
    fn key(&mut self) -> Option<&'a str> {
        match self.string()? {
            Cow::Borrowed(key) => Some(key),
            Cow::Owned(_) => None,
        }
    }

    /// A JSON string, borrowed when it has no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.at;
        let bytes = self.bytes();
        let mut escaped = false;
        let mut at = start;
        loop {
            at += special(&bytes[at..])?;
            match bytes[at] {
                b'"' => break,
                // Skip the escaped byte (a quote or backslash included);
                // serde checks the escape itself below.
                b'\\' => {
                    escaped = true;
                    at += 2;
                    if at > bytes.len() {
                        return None;
                    }
                }
                // A raw control character: invalid JSON, serde's to report.
                _ => return None,
            }
        }
        self.at = at + 1;
        if !escaped {
            return Some(Cow::Borrowed(&self.text[start..at]));
        }
        serde_json::from_str::<String>(&self.text[start - 1..=at])
            .ok()
            .map(Cow::Owned)
    }

    /// `[item, ...]`.
    fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        self.eat(b'[')?;
        self.ws();
        // Room for a system turn in front, without growing.
        let mut out = Vec::with_capacity(4);
        if self.eat(b']').is_some() {
            return Some(out);
        }
        loop {
            out.push(item(self)?);
            self.ws();
            if self.eat(b',').is_some() {
                self.ws();
                continue;
            }
            self.eat(b']')?;
            return Some(out);
        }
    }

    /// An object of exactly two string fields, `a` and `b`, in any order.
    fn pair(&mut self, a: &str, b: &str) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
        self.eat(b'{')?;
        let (mut first, mut second) = (None, None);
        for i in 0..2 {
            self.ws();
            let key = self.key()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let slot = match key {
                k if k == a => &mut first,
                k if k == b => &mut second,
                _ => return None,
            };
            if slot.is_some() {
                return None;
            }
            *slot = Some(self.string()?);
            self.ws();
            if i == 0 {
                self.eat(b',')?;
            }
        }
        self.eat(b'}')?;
        Some((first?, second?))
    }
}

/// Offset of the first `"`, `\` or control character (< 0x20) in `bytes`,
/// 32 bytes per loop turn (fewer turns: wasmtime checks its deadline on
/// every one), then eight at a time, then one.
fn special(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let mut blocks = bytes.chunks_exact(32);
    for block in blocks.by_ref() {
        let w = |i: usize| word(&block[i * 8..i * 8 + 8]);
        if special_mask(w(0)) | special_mask(w(1)) | special_mask(w(2)) | special_mask(w(3)) != 0 {
            break;
        }
        at += 32;
    }
    let mut words = bytes[at..].chunks_exact(8);
    for w in words.by_ref() {
        let found = special_mask(word(w));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| matches!(b, b'"' | b'\\' | 0..0x20))
        .map(|p| at + p)
}

fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// The high bit of every byte of `w` that is `"`, `\` or below 0x20;
/// exact for the lowest one.
fn special_mask(w: u64) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // Has a zero byte: exact for the lowest one (a borrow only flags bytes
    // above a true zero).
    let zero = |x: u64| x.wrapping_sub(LO) & !x & HI;
    // Bytes below 0x20 have their top three bits clear.
    zero(w ^ (LO * b'"' as u64)) | zero(w ^ (LO * b'\\' as u64)) | zero(w & (LO * 0xe0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_bytes_are_found_at_every_position() {
        for special_byte in [b'"', b'\\', 0x00, 0x0a, 0x1f] {
            for len in 0..80 {
                for at in 0..=len {
                    // Neighbours of the special bytes and UTF-8 bytes must not match.
                    let mut bytes: Vec<u8> = (0..len)
                        .map(|i| {
                            [b'a', b'#', b']', 0x20, 0x21, 0x5b, 0x5d, 0xe4, 0xa0, 0x80][i % 10]
                        })
                        .collect();
                    let want = (at < len).then(|| {
                        bytes[at] = special_byte;
                        at
                    });
                    assert_eq!(special(&bytes), want, "{special_byte:#x} len {len} at {at}");
                }
            }
        }
    }
}
