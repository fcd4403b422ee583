//! Reward plugins, the fourth plugin kind: the bundled `accuracy`, `format`
//! and `length` rewards scored through the real components, their settings
//! checked by the host, and a hostile reward (endless loop, trap, NaN, too
//! few scores) stopped with an error naming it while the host keeps working.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tuner::plugins::Kind;
use tuner::plugins::reward::RewardInput;
use tuner::plugins::settings;
use tuner::sample::Message;
use tuner_tests::{TestHome, install, test_limits};

fn input(completion: &str, answer: Option<&str>) -> RewardInput {
    RewardInput {
        prompt: Arc::new(vec![Message {
            role: "user".into(),
            content: "What is 6*7?".into(),
            loss_weight: None,
        }]),
        completion: completion.into(),
        completion_tokens: 10,
        max_completion_tokens: 100,
        finished: true,
        answer: answer.map(str::to_string),
    }
}

/// Scores `inputs` with reward `name` and the settings in `given`.
fn score(
    host: &tuner::plugins::PluginHost,
    name: &str,
    inputs: &[RewardInput],
    given: Value,
) -> Result<Vec<f64>, String> {
    let reward = host
        .reward(name)
        .unwrap_or_else(|| panic!("no reward `{name}`"));
    let schema = reward.settings().unwrap();
    let given: Map<String, Value> = given.as_object().cloned().unwrap_or_default();
    let values = settings::check(&schema, &given).map_err(|p| format!("{p:?}"))?;
    reward.score(inputs, &values).map_err(|e| e.to_string())
}

#[test]
fn the_bundled_rewards_are_reward_plugins() {
    let home = TestHome::new();
    let host = home.start(test_limits());
    let names: Vec<String> = host
        .rewards()
        .iter()
        .map(|r| r.name().to_string())
        .collect();
    assert_eq!(names, ["accuracy", "format", "length"]);
    for r in host.rewards() {
        assert_eq!(r.kind(), Kind::Reward);
        assert!(host.method(r.name()).is_none());
    }
}

#[test]
fn accuracy_compares_final_answers_with_number_normalisation() {
    let home = TestHome::new();
    let host = home.start(test_limits());
    let cases: &[(&str, Option<&str>, f64)] = &[
        ("6*7 is \\boxed{42}.", Some("42"), 1.0),
        (
            "so the answer is \\boxed{\\frac{1}{2}}",
            Some("\\frac{1}{2}"),
            1.0,
        ),
        ("It costs $1,234.", Some("1234"), 1.0),
        ("Step one: 3. Then 40 + 2 = 42", Some("42"), 1.0),
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", Some("72"), 1.0),
        ("the share is 50%", Some("0.5"), 1.0),
        ("three quarters: 3/4", Some("0.75"), 1.0),
        ("<think>maybe 41?</think>It is 42", Some("42"), 1.0),
        ("<think>it is 42</think>I think 41", Some("42"), 0.0),
        ("\\boxed{41}", Some("42"), 0.0),
        ("-5 degrees", Some("-5"), 1.0),
        ("no number here", Some("42"), 0.0),
        ("42", None, 0.0),
        ("The capital is Paris.", Some("paris"), 0.0),
        ("\\boxed{Paris}", Some("paris."), 1.0),
        // A reference written with GSM8K's marker is read the same way.
        (
            "The total is 18",
            Some("16 - 3 - 4 = 9 eggs, 9 * 2 = 18\n#### 18"),
            1.0,
        ),
    ];
    let inputs: Vec<RewardInput> = cases.iter().map(|(c, a, _)| input(c, *a)).collect();
    let got = score(&host, "accuracy", &inputs, json!({})).unwrap();
    for ((completion, answer, want), got) in cases.iter().zip(&got) {
        assert_eq!(got, want, "{completion:?} against {answer:?}");
    }
}

#[test]
fn format_checks_the_thinking_structure_or_a_given_regex() {
    let home = TestHome::new();
    let host = home.start(test_limits());
    let inputs = [
        input("<think>\nadd them\n</think>\n\n5", None),
        input("5", None),
        input("<think>unclosed 5", None),
        input("<think>x</think>   ", None),
        input("<answer>5</answer>", None),
    ];
    let got = score(&host, "format", &inputs, json!({})).unwrap();
    assert_eq!(got, [1.0, 0.0, 0.0, 0.0, 0.0]);
    let got = score(
        &host,
        "format",
        &inputs,
        json!({"pattern": r"<answer>\d+</answer>"}),
    )
    .unwrap();
    assert_eq!(got, [0.0, 0.0, 0.0, 0.0, 1.0]);
    let err = score(&host, "format", &inputs, json!({"pattern": "(unclosed"})).unwrap_err();
    assert!(
        err.contains("plugin `format` failed in `score`: `pattern`: not a valid regex"),
        "{err}"
    );
}

#[test]
fn length_is_dapos_soft_overlong_penalty() {
    let home = TestHome::new();
    let host = home.start(test_limits());
    // L_max = 100, buffer 0.2 → L_cache = 20: free up to 80 tokens.
    let at = |tokens: u32, finished: bool| RewardInput {
        completion_tokens: tokens,
        finished,
        ..input("x", None)
    };
    let inputs = [
        at(10, true),
        at(80, true),
        at(85, true),
        at(90, true),
        at(100, true),
        at(100, false),
    ];
    let got = score(&host, "length", &inputs, json!({})).unwrap();
    let want = [0.0, 0.0, -0.25, -0.5, -1.0, -1.0];
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    let got = score(&host, "length", &inputs, json!({"buffer_fraction": 0.5})).unwrap();
    assert!((got[2] - (-0.7)).abs() < 1e-12, "{got:?}");
    let err = score(&host, "length", &inputs, json!({"buffer_fraction": 0})).unwrap_err();
    assert!(err.contains("buffer_fraction"), "{err}");
}

#[test]
fn a_hostile_reward_is_stopped_and_named_and_the_host_goes_on() {
    let home = TestHome::new();
    install(home.plugin_dir(), "hostile-reward", "hostile");
    let host = home.start(test_limits());
    let inputs = [input("a", None), input("b", None)];
    let started = std::time::Instant::now();
    let err = score(&host, "hostile", &inputs, json!({"mode": "loop"})).unwrap_err();
    assert!(
        err.contains("plugin `hostile` ran past its time limit") && err.contains("`score`"),
        "{err}"
    );
    assert!(started.elapsed().as_secs() < 30, "the loop was not stopped");
    let err = score(&host, "hostile", &inputs, json!({"mode": "trap"})).unwrap_err();
    assert!(err.contains("plugin `hostile` crashed in `score`"), "{err}");
    let err = score(&host, "hostile", &inputs, json!({"mode": "nan"})).unwrap_err();
    assert!(
        err.contains("plugin `hostile` returned an unusable result from `score`: the score of completion 1 is NaN"),
        "{err}"
    );
    let err = score(&host, "hostile", &inputs, json!({"mode": "short"})).unwrap_err();
    assert!(
        err.contains("it returned 1 scores for 2 completions"),
        "{err}"
    );
    // The same plugin, behaving, still answers: each failure threw its
    // instance away, not the plugin.
    assert_eq!(
        score(&host, "hostile", &inputs, json!({"mode": "ok"})).unwrap(),
        [1.0, 1.0]
    );
    assert_eq!(
        score(&host, "length", &inputs, json!({})).unwrap(),
        [0.0, 0.0]
    );
}
