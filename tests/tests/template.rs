//! Chat template, tokenizer, loss mask and token statistics against the real
//! Qwen3 tokenizer files (tests/fixtures/qwen3) and reference outputs from
//! Jinja2 and Python `tokenizers` (tests/fixtures/qwen3/make_expected.py).

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value as Json;
use tuner::sample::{Message, Sample, SampleKind};
use tuner::text::{ChatTemplate, ModelFiles, RenderOptions, SpecialTokens, TemplateError};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3")
}

/// Loading the 11 MB tokenizer once keeps the suite fast.
fn qwen3() -> &'static ModelFiles {
    static FILES: OnceLock<ModelFiles> = OnceLock::new();
    FILES.get_or_init(|| ModelFiles::from_dir(&fixture_dir()).expect("load Qwen3 fixture"))
}

fn read_json(name: &str) -> Json {
    let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn messages_of(case: &Json) -> Vec<Message> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

fn options_of(case: &Json) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap_or(false),
        enable_thinking: case["enable_thinking"].as_bool(),
    }
}

/// The tools of a case as a format plugin hands them over (JSON text, as the
/// generator wrote it; key order shows in the render).
fn tools_of(case: &Json) -> Option<Json> {
    case["tools_json"]
        .as_str()
        .map(|t| Json::String(t.to_owned()))
}

fn chat(messages: Vec<Message>) -> Sample {
    Sample::Chat {
        messages,
        tools: None,
    }
}

/// The trained text of a sample, read back from the *token* mask: each run of
/// consecutive trained tokens decoded separately.
fn trained_token_runs(sample: &Sample, options: &RenderOptions) -> Vec<String> {
    let files = qwen3();
    let tokenized = files.tokenize(sample, options).unwrap();
    let seq = &tokenized.main;
    assert_eq!(seq.ids.len(), seq.weights.len());
    let mut runs = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for (id, weight) in seq.ids.iter().zip(&seq.weights) {
        if *weight > 0.0 {
            current.push(*id);
        } else if !current.is_empty() {
            runs.push(files.tokenizer.decode(&current).unwrap());
            current.clear();
        }
    }
    if !current.is_empty() {
        runs.push(files.tokenizer.decode(&current).unwrap());
    }
    runs
}

/// The trained text from the character spans (before tokenization).
fn trained_span_texts(sample: &Sample, options: &RenderOptions) -> Vec<String> {
    let rendered = tuner::text::render_sample(&qwen3().template, sample, options).unwrap();
    rendered
        .main
        .spans
        .iter()
        .map(|s| rendered.main.text[s.start..s.end].to_owned())
        .collect()
}

#[test]
fn renders_match_jinja2_reference_for_every_case() {
    let cases = read_json("expected_renders.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 10, "fixture lost its cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let rendered = qwen3()
            .template
            .render(
                &messages_of(case),
                case["tools_json"].as_str(),
                &options_of(case),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "case {name}");
    }
}

#[test]
fn rendered_conversations_tokenize_to_python_tokenizers_ids() {
    for case in read_json("expected_renders.json").as_array().unwrap() {
        let text = case["rendered"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = qwen3().tokenizer.encode(text).unwrap().ids;
        assert_eq!(ids, expected, "case {}", case["name"]);
    }
}

#[test]
fn plain_strings_tokenize_to_python_tokenizers_ids() {
    for case in read_json("expected_tokens.json").as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let encoded = qwen3().tokenizer.encode(text).unwrap();
        assert_eq!(encoded.ids, expected, "text {text:?}");
        assert_eq!(
            qwen3().tokenizer.decode(&encoded.ids).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
fn special_tokens_come_from_tokenizer_config() {
    let special = qwen3().template.special_tokens();
    assert_eq!(special.eos.as_deref(), Some("<|im_end|>"));
    assert_eq!(special.bos, None);
    assert_eq!(
        qwen3().template.end_of_turn_tokens(),
        vec!["<|im_end|>".to_owned()]
    );
    assert_eq!(qwen3().tokenizer.token_id("<|im_end|>"), Some(151645));
}

#[test]
fn single_turn_trains_the_answer_with_its_empty_think_block_and_end_of_turn() {
    let sample = chat(vec![
        Message::new("user", "Hello!"),
        Message::new("assistant", "Hi there."),
    ]);
    let expected = vec!["<think>\n\n</think>\n\nHi there.<|im_end|>".to_owned()];
    assert_eq!(
        trained_span_texts(&sample, &RenderOptions::default()),
        expected
    );
    assert_eq!(
        trained_token_runs(&sample, &RenderOptions::default()),
        expected
    );
}

#[test]
fn thinking_off_moves_the_empty_think_block_into_the_prompt() {
    let sample = chat(vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
    ]);
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    assert_eq!(
        trained_token_runs(&sample, &options),
        vec!["Hello!<|im_end|>"]
    );
}

#[test]
fn multi_turn_trains_every_assistant_turn_and_nothing_else() {
    let sample = chat(vec![
        Message::new("system", "Be terse."),
        Message::new("user", "What is 2+2?"),
        Message::new("assistant", "4"),
        Message::new("user", "And times 3?"),
        Message::new("assistant", "12"),
    ]);
    assert_eq!(
        trained_token_runs(&sample, &RenderOptions::default()),
        vec!["4<|im_end|>", "<think>\n\n</think>\n\n12<|im_end|>"]
    );
}

#[test]
fn reasoning_is_trained_where_the_template_keeps_it_and_gone_where_it_drops_it() {
    // Qwen3 strips <think> from assistant turns before the last user query.
    let sample = chat(vec![
        Message::new("user", "What is 17*3?"),
        Message::new("assistant", "<think>\n17*3 = 51.\n</think>\n\n51"),
        Message::new("user", "Plus 9?"),
        Message::new("assistant", "<think>\n51+9 = 60.\n</think>\n\n60"),
    ]);
    assert_eq!(
        trained_token_runs(&sample, &RenderOptions::default()),
        vec![
            "51<|im_end|>",
            "<think>\n51+9 = 60.\n</think>\n\n60<|im_end|>"
        ]
    );
}

#[test]
fn chinese_answer_is_trained_exactly() {
    let sample = chat(vec![
        Message::new("system", "你是一个乐于助人的助手。"),
        Message::new("user", "请用一句话介绍长城。"),
        Message::new("assistant", "长城是中国古代修建的军事防御工程。"),
    ]);
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    assert_eq!(
        trained_token_runs(&sample, &options),
        vec!["长城是中国古代修建的军事防御工程。<|im_end|>"]
    );
}

#[test]
fn tool_calls_are_trained_and_tool_results_are_not() {
    let case = read_json("expected_renders.json")
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tools")
        .unwrap()
        .clone();
    let sample = Sample::Chat {
        messages: messages_of(&case),
        tools: tools_of(&case),
    };
    let runs = trained_token_runs(&sample, &RenderOptions::default());
    assert_eq!(
        runs,
        vec![
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"北京\"}}\n</tool_call><|im_end|>",
            "<think>\n\n</think>\n\n北京今天晴，21°C。<|im_end|>",
        ]
    );
}

#[test]
fn loss_weights_override_the_role_defaults() {
    let mut user = Message::new("user", "Teach me this too.");
    user.loss_weight = Some(0.5);
    let mut first = Message::new("assistant", "Skipped answer");
    first.loss_weight = Some(0.0);
    let sample = chat(vec![
        Message::new("user", "q1"),
        first,
        user,
        Message::new("assistant", "Kept answer"),
    ]);
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    let tokenized = qwen3().tokenize(&sample, &options).unwrap();
    let mut weights: Vec<f32> = tokenized
        .main
        .weights
        .iter()
        .copied()
        .filter(|w| *w > 0.0)
        .collect();
    weights.dedup();
    assert_eq!(weights, vec![0.5, 1.0]);
    assert_eq!(
        trained_token_runs(&sample, &options),
        vec!["Teach me this too.<|im_end|>", "Kept answer<|im_end|>"]
    );
}

#[test]
fn preference_pairs_train_only_the_answers_never_the_prompt() {
    let sample = Sample::Preference {
        prompt: vec![
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello"),
            Message::new("user", "Capital of France?"),
        ],
        chosen: vec![Message::new("assistant", "Paris.")],
        rejected: vec![Message::new(
            "assistant",
            "Lyon, I think, or maybe Marseille.",
        )],
    };
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    assert_eq!(
        trained_token_runs(&sample, &options),
        vec!["Paris.<|im_end|>"]
    );
    let tokenized = qwen3().tokenize(&sample, &options).unwrap();
    let rejected = tokenized.rejected.unwrap();
    let trained: Vec<u32> = rejected
        .ids
        .iter()
        .zip(&rejected.weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        qwen3().tokenizer.decode(&trained).unwrap(),
        "Lyon, I think, or maybe Marseille.<|im_end|>"
    );
}

#[test]
fn prompt_samples_end_with_the_generation_header_and_train_nothing() {
    let sample = Sample::Prompt {
        prompt: vec![Message::new("user", "2+2?")],
        answer: Some("4".into()),
    };
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    let tokenized = qwen3().tokenize(&sample, &options).unwrap();
    assert_eq!(tokenized.main.trained_tokens(), 0);
    let text = qwen3().tokenizer.decode(&tokenized.main.ids).unwrap();
    assert_eq!(
        text,
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    );
}

#[test]
fn text_samples_train_everything_and_end_with_eos() {
    let sample = Sample::Text {
        text: "长城很长。".into(),
    };
    let tokenized = qwen3()
        .tokenize(&sample, &RenderOptions::default())
        .unwrap();
    assert_eq!(tokenized.main.trained_tokens(), tokenized.main.len());
    assert_eq!(tokenized.main.ids.last(), Some(&151645));
}

#[test]
fn stats_agree_with_independent_token_counts() {
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    let tok = &qwen3().tokenizer;
    let short = chat(vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
    ]);
    let long = chat(vec![
        Message::new("system", "系统提示"),
        Message::new("user", "讲一个很长的故事。"),
        Message::new(
            "assistant",
            "从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。",
        ),
        Message::new("user", "再讲一遍"),
        Message::new("assistant", "从前有座山。"),
    ]);
    let text = Sample::Text {
        text: "plain text for pre-training".into(),
    };
    let prompt = Sample::Prompt {
        prompt: vec![Message::new("user", "1+1?")],
        answer: None,
    };
    let samples = vec![short.clone(), long.clone(), text, prompt];

    let short_total = tok
        .count(
            &qwen3()
                .template
                .render(&messages_of_sample(&short), None, &options)
                .unwrap(),
        )
        .unwrap();
    let short_response = tok.count("Hello!<|im_end|>").unwrap();
    let long_total = tok
        .count(
            &qwen3()
                .template
                .render(&messages_of_sample(&long), None, &options)
                .unwrap(),
        )
        .unwrap();
    let long_response = tok
        .count("从前有座山，山里有座庙，庙里有个老和尚在给小和尚讲故事。<|im_end|>")
        .unwrap()
        + tok.count("从前有座山。<|im_end|>").unwrap();

    let counts = qwen3().sample_tokens(&short, &options).unwrap();
    assert_eq!(
        (counts.total_tokens, counts.response_tokens),
        (short_total, short_response)
    );
    assert_eq!(counts.prompt_tokens, short_total - short_response);

    let max_seq_len = short_total + 1;
    let stats = qwen3().stats(&samples, &options, max_seq_len);
    assert_eq!(stats.samples, 4);
    assert_eq!(stats.failed, 0);
    assert_eq!(stats.turns, 3);
    assert_eq!(stats.messages, 8);
    let response = stats.response_tokens.as_ref().unwrap();
    assert_eq!(response.max, long_response);
    assert_eq!(response.min, 0, "the prompt sample trains nothing");
    let total = stats.total_tokens.as_ref().unwrap();
    assert_eq!(total.max, long_total);
    assert_eq!(
        stats.over_max_seq_len, 1,
        "only the long conversation exceeds {max_seq_len}"
    );
    assert_eq!(stats.roles.get("assistant"), Some(&3));
    assert_eq!(stats.roles.get("user"), Some(&4));
    assert_eq!(stats.roles.get("system"), Some(&1));
    assert_eq!(stats.kinds.get(&SampleKind::Chat), Some(&2));
    assert_eq!(stats.kinds.get(&SampleKind::Text), Some(&1));
    assert_eq!(stats.kinds.get(&SampleKind::Prompt), Some(&1));

    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["kinds"]["chat"], 2);
    assert!(json["total_tokens"]["p95"].is_u64());
}

fn messages_of_sample(sample: &Sample) -> Vec<Message> {
    match sample {
        Sample::Chat { messages, .. } => messages.clone(),
        _ => unreachable!(),
    }
}

#[test]
fn stats_count_failures_without_stopping() {
    let template = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}{{ m.content }}{{ eos_token }}{% endfor %}",
        SpecialTokens { eos: Some("<|im_end|>".into()), ..Default::default() },
    )
    .unwrap();
    let good = chat(vec![
        Message::new("user", "a"),
        Message::new("assistant", "b"),
    ]);
    let bad = chat(vec![Message::new("tool", "x")]);
    let stats = tuner::text::token_stats(
        &template,
        &qwen3().tokenizer,
        [&good, &bad, &good],
        &RenderOptions::default(),
        100,
    );
    assert_eq!((stats.samples, stats.failed), (2, 1));
    assert_eq!(stats.errors[0].index, 1);
    assert!(
        stats.errors[0].message.contains("no tools here"),
        "{}",
        stats.errors[0].message
    );
}

#[test]
fn preview_marks_the_trained_text() {
    let sample = chat(vec![
        Message::new("user", "Hi"),
        Message::new("assistant", "Hello!"),
    ]);
    let options = RenderOptions {
        enable_thinking: Some(false),
        ..Default::default()
    };
    let preview = qwen3().preview(&sample, &options).unwrap();
    assert_eq!(preview.sequences.len(), 1);
    let seq = &preview.sequences[0];
    assert_eq!(seq.label, "conversation");
    let joined: String = seq.segments.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(joined, seq.text);
    assert_eq!(
        seq.marked("[[", "]]"),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n[[Hello!<|im_end|>]]\n"
    );
    let json = serde_json::to_value(&preview).unwrap();
    assert_eq!(json["sequences"][0]["segments"][1]["weight"], 1.0);
}

#[test]
fn generic_chatml_template_without_thinking_is_masked_too() {
    // A template unlike Qwen3's (no history rewriting, BOS token): the probe
    // method does not depend on the template's shape.
    let template = ChatTemplate::new(
        "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        SpecialTokens {
            bos: Some("<s>".into()),
            eos: Some("<|endoftext|>".into()),
            additional: vec!["<|im_start|>".into(), "<|im_end|>".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let messages = vec![
        Message::new("user", "Q"),
        Message::new("assistant", "  A1  "),
        Message::new("user", "Q2"),
        Message::new("assistant", "A2"),
    ];
    let rendered = template
        .render_trained(&messages, None, &RenderOptions::default(), 0)
        .unwrap();
    let texts: Vec<&str> = rendered
        .spans
        .iter()
        .map(|s| &rendered.text[s.start..s.end])
        .collect();
    assert_eq!(texts, vec!["A1<|im_end|>", "A2<|im_end|>"]);
}

#[test]
fn raise_exception_is_reported_as_a_rejection() {
    let template = ChatTemplate::new(
        "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start with a user turn') }}{% endif %}ok",
        SpecialTokens::default(),
    )
    .unwrap();
    let err = template
        .render(
            &[Message::new("assistant", "x")],
            None,
            &RenderOptions::default(),
        )
        .unwrap_err();
    match &err {
        TemplateError::Raised(message) => {
            assert_eq!(message, "Conversations must start with a user turn")
        }
        other => panic!("expected Raised, got {other:?}"),
    }
}

#[test]
fn template_syntax_errors_name_the_line() {
    let err = ChatTemplate::new("line one\n{% if %}", SpecialTokens::default()).unwrap_err();
    assert!(matches!(err, TemplateError::Syntax(_)));
    assert!(err.to_string().contains("chat_template:2"), "{err}");
}

#[test]
fn bad_tools_json_names_the_field() {
    let err = qwen3()
        .template
        .render(
            &[Message::new("user", "x")],
            Some("[{not json"),
            &RenderOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("field \"tools\""), "{err}");
}

#[test]
fn a_model_without_a_template_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    let err = ChatTemplate::from_model_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TemplateError::Missing { .. }), "{err}");
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{{ messages[0].content }}{{ eos_token }}",
    )
    .unwrap();
    let template = ChatTemplate::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        template
            .render(
                &[Message::new("user", "x")],
                None,
                &RenderOptions::default()
            )
            .unwrap(),
        "x<|endoftext|>"
    );
}

#[test]
fn samples_round_trip_through_json_with_a_kind_tag() {
    let sample = Sample::Chat {
        messages: vec![Message::new("user", "x")],
        tools: None,
    };
    let json = serde_json::to_string(&sample).unwrap();
    assert_eq!(
        json,
        r#"{"kind":"chat","messages":[{"role":"user","content":"x"}]}"#
    );
    assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
}

#[test]
fn every_step_of_a_multi_step_tool_call_trains_its_reasoning() {
    let case = read_json("expected_renders.json")
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "reasoning_multi_step_tool")
        .unwrap()
        .clone();
    let sample = Sample::Chat {
        messages: messages_of(&case),
        tools: tools_of(&case),
    };
    let runs = trained_token_runs(&sample, &RenderOptions::default());
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].starts_with("<think>\nI need both cities.\n</think>\n\n<tool_call>"),
        "{}",
        runs[0]
    );
    assert!(runs[0].ends_with("</tool_call><|im_end|>"), "{}", runs[0]);
    assert_eq!(
        runs[1],
        "<think>\n19 > 14.\n</think>\n\nRome is warmer.<|im_end|>"
    );
}

#[test]
fn parallel_stats_equal_sequential_stats() {
    let mut samples = Vec::new();
    for i in 0..25 {
        samples.push(chat(vec![
            Message::new("user", format!("question {i}")),
            Message::new("assistant", "答".repeat(i + 1)),
        ]));
        samples.push(Sample::Text {
            text: "word ".repeat(i),
        });
        if i % 7 == 0 {
            // Renders, but its trained tool turn is never written by this
            // template: a per-sample failure.
            samples.push(Sample::Chat {
                messages: vec![Message {
                    role: "tool".into(),
                    content: "x".into(),
                    loss_weight: Some(1.0),
                }],
                tools: None,
            });
        }
    }
    let template = ChatTemplate::new(
        "{% for m in messages %}{% if m.role != 'tool' %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}",
        SpecialTokens { eos: Some("<|im_end|>".into()), ..Default::default() },
    )
    .unwrap();
    let options = RenderOptions::default();
    let sequential =
        tuner::text::token_stats(&template, &qwen3().tokenizer, &samples, &options, 20);
    let parallel =
        tuner::text::token_stats_parallel(&template, &qwen3().tokenizer, &samples, &options, 20);
    assert_eq!(sequential, parallel);
    assert_eq!(sequential.failed, 4);
    assert_eq!(
        sequential
            .errors
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        vec![2, 17, 32, 47]
    );
}

#[test]
fn other_template_styles_render_like_jinja2() {
    let cases = read_json("expected_compat.json");
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let special = SpecialTokens {
            bos: Some("<bos>".into()),
            eos: Some("<|im_end|>".into()),
            ..Default::default()
        };
        let template = ChatTemplate::new(case["template"].as_str().unwrap(), special).unwrap();
        let extra = case["extra_json"]
            .as_str()
            .map(|text| ChatTemplate::parse_tools(text).unwrap());
        let rendered = template
            .render_with_variables(
                &messages_of(case),
                None,
                &options_of(case),
                extra.map(|v| ("extra", v)),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rendered, case["rendered"].as_str().unwrap(), "case {name}");
    }
}
