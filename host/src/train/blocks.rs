//! Continued pre-training: text samples become `max_seq_length` blocks.
//!
//! A text sample is rendered as its text followed by EOS (see
//! [`crate::text::render`]). Cutting each one to `max_seq_length` would throw
//! away all but the start of a long document (a 200k-token book keeps 2048
//! tokens), and leave short ones mostly padding. Instead the text samples'
//! tokens are joined in data order and cut into blocks of exactly
//! `max_seq_length` tokens across document boundaries, as Hugging Face's
//! `run_clm` (`group_texts`) and LLaMA-Factory's pre-training stage do: the
//! EOS between documents marks where one ends, and attention in a block spans
//! the documents in it, as there. Unlike them, the last, shorter block is
//! kept rather than dropped, so no token is lost. Other sample kinds pass
//! through untouched, in place.

use crate::sample::SampleKind;
use crate::text::{TokenizedSample, TokenizedSequence};

use super::batch::BatchSample;

/// What [`cut_text_into_blocks`] did, for the job log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextBlocks {
    /// Text samples (documents) joined.
    pub documents: usize,
    /// Their tokens, EOS included.
    pub tokens: usize,
    /// Blocks made.
    pub blocks: usize,
}

/// Replaces the text samples of `samples` by blocks of `block_len` tokens
/// made from their joined tokens. Each block takes the place of the text
/// sample whose tokens complete it (the last one: the place of the last text
/// sample), so the order of the other samples is kept.
pub fn cut_text_into_blocks(
    samples: Vec<BatchSample>,
    block_len: usize,
) -> (Vec<BatchSample>, TextBlocks) {
    assert!(block_len > 0, "block length must be positive");
    let mut out = Vec::with_capacity(samples.len());
    let mut stats = TextBlocks::default();
    let mut pending = TokenizedSequence {
        ids: Vec::new(),
        weights: Vec::new(),
    };
    for sample in samples {
        if sample.kind != SampleKind::Text {
            out.push(sample);
            continue;
        }
        stats.documents += 1;
        stats.tokens += sample.tokens.main.len();
        let main = sample.tokens.main;
        pending.ids.extend(main.ids);
        pending.weights.extend(main.weights);
        while pending.ids.len() >= block_len {
            out.push(take_block(&mut pending, block_len));
            stats.blocks += 1;
        }
    }
    if !pending.ids.is_empty() {
        let len = pending.ids.len();
        out.push(take_block(&mut pending, len));
        stats.blocks += 1;
    }
    (out, stats)
}

/// The first `len` tokens of `pending`, as a block.
fn take_block(pending: &mut TokenizedSequence, len: usize) -> BatchSample {
    let ids = pending.ids.drain(..len).collect();
    let weights = pending.weights.drain(..len).collect();
    text_block(TokenizedSequence { ids, weights })
}

fn text_block(main: TokenizedSequence) -> BatchSample {
    BatchSample {
        tokens: TokenizedSample {
            main,
            rejected: None,
        },
        kind: SampleKind::Text,
        answer: None,
        prompt: None,
        label: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ids: &[u32]) -> BatchSample {
        text_block(TokenizedSequence {
            ids: ids.to_vec(),
            weights: vec![1.0; ids.len()],
        })
    }

    fn chat(ids: &[u32]) -> BatchSample {
        BatchSample {
            kind: SampleKind::Chat,
            ..text(ids)
        }
    }

    fn ids(samples: &[BatchSample]) -> Vec<(SampleKind, Vec<u32>)> {
        samples
            .iter()
            .map(|s| (s.kind, s.tokens.main.ids.clone()))
            .collect()
    }

    #[test]
    fn documents_are_joined_and_cut_into_full_blocks_keeping_the_rest() {
        // Three documents (each ending in its EOS, 0) of 5, 2 and 6 tokens.
        let docs = vec![
            text(&[1, 2, 3, 4, 0]),
            text(&[5, 0]),
            text(&[6, 7, 8, 9, 10, 0]),
        ];
        let (blocks, stats) = cut_text_into_blocks(docs, 4);
        assert_eq!(
            ids(&blocks),
            [
                (SampleKind::Text, vec![1, 2, 3, 4]),
                (SampleKind::Text, vec![0, 5, 0, 6]),
                (SampleKind::Text, vec![7, 8, 9, 10]),
                (SampleKind::Text, vec![0]),
            ]
        );
        assert_eq!(
            stats,
            TextBlocks {
                documents: 3,
                tokens: 13,
                blocks: 4
            }
        );
        // Every token is kept, in order, with its weight.
        let joined: Vec<u32> = blocks
            .iter()
            .flat_map(|b| b.tokens.main.ids.clone())
            .collect();
        assert_eq!(joined, [1, 2, 3, 4, 0, 5, 0, 6, 7, 8, 9, 10, 0]);
        assert!(
            blocks
                .iter()
                .all(|b| b.tokens.main.weights.len() == b.tokens.main.ids.len())
        );
    }

    #[test]
    fn other_samples_keep_their_place_and_are_not_cut() {
        let samples = vec![
            chat(&[9; 7]),
            text(&[1, 2, 3]),
            chat(&[8, 8]),
            text(&[4, 5, 6]),
        ];
        let (out, stats) = cut_text_into_blocks(samples, 4);
        assert_eq!(
            ids(&out),
            [
                (SampleKind::Chat, vec![9; 7]),
                (SampleKind::Chat, vec![8, 8]),
                (SampleKind::Text, vec![1, 2, 3, 4]),
                (SampleKind::Text, vec![5, 6]),
            ]
        );
        assert_eq!(stats.blocks, 2);
    }

    #[test]
    fn without_text_samples_nothing_changes() {
        let samples = vec![chat(&[1, 2, 3]), chat(&[4])];
        let (out, stats) = cut_text_into_blocks(samples.clone(), 2);
        assert_eq!(out, samples);
        assert_eq!(stats, TextBlocks::default());
    }
}
