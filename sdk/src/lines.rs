//! Splitting streamed text into numbered lines.

/// Turns a stream of text chunks into complete lines with 1-based line
/// numbers. A chunk may end anywhere; the unfinished line is kept until the
/// next chunk or [`Lines::finish`]. Line endings (`\n`, `\r\n`) are removed.
///
/// ```
/// let mut lines = tuner_sdk::Lines::new();
/// let mut seen = Vec::new();
/// lines.feed("a\r\nb", |n, l| seen.push((n, l.to_string())));
/// lines.feed("c\n", |n, l| seen.push((n, l.to_string())));
/// lines.finish(|n, l| seen.push((n, l.to_string())));
/// assert_eq!(seen, [(1, "a".to_string()), (2, "bc".to_string())]);
/// ```
#[derive(Debug)]
pub struct Lines {
    pending: String,
    next_line: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Lines {
    /// An empty splitter; the first line is line 1.
    ///
    /// ```
    /// let lines = tuner_sdk::Lines::new();
    /// assert_eq!(lines.pending_len(), 0);
    /// ```
    pub fn new() -> Self {
        Self {
            pending: String::new(),
            next_line: 1,
        }
    }

    /// Feeds a chunk and calls `each(line_number, line)` for every line it completes.
    ///
    /// ```
    /// let mut lines = tuner_sdk::Lines::new();
    /// let mut count = 0;
    /// lines.feed("x\ny\nz", |_, _| count += 1);
    /// assert_eq!(count, 2); // `z` waits for its newline
    /// ```
    pub fn feed(&mut self, chunk: &str, mut each: impl FnMut(u64, &str)) {
        let mut rest = chunk;
        while let Some(pos) = rest.find('\n') {
            let (head, tail) = rest.split_at(pos);
            rest = &tail[1..];
            let line_no = self.next_line;
            self.next_line += 1;
            if self.pending.is_empty() {
                each(line_no, head.strip_suffix('\r').unwrap_or(head));
            } else {
                self.pending.push_str(head);
                let line = std::mem::take(&mut self.pending);
                each(line_no, line.strip_suffix('\r').unwrap_or(&line));
            }
        }
        self.pending.push_str(rest);
    }

    /// Ends the input: calls `each` for a last line without a newline, if any.
    ///
    /// ```
    /// let mut lines = tuner_sdk::Lines::new();
    /// lines.feed("last", |_, _| unreachable!());
    /// let mut last = None;
    /// lines.finish(|n, l| last = Some((n, l.to_string())));
    /// assert_eq!(last, Some((1, "last".to_string())));
    /// ```
    pub fn finish(&mut self, mut each: impl FnMut(u64, &str)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            each(self.next_line, line.strip_suffix('\r').unwrap_or(&line));
            self.next_line += 1;
        }
    }

    /// Bytes held for an unfinished line (lets a parser bound its memory).
    ///
    /// ```
    /// let mut lines = tuner_sdk::Lines::new();
    /// lines.feed("12345", |_, _| {});
    /// assert_eq!(lines.pending_len(), 5);
    /// ```
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Lines;

    fn collect(chunks: &[&str]) -> Vec<(u64, String)> {
        let mut lines = Lines::new();
        let mut out = Vec::new();
        for c in chunks {
            lines.feed(c, |n, l| out.push((n, l.to_string())));
        }
        lines.finish(|n, l| out.push((n, l.to_string())));
        out
    }

    #[test]
    fn lines_split_across_chunks_keep_their_numbers() {
        let got = collect(&["a\r\nb", "c\n", "\nd"]);
        assert_eq!(
            got,
            vec![
                (1, "a".into()),
                (2, "bc".into()),
                (3, "".into()),
                (4, "d".into())
            ]
        );
    }

    #[test]
    fn trailing_newline_adds_no_empty_line() {
        assert_eq!(collect(&["x\n"]), vec![(1, "x".into())]);
    }
}
