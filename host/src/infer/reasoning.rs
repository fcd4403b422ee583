//! Qwen3's thinking, returned apart from the answer (`reasoning_content`,
//! as Qwen's own serving docs and vLLM's `qwen3` reasoning parser do).
//!
//! A Qwen3 hybrid model writes `<think>…</think>` before its answer; a
//! thinking-only model (Qwen3-*-Thinking-2507) has `<think>` in its prompt
//! and writes only the closing tag. So: text before `</think>` is
//! reasoning (a leading `<think>` dropped), text after it the answer; with
//! no `</think>` at all, the text is reasoning if it (or the prompt) opened
//! a think block, else it is all answer.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Splits a stream of text deltas into reasoning and answer deltas.
#[derive(Debug)]
pub struct ReasoningSplitter {
    /// Text received and not yet assigned (a possible partial tag).
    pending: String,
    state: State,
    /// Just past `</think>`: the newlines the template puts after the tag
    /// are not part of the answer.
    after_close: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet: waiting to see whether the text opens with `<think>`.
    Start,
    Reasoning,
    Answer,
}

/// One delta, split.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub content: String,
}

impl ReasoningSplitter {
    /// `prompt_opened`: the prompt ends inside an open think block (the
    /// template wrote `<think>` for the model).
    pub fn new(prompt_opened: bool) -> Self {
        ReasoningSplitter {
            pending: String::new(),
            after_close: false,
            state: if prompt_opened {
                State::Reasoning
            } else {
                State::Start
            },
        }
    }

    /// Splits the next delta; text that may be the start of a tag is kept
    /// until the next call or [`Self::finish`].
    pub fn push(&mut self, delta: &str) -> Split {
        self.pending.push_str(delta);
        let mut out = Split::default();
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.pending.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.pending = rest.to_string();
                        self.state = State::Reasoning;
                    } else if OPEN.starts_with(trimmed) {
                        return out; // still undecided
                    } else {
                        self.state = State::Answer;
                    }
                }
                State::Reasoning => {
                    if let Some(at) = self.pending.find(CLOSE) {
                        out.reasoning.push_str(&self.pending[..at]);
                        self.pending = self.pending[at + CLOSE.len()..].to_string();
                        self.state = State::Answer;
                        self.after_close = true;
                        continue;
                    }
                    let keep = partial_tag_suffix(&self.pending, CLOSE);
                    let cut = self.pending.len() - keep;
                    out.reasoning.push_str(&self.pending[..cut]);
                    self.pending.drain(..cut);
                    return out;
                }
                State::Answer => {
                    if self.after_close {
                        self.pending = self.pending.trim_start_matches('\n').to_string();
                        if self.pending.is_empty() {
                            return out;
                        }
                        self.after_close = false;
                    }
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    return out;
                }
            }
        }
    }

    /// Releases what was held back at the end of the text.
    pub fn finish(&mut self) -> Split {
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            State::Reasoning => Split {
                reasoning: rest,
                content: String::new(),
            },
            State::Start | State::Answer => Split {
                reasoning: String::new(),
                content: rest,
            },
        }
    }

    /// Splits a whole text at once.
    pub fn split(text: &str, prompt_opened: bool) -> Split {
        let mut s = ReasoningSplitter::new(prompt_opened);
        let mut a = s.push(text);
        let b = s.finish();
        a.reasoning.push_str(&b.reasoning);
        a.content.push_str(&b.content);
        a
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// Whether a rendered prompt ends inside an open think block.
pub fn prompt_opens_thinking(prompt: &str) -> bool {
    match (prompt.rfind(OPEN), prompt.rfind(CLOSE)) {
        (Some(open), Some(close)) => open > close,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, opened: bool) -> (String, String) {
        let s = ReasoningSplitter::split(text, opened);
        (s.reasoning, s.content)
    }

    #[test]
    fn splits_think_blocks_as_qwen_writes_them() {
        assert_eq!(
            split("<think>\nLet me see.\n</think>\n\nIt is 4.", false),
            ("\nLet me see.\n".into(), "It is 4.".into())
        );
        // No block: all answer.
        assert_eq!(split("It is 4.", false), ("".into(), "It is 4.".into()));
        // Thinking-only models: the prompt opened the block.
        assert_eq!(
            split("hmm\n</think>\n\nYes", true),
            ("hmm\n".into(), "Yes".into())
        );
        // Cut off while thinking: all reasoning.
        assert_eq!(
            split("<think>still going", false),
            ("still going".into(), "".into())
        );
    }

    #[test]
    fn streaming_in_any_pieces_gives_the_same_split() {
        let text = "<think>a < b </thi and more</think>\n\nfinal <answer>";
        let whole = ReasoningSplitter::split(text, false);
        for size in 1..8 {
            let mut s = ReasoningSplitter::new(false);
            let mut got = Split::default();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(size) {
                let d = s.push(&piece.iter().collect::<String>());
                got.reasoning.push_str(&d.reasoning);
                got.content.push_str(&d.content);
            }
            let d = s.finish();
            got.reasoning.push_str(&d.reasoning);
            got.content.push_str(&d.content);
            assert_eq!(got, whole, "pieces of {size}");
        }
        assert_eq!(whole.reasoning, "a < b </thi and more");
        assert_eq!(whole.content, "final <answer>");
    }

    #[test]
    fn finds_a_prompt_that_opened_thinking() {
        assert!(prompt_opens_thinking("<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens_thinking(
            "<|im_start|>assistant\n<think>\n\n</think>\n\n"
        ));
        assert!(!prompt_opens_thinking("<|im_start|>assistant\n"));
    }
}
