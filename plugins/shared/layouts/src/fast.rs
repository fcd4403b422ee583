//! A fast path for the records most files are made of: OpenAI `messages`,
//! ShareGPT `conversations`, Alpaca and `text`, with every value a plain
//! string and no extra fields.
//!
//! The general path parses a record into a `serde_json::Value` (a map and
//! an owned string per key and value) and then walks it. Here the record is
//! read straight into a small struct whose strings borrow from the line
//! ([`crate::scan`]), so the only copies made are the sample's own strings;
//! inside the WebAssembly sandbox this cuts the cost of a record by more
//! than half.
//!
//! It never decides anything the general path would decide differently: it
//! answers `None` for anything outside its narrow shape (an unknown or
//! duplicate field, a `null`, a number, a role it does not map, a record that
//! would be rejected), and the caller then runs the general path, which also
//! produces every error message. The tests check the two agree.

use std::borrow::Cow;

use tuner_sdk::{ChatSample, Message, Sample};

use crate::{Layout, Normaliser};

/// A record of the common layouts, as [`crate::scan`] reads it. Fields
/// missing or `null` are `None`, as the general path treats `null` as absent.
/// Turns are read straight into messages, their roles already mapped
/// ([`openai_role`], [`sharegpt_role`]).
#[derive(Debug, Default)]
pub(crate) struct Record<'a> {
    pub messages: Option<Vec<Message>>,
    pub conversations: Option<Vec<Message>>,
    pub instruction: Option<Cow<'a, str>>,
    pub input: Option<Cow<'a, str>>,
    pub output: Option<Cow<'a, str>>,
    pub system: Option<Cow<'a, str>>,
    pub text: Option<Cow<'a, str>>,
}

/// An OpenAI `role` as the general path maps it (`openai_turns`); `None`
/// for one it refuses.
pub(crate) fn openai_role(role: &str) -> Option<&'static str> {
    Some(match role {
        "system" | "developer" => "system",
        "user" => "user",
        "assistant" => "assistant",
        "tool" | "function" | "ipython" => "tool",
        _ => return None,
    })
}

/// A ShareGPT `from` as `Normaliser::sharegpt_role` maps it under the
/// default tags, without `function_call` (its value is rewritten as a tool
/// call: left to the general path).
pub(crate) fn sharegpt_role(from: &str) -> Option<&'static str> {
    Some(match from {
        "human" | "user" => "user",
        "gpt" | "assistant" => "assistant",
        "system" => "system",
        "observation" | "tool" => "tool",
        _ => return None,
    })
}

impl Normaliser {
    /// The sample and layout of one JSON record `text` when it is in the
    /// common shape this path handles, else `None` (use
    /// [`Normaliser::normalise`] on the parsed value: it gives the same
    /// answer for every record this one accepts, and the errors).
    pub fn normalise_common(&self, text: &str) -> Option<(Sample, Layout)> {
        if !self.plain_columns() {
            return None;
        }
        let record = crate::scan::record(text)?;
        // A field the detected layout would not read is reported by the
        // general path (`Normalised::ignored`): leave such records to it.
        let alpaca_fields =
            record.instruction.is_some() || record.input.is_some() || record.output.is_some();
        let unread = if record.conversations.is_some() {
            record.messages.is_some() || alpaca_fields || record.text.is_some()
        } else if record.messages.is_some() {
            alpaca_fields || record.text.is_some()
        } else if record.instruction.is_some() {
            record.text.is_some()
        } else {
            record.system.is_some() || record.input.is_some() || record.output.is_some()
        };
        if unread {
            return None;
        }
        // Detection in the general path's order (`Record::detect`), for
        // records with none of the fields that would take another branch.
        let (layout, sample) = if let Some(turns) = record.conversations {
            (Layout::ShareGpt, sharegpt(record.system, turns)?)
        } else if let Some(turns) = record.messages {
            // Without an assistant turn the general path calls it a prompt
            // (only the role `assistant` maps to `assistant`).
            if !turns.iter().any(|t| t.role == "assistant") {
                return None;
            }
            (Layout::OpenAi, openai(record.system, turns)?)
        } else if let Some(instruction) = record.instruction {
            let output = record.output?;
            (
                Layout::Alpaca,
                alpaca(record.system, instruction, record.input, output)?,
            )
        } else if let Some(text) = record.text {
            (Layout::Text, Sample::Text(text.into_owned()))
        } else {
            return None;
        };
        // A forced layout gives the same sample when it is the one detected.
        if self.forced().is_some_and(|forced| forced != layout) {
            return None;
        }
        Some((sample, layout))
    }
}

/// The system prompt as a turn (an empty one is dropped).
fn system_turn(system: Option<Cow<'_, str>>) -> Option<Message> {
    system
        .filter(|s| !s.is_empty())
        .map(|s| Message::new("system", s.into_owned()))
}

fn chat(messages: Vec<Message>) -> Option<Sample> {
    // `require_assistant`: otherwise the record is rejected.
    if !messages.iter().any(|m| m.role == "assistant") {
        return None;
    }
    Some(Sample::Chat(ChatSample {
        messages,
        tools: None,
    }))
}

fn sharegpt(system: Option<Cow<'_, str>>, mut messages: Vec<Message>) -> Option<Sample> {
    if let Some(system) = system_turn(system) {
        messages.insert(0, system);
    }
    chat(messages)
}

fn openai(system: Option<Cow<'_, str>>, mut messages: Vec<Message>) -> Option<Sample> {
    if messages.first().is_none_or(|m| m.role != "system")
        && let Some(system) = system_turn(system)
    {
        messages.insert(0, system);
    }
    chat(messages)
}

fn alpaca(
    system: Option<Cow<'_, str>>,
    instruction: Cow<'_, str>,
    input: Option<Cow<'_, str>>,
    output: Cow<'_, str>,
) -> Option<Sample> {
    let input = input.unwrap_or_default();
    let user = match (instruction.is_empty(), input.is_empty()) {
        (_, true) => instruction.into_owned(),
        (true, false) => input.into_owned(),
        (false, false) => format!("{instruction}\n{input}"),
    };
    if user.is_empty() {
        return None;
    }
    let mut messages = Vec::with_capacity(3);
    messages.extend(system_turn(system));
    messages.push(Message::new("user", user));
    messages.push(Message::new("assistant", output.into_owned()));
    chat(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths on one record: the fast one's answer, and the general
    /// one's as text for comparison.
    fn both(n: &Normaliser, text: &str) -> (Option<String>, String) {
        let fast = n.normalise_common(text).map(|s| format!("{s:?}"));
        let general = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => match n.normalise(&v) {
                Ok(s) => format!("{s:?}"),
                Err(e) => format!("error {e:?}"),
            },
            Err(e) => format!("invalid JSON {e}"),
        };
        (fast, general)
    }

    const COMMON: &[&str] = &[
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "你好\n\"x\""}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"system": "sys", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"system": "sys", "messages": [{"role": "developer", "content": "d"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"system": "", "messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "t"}, {"role": "assistant", "content": ""}]}"#,
        r#"{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}"#,
        r#"{"system": "s", "conversations": [{"from": "user", "value": "q"}, {"from": "observation", "value": "o"}, {"from": "assistant", "value": "a"}]}"#,
        r#"{"instruction": "翻译", "input": "hello", "output": "你好"}"#,
        r#"{"instruction": "", "input": "in", "output": "o", "system": "s"}"#,
        r#"{"instruction": "i", "input": "", "output": ""}"#,
        r#"{"instruction": "i", "input": null, "output": "o", "system": null}"#,
        r#"{"text": "raw \u00e9 text"}"#,
        r#"{"text": "esc \"q\" \\ \/ \b\f\n\r\t \ud83d\ude00 end"}"#,
        "{\"text\":\"t\"}",
        " \t{ \"messages\" :[ {\"content\":\"q\" , \"role\":\"user\"},{ \"role\" : \"assistant\",\"content\": \"a\" } ] , \"system\" : null }\r",
        r#"{"messages": [{"role": "user", "content": "长的中文内容，没有转义。"}, {"role": "assistant", "content": "第二行\n第三行"}]}"#,
        r#"{"conversations": [{"value": "q", "from": "human"}, {"from": "gpt", "value": "a\"b"}], "system": null}"#,
        "  {\"text\": \"t\"}  ",
    ];

    /// Records the fast path leaves to the general one (errors included).
    const OTHERS: &[&str] = &[
        r#"{"messages": [{"role": "user", "content": "q"}]}"#,
        r#"{"messages": []}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": []}]}"#,
        r#"{"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"messages": [{"role": "user", "content": "q", "weight": 0}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "tools": "[]"}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "answer": "4"}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "chosen": "x", "rejected": "y"}"#,
        r#"{"messages": "nope"}"#,
        r#"{"system": 3, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"text": "a", "text": "b"}"#,
        r#"{"conversations": [{"from": "human", "value": "q"}]}"#,
        r#"{"conversations": [{"from": "function_call", "value": "{}"}, {"from": "gpt", "value": "a"}]}"#,
        r#"{"conversations": [{"from": "human", "value": null}, {"from": "gpt", "value": "a"}]}"#,
        r#"{"instruction": "x", "output": 5}"#,
        r#"{"instruction": "x"}"#,
        r#"{"instruction": "", "input": "", "output": "o"}"#,
        r#"{"instruction": "q", "history": [], "output": "a"}"#,
        r#"{"instruction": "q", "solution": "s"}"#,
        r#"{"text": 1}"#,
        r#"{"text": "a\u0000b\q"}"#,
        "{\"text\": \"raw\ttab\"}",
        r#"{"te\u0078t": "t"}"#,
        r#"{"text": "t",}"#,
        r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},]}"#,
        r#"{"messages": [["user", "q"], ["assistant", "a"]]}"#,
        r#"{"messages": [{"role": "user", "content": "q", "role": "user"}, {"role": "assistant", "content": "a"}]}"#,
        r#"{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}"#,
        r#"[null, null, null, null, null, null, "t"]"#,
        r#"{"text": nul}"#,
        r#"{"text": "t"}}"#,
        r#"{"output": "o"}"#,
        r#"{}"#,
        r#"[1]"#,
        r#"{"text": "t"} x"#,
        r#"{"text": "t""#,
    ];

    #[test]
    fn the_fast_path_takes_common_records_and_agrees_with_the_general_one() {
        let n = Normaliser::new(None, &[]).unwrap();
        for text in COMMON {
            let (fast, general) = both(&n, text);
            assert_eq!(fast.as_deref(), Some(general.as_str()), "{text}");
        }
    }

    #[test]
    fn everything_else_is_left_to_the_general_path() {
        let n = Normaliser::new(None, &[]).unwrap();
        for text in OTHERS {
            assert_eq!(both(&n, text).0, None, "{text}");
        }
    }

    #[test]
    fn forced_layouts_and_column_mappings() {
        let openai = Normaliser::new(Some("openai"), &[]).unwrap();
        let text = Normaliser::new(Some("text"), &[]).unwrap();
        let chat = r#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#;
        let (fast, general) = both(&openai, chat);
        assert_eq!(fast.as_deref(), Some(general.as_str()));
        // With both `text` and `messages`, one of them is unread whichever
        // layout is forced: the general path reports it.
        let record = r#"{"text": "t", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}"#;
        assert_eq!(both(&openai, record).0, None);
        assert_eq!(both(&text, record).0, None);
        assert!(both(&text, record).1.contains("Text(\"t\")"));
        let mapped = Normaliser::new(None, &[("text".into(), "body".into())]).unwrap();
        assert_eq!(both(&mapped, r#"{"text": "t"}"#).0, None);
    }

    /// Random records built from the pieces the fast path cares about
    /// (known and unknown keys, strings with escapes, quotes, control
    /// characters and CJK, nulls, numbers, turn lists, odd whitespace,
    /// repeated keys): whenever the fast path answers, the general one
    /// must give the same sample.
    #[test]
    fn random_records_agree_with_the_general_path() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let strings = [
            r#""plain""#,
            r#""more plain text""#,
            r#""中文""#,
            r#""""#,
            r#""中文内容""#,
            r#""a\nb\t\"q\" \\ \/""#,
            r#""\u4e2d\ud83d\ude00""#,
            r#""bad \x escape""#,
            "\"raw\ttab\"",
            r#""unterminated"#,
        ];
        let roles = [
            "user",
            "assistant",
            "system",
            "tool",
            "developer",
            "bot",
            "human",
            "gpt",
        ];
        // Mostly valid pieces, so that many records reach the fast path; the
        // invalid ones are rarer.
        let ws = [
            "", " ", "", "\t", "\r\n ", "", " ", "", " ", "", " ", "", "\u{a0}",
        ];
        let keys = [
            "messages",
            "conversations",
            "instruction",
            "input",
            "output",
            "system",
            "text",
            "tools",
            "answer",
        ];
        let n = Normaliser::new(None, &[]).unwrap();
        let (mut accepted, mut total) = (0, 0);
        for _ in 0..50_000 {
            let mut fields = Vec::new();
            for _ in 0..1 + next(3) {
                let key = keys[next(keys.len())];
                let value = match (key, next(8)) {
                    (_, 0) => "null".to_string(),
                    (_, 1) => "42".to_string(),
                    ("messages" | "conversations", k) if k < 7 => {
                        let (a, b) = if key == "messages" {
                            ("role", "content")
                        } else {
                            ("from", "value")
                        };
                        let turns: Vec<String> = (0..next(4))
                            .map(|_| {
                                let role = format!("\"{}\"", roles[next(roles.len())]);
                                let text = strings[next(strings.len())];
                                match next(6) {
                                    0 => format!("{{\"{b}\": {text}, \"{a}\": {role}}}"),
                                    1 => format!("[{role}, {text}]"),
                                    2 => format!("{{\"{a}\": {role}}}"),
                                    _ => format!("{{\"{a}\":{role},\"{b}\" : {text}}}"),
                                }
                            })
                            .collect();
                        format!("[{}]", turns.join(ws[next(ws.len())]).replace("}{", "},{"))
                    }
                    _ => strings[next(strings.len())].to_string(),
                };
                fields.push(format!(
                    "\"{key}\"{}:{}{value}",
                    ws[next(ws.len())],
                    ws[next(ws.len())]
                ));
            }
            let record = format!(
                "{}{{{}}}{}",
                ws[next(ws.len())],
                fields.join(","),
                ws[next(ws.len())]
            );
            let (fast, general) = both(&n, &record);
            total += 1;
            if let Some(fast) = fast {
                accepted += 1;
                assert_eq!(fast, general, "{record}");
            }
        }
        // The generator must reach the fast path often enough to mean
        // something (about 2% of the records: most draw two or more of the
        // known keys, and one of them is then unread).
        assert!(accepted > total / 100, "{accepted} of {total}");
    }
}
