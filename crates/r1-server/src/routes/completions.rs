//! `POST /v1/completions` (text completion of raw prompts).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use r1_engine::engine::TokenLogprob;
use r1_engine::tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::extract::{ApiJson, RequestCtx};
use crate::generation::{self, finish_reason, token_text, Delta};
use crate::model::{system_fingerprint, unix_now, ModelSlot};
use crate::openai_types::{
    Chunk, CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse,
    PromptInput, Usage,
};
use crate::overload::{estimate_tokens, Admission, Overload, RequestContext};
use crate::routes::admit::admit;
use crate::routes::chat::FIRST_EVENT_WAIT;
use crate::sse::{self, data_line, ChunkFormat, Event, StreamSettings};

/// Most prompts one request may batch.
const MAX_PROMPTS: usize = 64;

/// The body is read and parsed once ([`ApiJson`]); admission control runs on the typed
/// request, then `handle` with the request's admission context.
pub async fn completions(
    State(model): State<Arc<ModelSlot>>,
    State(overload): State<Arc<Overload>>,
    State(stream): State<StreamSettings>,
    rc: RequestCtx,
    ApiJson(req): ApiJson<CompletionRequest>,
) -> Response {
    let admission = Admission {
        caller: rc.caller.clone(),
        priority: req.priority.clone(),
        stream: req.stream.unwrap_or(false),
        tokens: estimate_tokens(req.prompt.text_len(), req.max_tokens, req.n),
    };
    let slot = model.clone();
    admit(
        &overload,
        &model,
        stream.keep_alive,
        admission,
        move |ctx| async move {
            handle(slot, stream, rc, req, ctx)
                .await
                .unwrap_or_else(IntoResponse::into_response)
        },
    )
    .await
}

async fn handle(
    slot: Arc<ModelSlot>,
    stream: StreamSettings,
    rc: RequestCtx,
    req: CompletionRequest,
    ctx: Arc<RequestContext>,
) -> Result<Response, ApiError> {
    let m = slot.for_request(req.model.as_deref())?;
    let prompts: Vec<Vec<u32>> = match &req.prompt {
        PromptInput::Texts(texts) => texts
            .iter()
            .map(|t| m.tokenizer.encode(t, true, true))
            .collect::<Result<_, _>>()
            .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))?,
        PromptInput::Tokens(t) => t.clone(),
    };
    if prompts.is_empty() || prompts.len() > MAX_PROMPTS {
        return Err(ApiError::bad_request(
            format!(
                "`prompt` must hold 1 to {MAX_PROMPTS} prompts; got {}.",
                prompts.len()
            ),
            Some("prompt"),
        ));
    }
    let echo = req.echo.unwrap_or(false);
    let echoes: Vec<String> = if echo {
        let texts: Vec<String> = match &req.prompt {
            PromptInput::Texts(t) => t.clone(),
            PromptInput::Tokens(t) => t.iter().map(|p| m.tokenizer.decode(p, false)).collect(),
        };
        // Echoed text is output too: the same sensitive-data filter applies.
        let filter = crate::security::output_filter::filter_whole;
        texts
            .into_iter()
            .map(|t| filter(rc.output.as_ref(), t))
            .collect()
    } else {
        vec![String::new(); prompts.len()]
    };
    let common = req.common();
    let mut reqs = prompts
        .into_iter()
        .map(|p| generation::engine_request(m, &common, p, "prompt"))
        .collect::<Result<Vec<_>, _>>()?;
    // A raw prompt has no reasoning section of its own: constrained from the first token.
    if let Some(r) = crate::structured::requested(req.structured())? {
        let c = crate::structured::compile(m, r.grammar, None, &r.param)?;
        for e in &mut reqs {
            e.constraint = Some(c.clone());
        }
    }
    let n = reqs[0].n;
    tracing::debug!(
        user = req.user.as_deref().unwrap_or(""),
        prompts = reqs.len(),
        n,
        stream = common.stream,
        "completion"
    );
    rc.record_model(req.model.as_deref());
    let gen = generation::submit(m, reqs, None, Some(&ctx))?;
    let choices = gen.num_choices();
    let mut events = super::events(gen, rc.output.as_ref());
    let id = slot.new_id("cmpl");
    let created = unix_now();
    let model = slot.served_name.clone();
    // Choice i answers prompt i / n.
    let prefix = |i: usize| echoes[i / n].clone();
    if common.stream {
        let keep_alive = stream.keep_alive;
        let first = sse::first_event(&mut events, keep_alive.min(FIRST_EVENT_WAIT)).await?;
        let fmt = CompletionFormat {
            id,
            created,
            model,
            include_usage: common.include_usage,
            logprobs: common.logprobs.is_some(),
            tokenizer: m.tokenizer.clone(),
            offsets: (0..choices).map(|i| prefix(i).len()).collect(),
            echoes: if echo {
                (0..choices).map(prefix).collect()
            } else {
                Vec::new()
            },
        };
        return Ok(sse::response(events, fmt, first, keep_alive));
    }
    let (outs, usage) = generation::collect(events).await?;
    let choices = outs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let pre = prefix(i);
            let logprobs = common
                .logprobs
                .is_some()
                .then(|| completion_logprobs(&m.tokenizer, &c.logprobs, pre.len()));
            CompletionChoice {
                index: i as u32,
                text: pre + &c.content,
                logprobs,
                finish_reason: finish_reason(c.finish),
            }
        })
        .collect();
    Ok(Json(CompletionResponse {
        id,
        object: "text_completion",
        created,
        model,
        system_fingerprint: system_fingerprint(),
        choices,
        usage,
    })
    .into_response())
}

/// Legacy-format logprobs; `offset` is where the first token's text starts.
fn completion_logprobs(tok: &Tokenizer, lps: &[TokenLogprob], offset: usize) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut at = offset;
    for lp in lps {
        let text = token_text(tok, lp.token);
        out.text_offset.push(at);
        at += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(lp.logprob);
        let mut top = HashMap::new();
        for &(id, l) in &lp.top {
            top.entry(token_text(tok, id)).or_insert(l);
        }
        out.top_logprobs.push(top);
    }
    out
}

/// Completion chunks (`text_completion`).
struct CompletionFormat {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
    /// Per choice: text offset of the next token (for logprobs).
    offsets: Vec<usize>,
    /// Per choice: the echoed prompt, sent once admitted (empty without `echo`).
    echoes: Vec<String>,
}

impl CompletionFormat {
    fn chunk(&self, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> Event {
        data_line(&Chunk {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage,
        })
    }
}

impl ChunkFormat for CompletionFormat {
    fn admitted(&mut self) -> Vec<Event> {
        let echoes = std::mem::take(&mut self.echoes);
        let usage = self.include_usage.then_some(None);
        echoes
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                self.chunk(
                    vec![CompletionChoice {
                        index: i as u32,
                        text,
                        logprobs: None,
                        finish_reason: None,
                    }],
                    usage.clone(),
                )
            })
            .collect()
    }

    fn delta(&mut self, d: Delta) -> Vec<Event> {
        if d.content.is_empty() && d.logprobs.is_empty() && d.finish.is_none() {
            return Vec::new();
        }
        let i = d.index as usize;
        let logprobs = self.logprobs.then(|| {
            let lp = completion_logprobs(&self.tokenizer, &d.logprobs, self.offsets[i]);
            self.offsets[i] += lp.tokens.iter().map(String::len).sum::<usize>();
            lp
        });
        let choice = CompletionChoice {
            index: d.index,
            text: d.content,
            logprobs,
            finish_reason: finish_reason(d.finish),
        };
        vec![self.chunk(vec![choice], self.include_usage.then_some(None))]
    }

    fn usage(&mut self, u: Usage) -> Event {
        self.chunk(Vec::new(), Some(Some(u)))
    }

    fn include_usage(&self) -> bool {
        self.include_usage
    }
}
