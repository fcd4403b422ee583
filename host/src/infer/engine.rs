//! The serving engine: one thread per loaded model that owns the weights and
//! runs continuous batching, and a cheap handle ([`Engine`]) to submit
//! requests from any thread or task.
//!
//! Requests wait in a bounded FIFO queue; between any two decode steps the
//! thread admits waiting requests while the batch has room, so a new
//! request starts within one step and a finished one frees its slot at
//! once. A request whose reader is dropped (a client that disconnected
//! mid-stream) is removed before the next step.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, RwLock};

use anyhow::Result;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::adapter::LoadedAdapter;
use super::batch::{Batch, RequestKey};
use super::forward::{AttachedAdapters, Decoder};
use super::model::{ChatPrompt, ServedModel, chat_prompt};
use super::params::ParamError;
use super::request::{Event, GenerationRequest};
use crate::model::qwen3::Qwen3;
use crate::sample::Message;
use crate::text::{ChatTemplate, Tokenizer};

/// Limits of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Sequences decoded together in one step.
    pub max_batch: usize,
    /// Requests waiting beyond those running; more get [`SubmitError::QueueFull`].
    pub max_queue: usize,
    /// Prompt tokens computed per step across new requests (chunked
    /// prefill: a long prompt does not stall running streams for long).
    pub prefill_chunk: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_batch: 32,
            max_queue: 256,
            prefill_chunk: 512,
        }
    }
}

/// Why a request was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is busy: {queued} requests are waiting (the limit); retry shortly")]
    QueueFull { queued: usize },
    #[error("no adapter named {0:?} is loaded")]
    UnknownAdapter(String),
    #[error(
        "this model's context length is {context_len} tokens, but the request needs {} ({prompt_tokens} in the prompt and {max_new_tokens} to generate); shorten the prompt or lower max_tokens",
        prompt_tokens + max_new_tokens
    )]
    TooLong {
        prompt_tokens: usize,
        max_new_tokens: usize,
        context_len: usize,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("n must be between 1 and {max}, got {n}")]
    TooManyChoices { n: usize, max: usize },
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error("the model's engine has stopped")]
    Stopped,
}

/// The events of one submitted request. Dropping it cancels the request.
pub struct Generation {
    pub prompt_tokens: usize,
    events: UnboundedReceiver<Event>,
}

impl Generation {
    /// The next event; None once every choice finished (or the engine failed).
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// [`Self::next`] for synchronous callers (not inside an async task).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }
}

struct Job {
    key: RequestKey,
    request: GenerationRequest,
    adapter: Option<Arc<LoadedAdapter>>,
    events: UnboundedSender<Event>,
}

struct Shared {
    name: String,
    model: Arc<Qwen3>,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    end_tokens: Vec<u32>,
    context_len: usize,
    adapters: RwLock<BTreeMap<String, Arc<LoadedAdapter>>>,
    jobs: Sender<Job>,
    next_key: AtomicUsize,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    options: EngineOptions,
}

/// A handle to a model's engine thread; clones share it. The thread ends
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

/// What an engine is doing, for `/v1/models` and health output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLoad {
    pub running: usize,
    pub waiting: usize,
}

impl Engine {
    /// Starts the engine thread for `model`.
    pub fn start(model: ServedModel, options: EngineOptions) -> Result<Engine> {
        let (jobs, inbox) = std::sync::mpsc::channel();
        let weights = Arc::new(model.model);
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let thread = EngineThread {
            model: weights.clone(),
            tokenizer: model.tokenizer.clone(),
            end_tokens: model.end_tokens.clone(),
            context_len: model.context_len,
            options,
            waiting: waiting.clone(),
            running: running.clone(),
        };
        std::thread::Builder::new()
            .name(format!("engine {}", model.name))
            .spawn(move || thread.run(inbox))?;
        Ok(Engine {
            shared: Arc::new(Shared {
                name: model.name,
                model: weights,
                tokenizer: model.tokenizer,
                template: model.template,
                end_tokens: model.end_tokens,
                context_len: model.context_len,
                adapters: RwLock::new(BTreeMap::new()),
                jobs,
                next_key: AtomicUsize::new(0),
                waiting,
                running,
                options,
            }),
        })
    }

    /// The name requests select the base model by.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.shared.tokenizer
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.shared.template.as_ref()
    }

    pub fn context_len(&self) -> usize {
        self.shared.context_len
    }

    /// The tokens that end a turn (see [`ServedModel::end_tokens`]).
    pub fn end_tokens(&self) -> &[u32] {
        &self.shared.end_tokens
    }

    pub fn options(&self) -> EngineOptions {
        self.shared.options
    }

    pub fn load(&self) -> EngineLoad {
        EngineLoad {
            running: self.shared.running.load(Ordering::Relaxed),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
        }
    }

    /// Renders a chat with the model's template (see [`ServedModel::chat_prompt`]).
    pub fn chat_prompt(
        &self,
        messages: &[Message],
        tools: Option<&str>,
        enable_thinking: Option<bool>,
    ) -> Result<ChatPrompt> {
        chat_prompt(
            self.template(),
            self.tokenizer(),
            messages,
            tools,
            enable_thinking,
        )
    }

    /// Loads the PEFT folder `dir` as adapter `name` (replacing one of that
    /// name). Requests already running keep the adapter they started with.
    pub fn load_adapter(&self, name: &str, dir: &Path) -> Result<Arc<LoadedAdapter>> {
        let adapter = Arc::new(LoadedAdapter::load(name, dir, &self.shared.model)?);
        self.shared
            .adapters
            .write()
            .expect("adapter table lock")
            .insert(name.to_string(), adapter.clone());
        Ok(adapter)
    }

    /// Unloads adapter `name`; false if none was loaded.
    pub fn unload_adapter(&self, name: &str) -> bool {
        self.shared
            .adapters
            .write()
            .expect("adapter table lock")
            .remove(name)
            .is_some()
    }

    /// The loaded adapters, by name.
    pub fn adapters(&self) -> Vec<Arc<LoadedAdapter>> {
        self.shared
            .adapters
            .read()
            .expect("adapter table lock")
            .values()
            .cloned()
            .collect()
    }

    /// Queues a request; its events arrive through the returned [`Generation`].
    pub fn submit(&self, request: GenerationRequest) -> Result<Generation, SubmitError> {
        let shared = &self.shared;
        request.params.validate()?;
        if request.prompt.is_empty() {
            return Err(SubmitError::EmptyPrompt);
        }
        let max_n = shared.options.max_batch.max(1);
        if request.n == 0 || request.n > max_n {
            return Err(SubmitError::TooManyChoices {
                n: request.n,
                max: max_n,
            });
        }
        let (prompt_tokens, max_new_tokens) = (request.prompt.len(), request.params.max_new_tokens);
        if prompt_tokens + max_new_tokens > shared.context_len {
            return Err(SubmitError::TooLong {
                prompt_tokens,
                max_new_tokens,
                context_len: shared.context_len,
            });
        }
        let adapter = match &request.adapter {
            None => None,
            Some(name) => Some(
                shared
                    .adapters
                    .read()
                    .expect("adapter table lock")
                    .get(name)
                    .cloned()
                    .ok_or_else(|| SubmitError::UnknownAdapter(name.clone()))?,
            ),
        };
        let queued = shared.waiting.fetch_add(1, Ordering::SeqCst);
        if queued >= shared.options.max_queue {
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull { queued });
        }
        let (tx, rx) = unbounded_channel();
        let key = shared.next_key.fetch_add(1, Ordering::Relaxed) as RequestKey;
        let job = Job {
            key,
            request,
            adapter,
            events: tx,
        };
        if shared.jobs.send(job).is_err() {
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(Generation {
            prompt_tokens,
            events: rx,
        })
    }
}

/// The state the engine thread owns.
struct EngineThread {
    model: Arc<Qwen3>,
    tokenizer: Tokenizer,
    end_tokens: Vec<u32>,
    context_len: usize,
    options: EngineOptions,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// A running request: its reader and how many choices are still going.
struct Active {
    events: UnboundedSender<Event>,
    open_choices: usize,
}

impl EngineThread {
    fn run(self, inbox: Receiver<Job>) {
        let decoder = match Decoder::new(&self.model, AttachedAdapters::Off, self.context_len) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("engine could not start: {e}");
                return;
            }
        };
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut batch = Batch::new();
        let mut active: HashMap<RequestKey, Active> = HashMap::new();
        loop {
            if batch.is_empty() && queue.is_empty() {
                match inbox.recv() {
                    Ok(job) => queue.push_back(job),
                    Err(_) => return, // every handle is gone
                }
            }
            while let Ok(job) = inbox.try_recv() {
                queue.push_back(job);
            }
            self.drop_disconnected(&mut queue, &mut batch, &mut active);
            self.admit(&decoder, &mut queue, &mut batch, &mut active);
            if batch.is_empty() {
                continue;
            }
            match batch.step(&decoder, &self.tokenizer, self.options.prefill_chunk) {
                Ok(events) => self.route(events, &mut batch, &mut active),
                Err(e) => {
                    let message = format!("generation failed: {e:#}");
                    tracing::error!("{message}");
                    for (key, a) in active.drain() {
                        let _ = a.events.send(Event::Failed {
                            message: message.clone(),
                        });
                        batch.remove(key);
                    }
                    self.running.store(0, Ordering::SeqCst);
                }
            }
        }
    }

    /// Removes requests whose reader is gone, waiting or running.
    fn drop_disconnected(
        &self,
        queue: &mut VecDeque<Job>,
        batch: &mut Batch,
        active: &mut HashMap<RequestKey, Active>,
    ) {
        let before = queue.len();
        queue.retain(|j| !j.events.is_closed());
        self.waiting
            .fetch_sub(before - queue.len(), Ordering::SeqCst);
        let gone: Vec<RequestKey> = active
            .iter()
            .filter(|(_, a)| a.events.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            active.remove(&key);
            batch.remove(key);
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Starts waiting requests, oldest first, while the batch has room (an
    /// empty batch always takes the next one).
    fn admit(
        &self,
        decoder: &Decoder<'_>,
        queue: &mut VecDeque<Job>,
        batch: &mut Batch,
        active: &mut HashMap<RequestKey, Active>,
    ) {
        while let Some(job) = queue.front() {
            let n = job.request.n.max(1);
            if !batch.is_empty() && batch.planned_len() + n > self.options.max_batch {
                break;
            }
            let job = queue.pop_front().expect("front exists");
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.running.fetch_add(1, Ordering::SeqCst);
            batch.add(
                job.key,
                &job.request,
                job.adapter,
                &self.end_tokens,
                rand::random(),
                decoder.new_cache(),
            );
            active.insert(
                job.key,
                Active {
                    events: job.events,
                    open_choices: n,
                },
            );
        }
    }

    /// Sends each event to its reader; a finished request leaves the table.
    fn route(
        &self,
        events: Vec<(RequestKey, Event)>,
        batch: &mut Batch,
        active: &mut HashMap<RequestKey, Active>,
    ) {
        for (key, event) in events {
            let Some(a) = active.get_mut(&key) else {
                continue;
            };
            let finished = matches!(event, Event::Finished { .. });
            if a.events.send(event).is_err() {
                active.remove(&key);
                batch.remove(key);
                self.running.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            if finished {
                a.open_choices -= 1;
                if a.open_choices == 0 {
                    // Count it out before its channel closes (readers see
                    // the end when the sender drops).
                    self.running.fetch_sub(1, Ordering::SeqCst);
                    active.remove(&key);
                }
            }
        }
    }
}
