//! `accuracy`: 1.0 when the completion's final answer equals the sample's
//! reference answer, else 0.0 (also 0.0 when the sample has no answer).
//!
//! The final answer is, in the part after the last `</think>` (the whole
//! completion when there is none): the content of the last `\boxed{…}`, else
//! what follows the last `####` (GSM8K's marker) up to the end of its line,
//! else the last number. The reference answer is read the same way when it
//! holds a `\boxed{}` or `####`, and whole otherwise. Two answers are equal
//! when both read as numbers (`1,234`, `-0.5`, `3/4`, `50%`, a leading `$`)
//! that agree to a relative 1e-6, or else when their text agrees ignoring
//! case, spaces and a final period.

use tuner_sdk::reward::*;

struct Accuracy;

impl RewardPlugin for Accuracy {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Reward,
            "1 when the completion's final answer equals the reference answer (numbers normalised)"
        )
    }

    fn score(inputs: &[RewardInput], _settings: &Settings) -> Result<Vec<f64>, PluginError> {
        Ok(inputs
            .iter()
            .map(|input| match &input.answer {
                Some(reference) => {
                    let got = final_answer(answer_part(&input.completion));
                    let want = reference_answer(reference);
                    match got {
                        Some(got) if same_answer(&got, &want) => 1.0,
                        _ => 0.0,
                    }
                }
                None => 0.0,
            })
            .collect())
    }
}

/// The text after the last `</think>`, or all of it.
fn answer_part(completion: &str) -> &str {
    match completion.rfind("</think>") {
        Some(at) => &completion[at + "</think>".len()..],
        None => completion,
    }
}

/// The final answer of a completion: last `\boxed{}`, else after `####`,
/// else the last number.
fn final_answer(text: &str) -> Option<String> {
    last_boxed(text)
        .or_else(|| after_hashes(text))
        .or_else(|| last_number(text))
}

/// The reference answer: marked answers are extracted, plain ones kept whole.
fn reference_answer(reference: &str) -> String {
    last_boxed(reference)
        .or_else(|| after_hashes(reference))
        .unwrap_or_else(|| reference.trim().to_string())
}

/// The content of the last `\boxed{…}`, braces balanced.
fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(text[start..start + i].trim().to_string());
                }
            }
            _ => {}
        }
    }
    None
}

/// What follows the last `####`, to the end of its line.
fn after_hashes(text: &str) -> Option<String> {
    let at = text.rfind("####")?;
    let rest = text[at + 4..].lines().next().unwrap_or("").trim();
    (!rest.is_empty()).then(|| rest.to_string())
}

/// The last number in the text (digits with `,` groups, a sign, a decimal
/// part, a fraction `a/b`, or a `%` after it).
fn last_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = chars.len();
    while i > 0 {
        i -= 1;
        if !chars[i].is_ascii_digit() {
            continue;
        }
        // A percent sign right after the number belongs to it.
        let end = if chars.get(i + 1) == Some(&'%') {
            i + 2
        } else {
            i + 1
        };
        let mut start = i;
        while start > 0 {
            let c = chars[start - 1];
            let digit_before = start >= 2 && chars[start - 2].is_ascii_digit();
            if c.is_ascii_digit() || (matches!(c, ',' | '.' | '/') && digit_before) {
                start -= 1;
            } else {
                break;
            }
        }
        if start > 0 && chars[start - 1] == '-' {
            start -= 1;
        }
        return Some(chars[start..end].iter().collect());
    }
    None
}

/// A number written as `1,234`, `$5`, `-0.5`, `3/4` or `50%`.
fn as_number(text: &str) -> Option<f64> {
    let t: String = text
        .trim()
        .trim_end_matches('.')
        .chars()
        .filter(|c| !matches!(c, ',' | '$' | ' '))
        .collect();
    if let Some(p) = t.strip_suffix('%') {
        return p.parse::<f64>().ok().map(|v| v / 100.0);
    }
    if let Some((a, b)) = t.split_once('/') {
        let (a, b) = (a.parse::<f64>().ok()?, b.parse::<f64>().ok()?);
        return (b != 0.0).then(|| a / b);
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn same_answer(got: &str, want: &str) -> bool {
    match (as_number(got), as_number(want)) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0),
        _ => normalise(got) == normalise(want),
    }
}

fn normalise(text: &str) -> String {
    text.trim()
        .trim_end_matches('.')
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

tuner_sdk::export_plugin!(reward: Accuracy);
