//! From an API request to engine requests, and from engine events to per-choice deltas: the
//! part both generation endpoints share, streaming or not. A [`Generation`] becomes an
//! [`EventStream`] of [`GenEvent`]s; the output filter and the audit record are adapters over
//! that stream (`security::output_filter::redact`, `security::audit_slot::audited`), and the
//! writers (`sse.rs`, [`collect`]) consume it.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, SelectAll, Stream, StreamExt};
use r1_engine::engine::{EngineEvent, Finish, GenerateRequest, TokenLogprob};
use r1_engine::sampler::SamplingParams;
use r1_engine::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::model::ModelState;
use crate::openai_types::{CommonParams, Usage};
use crate::overload::admission::Ticket;
use crate::overload::response_cache::{CacheKey, Recorder, Source};
use crate::overload::RequestContext;
use crate::reasoning::{ReasoningParser, ReasoningStream};

/// Most choices one request may ask for.
pub const MAX_N: u32 = 128;
/// Most alternatives per token for logprobs.
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// Build the engine request for one tokenized prompt, checking every field first.
/// `prompt_param` names the prompt field in errors (`messages` or `prompt`).
pub fn engine_request(
    m: &ModelState,
    c: &CommonParams,
    prompt: Vec<u32>,
    prompt_param: &str,
) -> Result<GenerateRequest, ApiError> {
    let n = c.n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ApiError::bad_request(
            format!("`n` = {n} is out of range (1 to {MAX_N})"),
            Some("n"),
        ));
    }
    if let Some(k) = c.logprobs {
        if k > MAX_TOP_LOGPROBS {
            let field = if prompt_param == "messages" {
                "top_logprobs"
            } else {
                "logprobs"
            };
            return Err(ApiError::bad_request(
                format!("`{field}` = {k} is out of range (0 to {MAX_TOP_LOGPROBS})"),
                Some(field),
            ));
        }
    }
    if prompt.is_empty() {
        return Err(ApiError::bad_request(
            "The prompt is empty.",
            Some(prompt_param),
        ));
    }
    let vocab = m.tokenizer.vocab_size();
    if let Some(&t) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_request(
            format!("Token id {t} is outside the vocabulary of {vocab} tokens."),
            Some(prompt_param),
        ));
    }
    let max_tokens = context_budget(m, c.max_tokens, prompt.len(), prompt_param)?;
    let params = sampling_params(c, vocab)?;
    let mut req = GenerateRequest::new(prompt, max_tokens);
    req.params = params;
    req.n = n as usize;
    req.stop_strings = c
        .stop
        .as_ref()
        .map(|s| s.0.iter().filter(|s| !s.is_empty()).cloned().collect())
        .unwrap_or_default();
    req.stop_ids = c.stop_token_ids.clone().unwrap_or_default();
    req.ignore_eos = c.ignore_eos;
    req.logprobs = c.logprobs.map(|k| k as usize);
    req.skip_special_tokens = c.skip_special_tokens.unwrap_or(true);
    Ok(req)
}

/// The completion length: `max_tokens`, checked against the context; by default whatever room
/// the context (and the KV cache) leaves.
fn context_budget(
    m: &ModelState,
    max_tokens: Option<u32>,
    prompt_len: usize,
    prompt_param: &str,
) -> Result<usize, ApiError> {
    let ctx = m.engine.max_model_len();
    let overflow = |total: usize, completion: usize| {
        ApiError::bad_request(
            format!(
                "This model's maximum context length is {ctx} tokens. However, you requested \
                 {total} tokens ({prompt_len} in the {prompt_param}, {completion} in the \
                 completion). Please reduce the length of the {prompt_param} or completion."
            ),
            Some(prompt_param),
        )
        .with_code("context_length_exceeded")
    };
    match max_tokens {
        Some(0) => Err(ApiError::bad_request(
            "`max_tokens` must be at least 1.",
            Some("max_tokens"),
        )),
        Some(k) => {
            let k = k as usize;
            if prompt_len + k > ctx {
                return Err(overflow(prompt_len + k, k));
            }
            Ok(k)
        }
        None => {
            if prompt_len >= ctx {
                return Err(overflow(prompt_len + 1, 1));
            }
            let room = ctx.min(m.kv_capacity_tokens().max(prompt_len + 1)) - prompt_len;
            Ok(room.max(1))
        }
    }
}

/// The sampling parameters of a request, each checked (public for the request fuzz target).
pub fn sampling_params(c: &CommonParams, vocab: usize) -> Result<SamplingParams, ApiError> {
    let mut logit_bias = Vec::new();
    for (k, &b) in c.logit_bias.iter().flatten() {
        let id: u32 = k.trim().parse().map_err(|_| {
            ApiError::bad_request(
                format!("`logit_bias` keys must be token ids; got `{k}`"),
                Some("logit_bias"),
            )
        })?;
        if id as usize >= vocab {
            return Err(ApiError::bad_request(
                format!("`logit_bias` token id {id} is outside the vocabulary of {vocab} tokens"),
                Some("logit_bias"),
            ));
        }
        logit_bias.push((id, b));
    }
    logit_bias.sort_by_key(|&(id, _)| id);
    let p = SamplingParams {
        temperature: c.temperature.unwrap_or(1.0),
        top_k: c.top_k.filter(|&k| k > 0).map_or(0, |k| k as usize),
        top_p: c.top_p.unwrap_or(1.0),
        min_p: c.min_p.unwrap_or(0.0),
        repetition_penalty: c.repetition_penalty.unwrap_or(1.0),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        logit_bias,
        seed: c.seed.map(|s| s as u64),
    };
    p.validate().map_err(|msg| {
        let param = msg
            .strip_prefix('`')
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        ApiError::bad_request(msg, param.as_deref())
    })?;
    Ok(p)
}

/// Submit the requests (one per prompt) and wrap their event streams. With the admission
/// context (see [`crate::overload::admit`]) deterministic requests are answered from the
/// response cache when they can be, the rest are recorded into it, and the queue ticket and
/// the class's priority and latency target travel with the generation.
pub fn submit(
    m: &ModelState,
    reqs: Vec<GenerateRequest>,
    parser: Option<ReasoningParser>,
    ctx: Option<&RequestContext>,
) -> Result<Generation, ApiError> {
    let n = reqs.first().map_or(1, |r| r.n);
    let prompt_tokens = reqs.iter().map(|r| r.prompt.len()).sum();
    let mut sources = Vec::with_capacity(reqs.len());
    let mut all_hit = true;
    for mut r in reqs {
        let mut recorder = None;
        if let Some(c) = ctx {
            r.priority = c.priority;
            r.target_itl = c.target_itl;
            if let Some(key) = c
                .cache
                .enabled()
                .then(|| CacheKey::for_request(&c.model, &r))
                .flatten()
            {
                if let Some(events) = c.cache.get(&key) {
                    sources.push(Source::Replay(events, r.prompt.len()));
                    continue;
                }
                recorder = Some(Recorder::new(c.cache.clone(), key, r.n));
            }
        }
        all_hit = false;
        let s = m.engine.generate(r)?;
        sources.push(Source::Live(s, recorder));
    }
    let mut ticket = None;
    if let Some(c) = ctx {
        if c.cache.enabled() {
            *c.cache_status.lock().unwrap_or_else(|e| e.into_inner()) = Some(all_hit);
        }
        ticket = c.ticket.lock().unwrap_or_else(|e| e.into_inner()).take();
        if all_hit {
            // Answered from the cache: the request never waits for the engine.
            if let Some(t) = ticket.take() {
                t.admitted();
            }
        }
    }
    let mut g = Generation::new(sources, n, prompt_tokens, parser);
    g.ticket = ticket;
    Ok(g)
}

/// One choice's worth of new output.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    pub index: u32,
    pub reasoning: String,
    pub content: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<Finish>,
}

pub enum GenEvent {
    /// The first prompt was admitted by the scheduler.
    Admitted,
    Delta(Delta),
    /// Every choice has finished: the token counts (the last event of a generation that
    /// did not fail).
    Usage(Usage),
    Error(ApiError),
}

/// One API request's events, in order; dropping the stream cancels what still runs.
pub type EventStream = Pin<Box<dyn Stream<Item = GenEvent> + Send>>;

type Events = Pin<Box<dyn Stream<Item = (usize, EngineEvent)> + Send>>;

/// The running generation of one API request. Dropping it cancels what is still running.
pub struct Generation {
    events: SelectAll<Events>,
    n: usize,
    parsers: Vec<Option<ReasoningStream>>,
    completion_tokens: Vec<usize>,
    finished: usize,
    /// `GenEvent::Admitted` has been returned (the engine may send a prompt's first token
    /// before its `Admitted`; the API's order is admission first).
    announced: bool,
    /// An event held back while `Admitted` goes out first.
    held: Option<GenEvent>,
    failed: bool,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    /// The request's place in its class queue, released at admission.
    ticket: Option<Arc<Ticket>>,
    created: Instant,
    /// The closing `GenEvent::Usage` has been returned.
    usage_sent: bool,
}

impl Generation {
    fn new(
        streams: Vec<Source>,
        n: usize,
        prompt_tokens: usize,
        parser: Option<ReasoningParser>,
    ) -> Self {
        let choices = streams.len() * n;
        let events = streams
            .into_iter()
            .enumerate()
            .map(|(i, src)| Box::pin(src.into_events().map(move |e| (i, e))) as Events);
        Generation {
            events: stream::select_all(events),
            n,
            parsers: vec![parser.map(ReasoningStream::new); choices],
            completion_tokens: vec![0; choices],
            finished: 0,
            announced: false,
            held: None,
            failed: false,
            prompt_tokens,
            cached_tokens: 0,
            ticket: None,
            created: Instant::now(),
            usage_sent: false,
        }
    }

    /// The generation as a stream of events (see [`Generation::next`]).
    pub fn into_events(self) -> EventStream {
        Box::pin(stream::unfold(self, |mut g| async move {
            let ev = g.next().await?;
            Some((ev, g))
        }))
    }

    pub fn num_choices(&self) -> usize {
        self.parsers.len()
    }

    /// The next event; after every choice has finished one `Usage`, then `None` (`None` at
    /// once after an error). Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<GenEvent> {
        if let Some(ev) = self.held.take() {
            return Some(ev);
        }
        if !self.failed && !self.usage_sent && self.finished == self.parsers.len() {
            self.usage_sent = true;
            return Some(GenEvent::Usage(self.usage()));
        }
        let deadline = self.ticket.as_ref().and_then(|t| t.deadline);
        let ev = match deadline.filter(|_| !self.announced) {
            None => self.next_inner().await?,
            Some(d) => {
                let d = tokio::time::Instant::from_std(d);
                match tokio::time::timeout_at(d, self.next_inner()).await {
                    Ok(ev) => ev?,
                    Err(_) => {
                        // Waited past the class's max queue wait: give up (dropping the
                        // generation cancels it in the engine).
                        self.failed = true;
                        let t = self.ticket.take()?;
                        t.timed_out();
                        return Some(GenEvent::Error(crate::overload::queue_timeout(
                            t.class(),
                            self.created.elapsed(),
                        )));
                    }
                }
            }
        };
        let out = if !self.announced && matches!(ev, GenEvent::Delta(_)) {
            self.announced = true;
            self.held = Some(ev);
            GenEvent::Admitted
        } else {
            ev
        };
        if self.announced {
            if let Some(t) = self.ticket.take() {
                t.admitted();
            }
        }
        Some(out)
    }

    async fn next_inner(&mut self) -> Option<GenEvent> {
        loop {
            if self.failed || self.finished == self.parsers.len() {
                return None;
            }
            let Some((p, ev)) = self.events.next().await else {
                self.failed = true;
                return Some(GenEvent::Error(ApiError::unavailable(
                    "The engine stopped before the request finished.",
                )));
            };
            match ev {
                EngineEvent::Admitted { cached_tokens } => {
                    self.cached_tokens += cached_tokens;
                    if !self.announced {
                        self.announced = true;
                        return Some(GenEvent::Admitted);
                    }
                }
                EngineEvent::Token {
                    index,
                    text,
                    logprob,
                    ..
                } => {
                    let ci = p * self.n + index as usize;
                    if ci >= self.parsers.len() {
                        continue;
                    }
                    let mut d = self.split(ci, &text, false);
                    d.logprobs.extend(logprob);
                    return Some(GenEvent::Delta(d));
                }
                EngineEvent::Finished {
                    index,
                    reason,
                    text,
                    completion_tokens,
                } => {
                    let ci = p * self.n + index as usize;
                    if ci >= self.parsers.len() {
                        continue;
                    }
                    let mut d = self.split(ci, &text, true);
                    d.finish = Some(reason);
                    self.completion_tokens[ci] = completion_tokens;
                    self.finished += 1;
                    return Some(GenEvent::Delta(d));
                }
                EngineEvent::Error(e) => {
                    self.failed = true;
                    return Some(GenEvent::Error(e.into()));
                }
            }
        }
    }

    /// Run the text through the choice's reasoning parser (if any).
    fn split(&mut self, ci: usize, text: &str, last: bool) -> Delta {
        let mut d = Delta {
            index: ci as u32,
            ..Default::default()
        };
        match &mut self.parsers[ci] {
            None => d.content = text.to_string(),
            Some(p) => {
                let r = if last { p.finish(text) } else { p.token(text) };
                d.reasoning = r.reasoning;
                d.content = r.content;
            }
        }
        d
    }

    pub fn usage(&self) -> Usage {
        Usage::new(
            self.prompt_tokens,
            self.cached_tokens,
            self.completion_tokens.iter().sum(),
            self.parsers
                .iter()
                .flatten()
                .map(ReasoningStream::reasoning_tokens)
                .sum(),
        )
    }
}

/// Everything one choice produced (non-streaming responses).
#[derive(Clone, Debug, Default)]
pub struct Collected {
    pub reasoning: String,
    pub content: String,
    pub logprobs: Vec<TokenLogprob>,
    pub finish: Option<Finish>,
}

/// Run a generation's events to the end: each choice's output, and the usage.
pub async fn collect(mut events: EventStream) -> Result<(Vec<Collected>, Usage), ApiError> {
    let mut out: Vec<Collected> = Vec::new();
    let mut usage = None;
    while let Some(ev) = events.next().await {
        match ev {
            GenEvent::Admitted => {}
            GenEvent::Usage(u) => usage = Some(u),
            GenEvent::Error(e) => return Err(e),
            GenEvent::Delta(d) => {
                let i = d.index as usize;
                if out.len() <= i {
                    out.resize(i + 1, Collected::default());
                }
                let c = &mut out[i];
                c.reasoning.push_str(&d.reasoning);
                c.content.push_str(&d.content);
                c.logprobs.extend(d.logprobs);
                if d.finish.is_some() {
                    c.finish = d.finish;
                }
            }
        }
    }
    let usage = usage
        .ok_or_else(|| ApiError::unavailable("The engine stopped before the request finished."))?;
    Ok((out, usage))
}

/// The API's name for a finish reason.
pub fn finish_reason(f: Option<Finish>) -> Option<&'static str> {
    f.map(|f| match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::Cancelled => "abort",
    })
}

/// The text of one token for logprob listings.
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.token_to_piece(id).unwrap_or_default()
}

pub fn token_bytes(tok: &Tokenizer, id: u32) -> Vec<u8> {
    tok.token_bytes(id).unwrap_or_default()
}
