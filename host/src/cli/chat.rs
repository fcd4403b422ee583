//! `tuner chat MODEL`: talk to a model in the terminal, answers streamed as
//! they are generated; or, with `--prompt` (or a prompt piped on stdin), one
//! answer for scripts.
//!
//! The whole conversation is rendered with the model's chat template each
//! turn. Only answers are kept in it: Qwen3's template drops the reasoning
//! of earlier turns anyway.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rustyline::error::ReadlineError;
use serde_json::Value;

use crate::app::models::WhenMissing;
use crate::app::{App, ModelLookupError};
use crate::infer::{
    Engine, EngineOptions, Event, FinishReason, GenerationRequest, ModelOptions, ReasoningSplitter,
    SamplingParams,
};
use crate::model::qwen3::Quant;
use crate::sample::Message;

/// The name `--adapter` is loaded under in the engine.
const ADAPTER: &str = "adapter";

#[derive(Debug, Args)]
#[command(after_help = "\
In the terminal: /reset clears the conversation, /system TEXT sets the system \
prompt (and clears the conversation), /think turns thinking on or off, /exit \
(or Ctrl-D) quits. Ctrl-C stops an answer being written.

When stdin is not a terminal (a pipe, a file), it is read as one prompt and \
answered once, as with --prompt.")]
pub struct ChatArgs {
    /// A model folder, a cached hub id, or a hub id to download (as `tuner pull`).
    pub model: String,
    /// A PEFT LoRA adapter folder to answer with (the base model is MODEL).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// System prompt.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Most new tokens per answer (less when the context is nearly full).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy (default: the model's
    /// generation_config.json, else 0.7).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Nucleus sampling (default: the model's generation_config.json, else 1).
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Keep the K most likely tokens, 0 for all (default: the model's
    /// generation_config.json, else 0).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Sampler seed: the same seed, conversation and settings give the same answer.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Let the model think before it answers (Qwen3's default).
    #[arg(long, overrides_with = "no_think")]
    pub think: bool,
    /// Answer without thinking (Qwen3's `enable_thinking=false`).
    #[arg(long, overrides_with = "think")]
    pub no_think: bool,
    /// Load the base weights quantized.
    #[arg(long, value_enum, value_name = "KIND")]
    pub quantization: Option<Quantization>,
    /// Answer this prompt once and exit (stdout: the answer only).
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// One-shot mode: also print the reasoning, to stderr.
    #[arg(long)]
    pub show_reasoning: bool,
    /// One-shot mode: print {"model", "content", "reasoning_content",
    /// "finish_reason", "usage"} as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Quantization {
    Nf4,
    Int8,
}

pub fn run(app: App, args: ChatArgs) -> Result<ExitCode> {
    let prompt = match &args.prompt {
        Some(p) => Some(p.clone()),
        None if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the prompt from stdin")?;
            Some(text.trim_end().to_string())
        }
        None => None,
    };
    if prompt.is_none() && (args.json || args.show_reasoning) {
        bail!(
            "--json and --show-reasoning answer one prompt: give --prompt TEXT or pipe it on stdin"
        );
    }
    if prompt.as_deref().is_some_and(|p| p.trim().is_empty()) {
        bail!("the prompt is empty");
    }
    let chat = Chat::open(&app, &args)?;
    match prompt {
        Some(prompt) => chat.one_shot(&args, prompt),
        None => chat.interactive(&app, args.system),
    }
}

/// A loaded model and the settings every turn uses.
struct Chat {
    engine: Engine,
    adapter: Option<String>,
    params: SamplingParams,
    thinking: bool,
}

/// One finished answer.
struct Answer {
    content: String,
    reasoning: String,
    finish: FinishReason,
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Chat {
    fn open(app: &App, args: &ChatArgs) -> Result<Chat> {
        let dir = match app.model_dir(&args.model, WhenMissing::Fail) {
            Err(ModelLookupError::NotCached { .. }) => {
                eprintln!("{} is not in the cache; downloading it", args.model);
                let bars = Arc::new(super::pull::Bars::new());
                let progress: crate::hub::Progress = bars.clone();
                let dir = app.model_dir(&args.model, WhenMissing::Pull(&progress));
                bars.finish();
                dir?
            }
            dir => dir?,
        };
        let defaults = sampling_defaults(&read_generation_config(&dir)?);
        let params = SamplingParams {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature.unwrap_or(defaults.temperature),
            top_p: args.top_p.unwrap_or(defaults.top_p),
            top_k: args.top_k.unwrap_or(defaults.top_k),
            repetition_penalty: defaults.repetition_penalty,
            seed: args.seed,
            ..SamplingParams::default()
        };
        params.validate()?;
        let model = ModelOptions {
            quantization: match args.quantization {
                None => Quant::None,
                Some(Quantization::Nf4) => Quant::Nf4,
                Some(Quantization::Int8) => Quant::Int8,
            },
            ..ModelOptions::default()
        };
        let options = EngineOptions {
            max_batch: 1,
            ..EngineOptions::default()
        };
        // Found (or pulled) above: this lookup only reads the cache.
        let engine = app.start_engine(&args.model, None, model, options, WhenMissing::Fail)?;
        if engine.template().is_none() {
            bail!(
                "{} has no chat template (tokenizer_config.json has no chat_template); \
                 chat needs an instruction-tuned model",
                args.model
            );
        }
        let adapter = match &args.adapter {
            Some(path) => {
                engine
                    .load_adapter(ADAPTER, path)
                    .with_context(|| format!("loading the adapter {}", path.display()))?;
                Some(ADAPTER.to_string())
            }
            None => None,
        };
        Ok(Chat {
            engine,
            adapter,
            params,
            thinking: !args.no_think,
        })
    }

    /// Generates the next assistant turn of `messages`; `out` gets the
    /// deltas as they come. None when `stop` was raised first.
    fn answer(
        &self,
        messages: &[Message],
        stop: &AtomicBool,
        out: &mut dyn FnMut(&str, &str),
    ) -> Result<Option<Answer>> {
        let prompt = self
            .engine
            .chat_prompt(messages, None, Some(self.thinking))?;
        let room = self.engine.context_len().saturating_sub(prompt.ids.len());
        if room == 0 {
            bail!(
                "the conversation fills the model's context ({} tokens); /reset to start over",
                self.engine.context_len()
            );
        }
        let request = GenerationRequest {
            adapter: self.adapter.clone(),
            params: SamplingParams {
                max_new_tokens: self.params.max_new_tokens.min(room),
                ..self.params.clone()
            },
            ..GenerationRequest::new(prompt.ids, SamplingParams::default())
        };
        let mut generation = self.engine.submit(request)?;
        let mut splitter = ReasoningSplitter::new(prompt.opens_thinking);
        let (mut content, mut reasoning) = (String::new(), String::new());
        let mut emit = |text: &str, last: bool| {
            let mut split = splitter.push(text);
            if last {
                let rest = splitter.finish();
                split.reasoning.push_str(&rest.reasoning);
                split.content.push_str(&rest.content);
            }
            out(&split.reasoning, &split.content);
            reasoning.push_str(&split.reasoning);
            content.push_str(&split.content);
        };
        while let Some(event) = generation.blocking_next() {
            if stop.load(Ordering::SeqCst) {
                return Ok(None); // dropping `generation` cancels it
            }
            match event {
                Event::Token { text, .. } => emit(&text, false),
                Event::Finished {
                    reason,
                    text,
                    completion_tokens,
                    ..
                } => {
                    emit(&text, true);
                    return Ok(Some(Answer {
                        content,
                        reasoning,
                        finish: reason,
                        prompt_tokens: generation.prompt_tokens,
                        completion_tokens,
                    }));
                }
                Event::Failed { message } => bail!(message),
            }
        }
        bail!("the model's engine stopped")
    }

    fn one_shot(&self, args: &ChatArgs, prompt: String) -> Result<ExitCode> {
        let mut messages: Vec<Message> = args
            .system
            .iter()
            .map(|s| Message::new("system", s.as_str()))
            .collect();
        messages.push(Message::new("user", prompt));
        let never = AtomicBool::new(false);
        let (json, show_reasoning) = (args.json, args.show_reasoning);
        let mut stdout = std::io::stdout();
        let answer = self
            .answer(&messages, &never, &mut |reasoning, content| {
                if json {
                    return;
                }
                if show_reasoning && !reasoning.is_empty() {
                    eprint!("{reasoning}");
                }
                if !content.is_empty() {
                    let _ = write!(stdout, "{content}");
                    let _ = stdout.flush();
                }
            })?
            .context("stopped")?;
        if json {
            let out = serde_json::json!({
                "model": self.engine.name(),
                "content": answer.content,
                "reasoning_content": (!answer.reasoning.is_empty()).then_some(&answer.reasoning),
                "finish_reason": answer.finish.as_str(),
                "usage": {
                    "prompt_tokens": answer.prompt_tokens,
                    "completion_tokens": answer.completion_tokens,
                },
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            if show_reasoning && !answer.reasoning.is_empty() {
                eprintln!();
            }
            println!();
        }
        Ok(ExitCode::SUCCESS)
    }

    fn interactive(mut self, app: &App, mut system: Option<String>) -> Result<ExitCode> {
        let mut editor = rustyline::DefaultEditor::new()?;
        let history_file = chat_history_file(app);
        let _ = editor.load_history(&history_file); // none yet on first use
        let stop = interrupt_flag();
        let styled = std::io::stdout().is_terminal();
        let mut history: Vec<Message> = Vec::new();
        eprintln!(
            "chatting with {}{} (thinking {}); /help for commands, /exit or Ctrl-D to quit",
            self.engine.name(),
            if self.adapter.is_some() {
                " + adapter"
            } else {
                ""
            },
            on_off(self.thinking)
        );
        loop {
            let line = match editor.readline(">>> ") {
                Ok(line) => line,
                Err(ReadlineError::Interrupted) => continue, // Ctrl-C clears the line
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e.into()),
            };
            if line.trim().is_empty() {
                continue;
            }
            let _ = editor.add_history_entry(line.as_str());
            match parse_input(&line) {
                Input::Exit => break,
                Input::Help => eprintln!("{HELP}"),
                Input::Reset => {
                    history.clear();
                    eprintln!("(conversation cleared)");
                }
                Input::System(text) => {
                    history.clear();
                    eprintln!(
                        "{}",
                        match &text {
                            Some(_) => "(system prompt set; conversation cleared)",
                            None => "(system prompt removed; conversation cleared)",
                        }
                    );
                    system = text;
                }
                Input::Think => {
                    self.thinking = !self.thinking;
                    eprintln!("(thinking {})", on_off(self.thinking));
                }
                Input::Unknown(name) => eprintln!("unknown command /{name}; /help lists them"),
                Input::Message(text) => {
                    let mut messages: Vec<Message> = system
                        .iter()
                        .map(|s| Message::new("system", s.as_str()))
                        .collect();
                    messages.extend(history.iter().cloned());
                    messages.push(Message::new("user", text.as_str()));
                    stop.store(false, Ordering::SeqCst);
                    let mut printer = Printer::new(styled);
                    let result = self.answer(&messages, stop, &mut |r, c| printer.write(r, c));
                    printer.end();
                    match result {
                        Ok(Some(answer)) => {
                            if answer.finish == FinishReason::Length {
                                eprintln!("(cut off at the token limit)");
                            }
                            history.push(Message::new("user", text));
                            history.push(Message::new("assistant", answer.content));
                        }
                        Ok(None) => eprintln!("(stopped)"),
                        Err(e) => eprintln!("error: {e:#}"),
                    }
                }
            }
        }
        if let Some(parent) = history_file.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = editor.save_history(&history_file) {
            tracing::warn!("could not save {}: {e}", history_file.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}

const HELP: &str = "\
/reset         clear the conversation
/system TEXT   set the system prompt and clear the conversation (/system alone removes it)
/think         turn thinking on or off
/exit          quit (also Ctrl-D); Ctrl-C stops an answer";

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// `chat_history.txt` in the tuner home (`TUNER_HOME`), else in the
/// platform's data folder next to the database.
fn chat_history_file(app: &App) -> PathBuf {
    let home = app.home();
    match &home.root {
        Some(root) => root.join("chat_history.txt"),
        None => home
            .database
            .parent()
            .map(|d| d.join("chat_history.txt"))
            .unwrap_or_else(|| PathBuf::from("chat_history.txt")),
    }
}

/// Streams reasoning (dimmed on a terminal) then the answer to stdout.
struct Printer {
    styled: bool,
    in_reasoning: bool,
    wrote: bool,
}

impl Printer {
    const DIM: &str = "\x1b[2m";
    const RESET: &str = "\x1b[0m";

    fn new(styled: bool) -> Self {
        Printer {
            styled,
            in_reasoning: false,
            wrote: false,
        }
    }

    fn write(&mut self, reasoning: &str, content: &str) {
        let mut out = std::io::stdout().lock();
        if !reasoning.is_empty() {
            if !self.in_reasoning && self.styled {
                let _ = write!(out, "{}", Self::DIM);
            }
            self.in_reasoning = true;
            let _ = write!(out, "{reasoning}");
        }
        if !content.is_empty() {
            if self.in_reasoning {
                if self.styled {
                    let _ = write!(out, "{}", Self::RESET);
                }
                let _ = writeln!(out);
                self.in_reasoning = false;
            }
            let _ = write!(out, "{content}");
        }
        self.wrote |= !(reasoning.is_empty() && content.is_empty());
        let _ = out.flush();
    }

    fn end(&mut self) {
        let mut out = std::io::stdout().lock();
        if self.in_reasoning && self.styled {
            let _ = write!(out, "{}", Self::RESET);
        }
        if self.wrote {
            let _ = writeln!(out);
        }
        let _ = out.flush();
    }
}

/// What a line typed at the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Message(String),
    Reset,
    /// None removes the system prompt.
    System(Option<String>),
    Think,
    Help,
    Exit,
    Unknown(String),
}

/// A line starting with `/` is a command (`//text` sends `/text`).
fn parse_input(line: &str) -> Input {
    let trimmed = line.trim();
    let Some(command) = trimmed.strip_prefix('/') else {
        return Input::Message(line.trim_end().to_string());
    };
    if command.starts_with('/') {
        return Input::Message(command.to_string());
    }
    let (name, rest) = command
        .split_once(char::is_whitespace)
        .map(|(n, r)| (n, r.trim()))
        .unwrap_or((command, ""));
    match name {
        "reset" | "clear" => Input::Reset,
        "system" => Input::System((!rest.is_empty()).then(|| rest.to_string())),
        "think" => Input::Think,
        "help" | "?" => Input::Help,
        "exit" | "quit" | "bye" => Input::Exit,
        _ => Input::Unknown(name.to_string()),
    }
}

/// Sampling settings a model ships in `generation_config.json`.
#[derive(Debug, Clone, PartialEq)]
struct SamplingDefaults {
    temperature: f32,
    top_p: f32,
    top_k: usize,
    repetition_penalty: f32,
}

/// The model's own sampling settings, as transformers applies them
/// (`do_sample: false` is greedy); 0.7 / 1 / 0 / 1 where it says nothing.
fn sampling_defaults(config: &Value) -> SamplingDefaults {
    let float = |key: &str| config.get(key).and_then(Value::as_f64).map(|v| v as f32);
    let greedy = config.get("do_sample").and_then(Value::as_bool) == Some(false);
    SamplingDefaults {
        temperature: if greedy {
            0.0
        } else {
            float("temperature").unwrap_or(0.7)
        },
        top_p: float("top_p").filter(|p| *p > 0.0).unwrap_or(1.0),
        top_k: config
            .get("top_k")
            .and_then(Value::as_u64)
            .map_or(0, |k| k as usize),
        repetition_penalty: float("repetition_penalty")
            .filter(|p| *p > 0.0)
            .unwrap_or(1.0),
    }
}

/// `generation_config.json` of `dir`, or `{}` when there is none.
fn read_generation_config(dir: &Path) -> Result<Value> {
    let path = dir.join("generation_config.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Default::default())),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Raised by Ctrl-C while an answer is being written. At the prompt the
/// line editor reads Ctrl-C as a key (the terminal is in raw mode then), so
/// the handler only ever sees the Ctrl-C pressed during generation.
fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    #[cfg(unix)]
    {
        extern "C" fn on_sigint(_: libc::c_int) {
            STOP.store(true, Ordering::SeqCst);
        }
        let handler: extern "C" fn(libc::c_int) = on_sigint;
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
    }
    &STOP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse_input("hello"), Input::Message("hello".into()));
        assert_eq!(
            parse_input("  hi there  "),
            Input::Message("  hi there".into())
        );
        assert_eq!(parse_input("/reset"), Input::Reset);
        assert_eq!(parse_input(" /exit "), Input::Exit);
        assert_eq!(parse_input("/think"), Input::Think);
        assert_eq!(
            parse_input("/system  You are terse. "),
            Input::System(Some("You are terse.".into()))
        );
        assert_eq!(parse_input("/system"), Input::System(None));
        assert_eq!(parse_input("/nope x"), Input::Unknown("nope".into()));
        assert_eq!(
            parse_input("//etc/hosts?"),
            Input::Message("/etc/hosts?".into())
        );
    }

    #[test]
    fn sampling_defaults_follow_generation_config() {
        // Qwen3's own generation_config.json.
        let qwen3 = serde_json::json!({
            "bos_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],
            "pad_token_id": 151643, "temperature": 0.6, "top_k": 20, "top_p": 0.95
        });
        assert_eq!(
            sampling_defaults(&qwen3),
            SamplingDefaults {
                temperature: 0.6,
                top_p: 0.95,
                top_k: 20,
                repetition_penalty: 1.0
            }
        );
        assert_eq!(
            sampling_defaults(&serde_json::json!({})),
            SamplingDefaults {
                temperature: 0.7,
                top_p: 1.0,
                top_k: 0,
                repetition_penalty: 1.0
            }
        );
        let greedy = serde_json::json!({"do_sample": false, "temperature": 0.9,
            "repetition_penalty": 1.05});
        let d = sampling_defaults(&greedy);
        assert_eq!((d.temperature, d.repetition_penalty), (0.0, 1.05));
    }

    #[test]
    fn a_missing_generation_config_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_generation_config(dir.path()).unwrap(),
            serde_json::json!({})
        );
        std::fs::write(dir.path().join("generation_config.json"), "{\"top_k\": 5}").unwrap();
        assert_eq!(read_generation_config(dir.path()).unwrap()["top_k"], 5);
    }
}
