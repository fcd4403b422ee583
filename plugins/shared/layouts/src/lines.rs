//! Splitting streamed text into numbered lines, with a cap on line length.

/// What [`BoundedLines`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent<'a> {
    /// A complete line (without its `\n` / `\r\n`), with its 1-based number.
    Line(u64, &'a str),
    /// A line longer than the cap: its text was dropped as it streamed in.
    /// Carries the line number and how many bytes it had.
    TooLong(u64, u64),
}

/// Like `tuner_sdk::Lines`, but never holds more than `max_line` bytes for
/// one line: a longer line is skipped to its end and reported as
/// [`LineEvent::TooLong`], so a 100 MB line costs no 100 MB buffer.
#[derive(Debug)]
pub struct BoundedLines {
    pending: String,
    next_line: u64,
    max_line: usize,
    /// Bytes of the current line seen while skipping it.
    skipping: Option<u64>,
}

impl BoundedLines {
    /// A splitter whose first line is line 1.
    pub fn new(max_line: usize) -> Self {
        Self {
            pending: String::new(),
            next_line: 1,
            max_line,
            skipping: None,
        }
    }

    /// Feeds a chunk, calling `each` for every line it completes.
    pub fn feed(&mut self, chunk: &str, mut each: impl FnMut(LineEvent<'_>)) {
        let mut rest = chunk;
        while let Some(pos) = find_newline(rest.as_bytes()) {
            let head = &rest[..pos];
            rest = &rest[pos + 1..];
            self.complete(head, &mut each);
        }
        self.hold(rest);
    }

    /// Ends the input: reports a last line without a newline, if any.
    pub fn finish(&mut self, mut each: impl FnMut(LineEvent<'_>)) {
        if !self.pending.is_empty() || self.skipping.is_some() {
            self.complete("", &mut each);
        }
    }

    /// The number the next line will get.
    pub fn next_line(&self) -> u64 {
        self.next_line
    }

    fn complete(&mut self, head: &str, each: &mut impl FnMut(LineEvent<'_>)) {
        let number = self.next_line;
        self.next_line += 1;
        if let Some(seen) = self.skipping.take() {
            each(LineEvent::TooLong(number, seen + head.len() as u64));
            return;
        }
        if self.pending.len() + head.len() > self.max_line {
            let seen = (self.pending.len() + head.len()) as u64;
            self.pending = String::new();
            each(LineEvent::TooLong(number, seen));
            return;
        }
        if self.pending.is_empty() {
            each(LineEvent::Line(number, strip_cr(head)));
        } else {
            self.pending.push_str(head);
            let line = std::mem::take(&mut self.pending);
            each(LineEvent::Line(number, strip_cr(&line)));
        }
    }

    fn hold(&mut self, rest: &str) {
        if let Some(seen) = &mut self.skipping {
            *seen += rest.len() as u64;
        } else if self.pending.len() + rest.len() > self.max_line {
            self.skipping = Some((self.pending.len() + rest.len()) as u64);
            // Give the memory back, not just the length.
            self.pending = String::new();
        } else {
            self.pending.push_str(rest);
        }
    }
}

/// The index of the first `\n` in `bytes`, 32 bytes per loop turn, then
/// eight: a u64 word is native in WebAssembly, while `str::find` (core's
/// memchr) works a `usize`, four bytes on wasm32, at a time, and fewer turns
/// mean fewer of wasmtime's deadline checks. The zero-byte test
/// `(x - 0x01..) & !x & 0x80..` flags the first matching byte exactly.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const NL: u64 = LO * b'\n' as u64;
    let mask = |word: &[u8]| {
        let x = u64::from_le_bytes(word.try_into().unwrap_or([0; 8])) ^ NL;
        x.wrapping_sub(LO) & !x & HI
    };
    let mut at = 0;
    let mut blocks = bytes.chunks_exact(32);
    for b in blocks.by_ref() {
        if mask(&b[..8]) | mask(&b[8..16]) | mask(&b[16..24]) | mask(&b[24..]) != 0 {
            break;
        }
        at += 32;
    }
    let mut words = bytes[at..].chunks_exact(8);
    for word in words.by_ref() {
        let found = mask(word);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|b| *b == b'\n')
        .map(|p| at + p)
}

fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(max: usize, chunks: &[&str]) -> Vec<String> {
        let mut lines = BoundedLines::new(max);
        let mut out = Vec::new();
        let mut push = |e: LineEvent<'_>| {
            out.push(match e {
                LineEvent::Line(n, l) => format!("{n}:{l}"),
                LineEvent::TooLong(n, len) => format!("{n}:too long ({len})"),
            })
        };
        for c in chunks {
            lines.feed(c, &mut push);
        }
        lines.finish(&mut push);
        out
    }

    #[test]
    fn newlines_are_found_at_every_position() {
        for len in 0..80 {
            for at in 0..=len {
                let mut bytes = vec![b'x'; len];
                // Bytes just above and below `\n` must not match.
                bytes.iter_mut().step_by(3).for_each(|b| *b = 0x0b);
                bytes.iter_mut().skip(1).step_by(5).for_each(|b| *b = 0x09);
                bytes.iter_mut().skip(2).step_by(7).for_each(|b| *b = 0x8a);
                let want = (at < len).then(|| {
                    bytes[at] = b'\n';
                    at
                });
                assert_eq!(find_newline(&bytes), want, "len {len}, at {at}");
                if at + 1 < len {
                    bytes[at + 1] = b'\n';
                    assert_eq!(find_newline(&bytes), want, "two, len {len}, at {at}");
                }
            }
        }
    }

    #[test]
    fn lines_split_across_chunks_keep_their_numbers() {
        assert_eq!(
            collect(100, &["a\r\nb", "c\n", "\nd"]),
            ["1:a", "2:bc", "3:", "4:d"]
        );
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_read() {
        assert_eq!(
            collect(4, &["ok\n0123", "456789", "\nfine\n"]),
            ["1:ok", "2:too long (10)", "3:fine"]
        );
        assert_eq!(collect(4, &["0123456"]), ["1:too long (7)"]);
        assert_eq!(collect(4, &["ab\n0123456\n"]), ["1:ab", "2:too long (7)"]);
    }
}
