//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use r1_engine::chat_template::TemplateError;
use r1_engine::engine::TokenLogprob;
use r1_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{ApiJson, RequestCtx};
use crate::generation::{self, token_bytes, token_text, Delta};
use crate::model::{system_fingerprint, unix_now, ModelSlot};
use crate::openai_types::{
    ChatChoice, ChatChunkChoice, ChatCompletionRequest, ChatCompletionResponse, ChatDelta,
    ChatLogprobs, ChatMessageIn, ChatMessageOut, ChatTokenLogprob, Chunk, MessageContent,
    TopLogprob, Usage,
};
use crate::overload::{estimate_tokens, Admission, Overload, RequestContext};
use crate::reasoning::ReasoningParser;
use crate::routes::admit::admit;
use crate::sse::{self, data_line, ChunkFormat, Event, StreamSettings};
use crate::tools::{request, ChatTools, ToolStream};

/// The body is read and parsed once ([`ApiJson`]); admission control runs on the typed
/// request, then `handle` with the request's admission context.
pub async fn chat_completions(
    State(model): State<Arc<ModelSlot>>,
    State(overload): State<Arc<Overload>>,
    State(stream): State<StreamSettings>,
    rc: RequestCtx,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Response {
    let prompt_bytes = req.messages.iter().map(ChatMessageIn::text_len).sum();
    let admission = Admission {
        caller: rc.caller.clone(),
        priority: req.priority.clone(),
        stream: req.stream.unwrap_or(false),
        tokens: estimate_tokens(
            prompt_bytes,
            req.max_completion_tokens.or(req.max_tokens),
            req.n,
        ),
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
    req: ChatCompletionRequest,
    ctx: Arc<RequestContext>,
) -> Result<Response, ApiError> {
    let m = slot.for_request(req.model.as_deref())?;
    if req.top_logprobs.is_some() && req.logprobs != Some(true) {
        return Err(ApiError::bad_request(
            "`logprobs` must be true when `top_logprobs` is given.",
            Some("logprobs"),
        ));
    }
    let tools = ChatTools::new(m, &req)?;
    let rendered = render_messages(
        m,
        &req.messages,
        req.add_generation_prompt.unwrap_or(true),
        tools.render_tools(&req),
        req.chat_template_kwargs.as_ref(),
    )?;
    let prompt = m
        .tokenizer
        .encode(&rendered, false, true)
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))?;
    let common = req.common();
    let mut ereq = generation::engine_request(m, &common, prompt, "messages")?;
    ereq.constraint = tools.constraint(m, &req, &rendered)?;
    if common.skip_special_tokens.is_none() && tools.needs_special_tokens(&m.tokenizer) {
        ereq.skip_special_tokens = false;
    }
    let n = ereq.n;
    let parser = m.reasoning.then(|| ReasoningParser::for_prompt(&rendered));
    tracing::debug!(
        user = req.user.as_deref().unwrap_or(""),
        prompt_tokens = ereq.prompt.len(),
        max_tokens = ereq.max_tokens,
        n,
        stream = common.stream,
        "chat completion"
    );
    rc.record_model(req.model.as_deref());
    let gen = generation::submit(m, vec![ereq], parser, Some(&ctx))?;
    let mut events = super::events(gen, rc.output.as_ref());
    let id = slot.new_id("chatcmpl");
    let created = unix_now();
    let model = slot.served_name.clone();
    if common.stream {
        let keep_alive = stream.keep_alive;
        let first = sse::first_event(&mut events, keep_alive.min(FIRST_EVENT_WAIT)).await?;
        let fmt = ChatFormat {
            id,
            created,
            model,
            n,
            include_usage: common.include_usage,
            logprobs: common.logprobs.is_some(),
            tokenizer: m.tokenizer.clone(),
            tool_streams: (0..n).map(|_| tools.parser.map(ToolStream::new)).collect(),
        };
        return Ok(sse::response(events, fmt, first, keep_alive));
    }
    let (outs, usage) = generation::collect(events).await?;
    let choices = outs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (content, tool_calls) = match tools.parser {
                Some(kind) => {
                    let parsed = crate::tools::parse(kind, &c.content);
                    let calls = request::tool_calls(&parsed);
                    let content = match (&calls, parsed.content) {
                        (Some(_), content) => content,
                        (None, content) => Some(content.unwrap_or_default()),
                    };
                    (content, calls)
                }
                None => (Some(c.content), None),
            };
            ChatChoice {
                index: i as u32,
                finish_reason: request::finish_reason(c.finish, tool_calls.is_some()),
                message: ChatMessageOut {
                    role: "assistant",
                    content,
                    reasoning_content: m.reasoning.then_some(c.reasoning),
                    tool_calls,
                },
                logprobs: common
                    .logprobs
                    .is_some()
                    .then(|| chat_logprobs(&m.tokenizer, &c.logprobs)),
            }
        })
        .collect();
    Ok(Json(ChatCompletionResponse {
        id,
        object: "chat.completion",
        created,
        model,
        system_fingerprint: system_fingerprint(),
        choices,
        usage,
    })
    .into_response())
}

/// How long a streaming request waits for the engine's first word before the SSE headers go
/// out (an immediate rejection then becomes an HTTP error).
pub(crate) const FIRST_EVENT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Apply the chat template to the messages (with `tools` in the context when given).
pub(crate) fn render_messages(
    m: &crate::model::ModelState,
    messages: &[ChatMessageIn],
    add_generation_prompt: bool,
    tools: Option<&Value>,
    kwargs: Option<&serde_json::Map<String, Value>>,
) -> Result<String, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "`messages` must hold at least one message.",
            Some("messages"),
        ));
    }
    let template = m.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(
            "The model has no chat template; use /v1/completions, or start the server with \
             --chat-template FILE.",
            Some("messages"),
        )
    })?;
    let mut msgs = messages_json(messages)?;
    crate::tools::prepare_messages(&mut msgs, m.template_source.as_deref())?;
    template
        .render_json(&msgs, add_generation_prompt, tools, kwargs)
        .map_err(|e| match e {
            TemplateError::Raised(msg) => ApiError::bad_request(msg, Some("messages")),
            other => ApiError::bad_request(other.to_string(), Some("messages")),
        })
}

/// The messages as the template sees them: `content` flattened to a string (text parts joined).
fn messages_json(messages: &[ChatMessageIn]) -> Result<Value, ApiError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, msg) in messages.iter().enumerate() {
        let role = match msg.role.as_str() {
            "system" | "user" | "assistant" | "tool" => msg.role.as_str(),
            "developer" => "system",
            other => {
                return Err(ApiError::bad_request(
                    format!(
                        "Invalid role `{other}` in messages[{i}] (expected system, developer, \
                         user, assistant or tool)."
                    ),
                    Some(&format!("messages[{i}].role")),
                ))
            }
        };
        let content = match &msg.content {
            None => Value::Null,
            Some(MessageContent::Text(s)) => Value::String(s.clone()),
            Some(MessageContent::Parts(parts)) => {
                let mut texts = Vec::with_capacity(parts.len());
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => texts.push(t.as_str()),
                        (kind, _) => {
                            return Err(ApiError::bad_request(
                                format!(
                                    "Content part type `{kind}` is not supported (only `text` \
                                     parts with a `text` field)."
                                ),
                                Some(&format!("messages[{i}].content[{j}]")),
                            ))
                        }
                    }
                }
                Value::String(texts.join("\n"))
            }
        };
        if content.is_null() && role != "assistant" {
            return Err(ApiError::bad_request(
                format!("messages[{i}] ({role}) needs a `content`."),
                Some(&format!("messages[{i}].content")),
            ));
        }
        let mut obj = json!({ "role": role, "content": content });
        if let Some(name) = &msg.name {
            obj["name"] = json!(name);
        }
        if let Some(tc) = &msg.tool_calls {
            obj["tool_calls"] = tc.clone();
        }
        if let Some(id) = &msg.tool_call_id {
            obj["tool_call_id"] = json!(id);
        }
        out.push(obj);
    }
    Ok(Value::Array(out))
}

pub(crate) fn chat_logprobs(tok: &Tokenizer, lps: &[TokenLogprob]) -> ChatLogprobs {
    ChatLogprobs {
        content: lps
            .iter()
            .map(|lp| ChatTokenLogprob {
                token: token_text(tok, lp.token),
                logprob: lp.logprob,
                bytes: token_bytes(tok, lp.token),
                top_logprobs: lp
                    .top
                    .iter()
                    .map(|&(id, l)| TopLogprob {
                        token: token_text(tok, id),
                        logprob: l,
                        bytes: token_bytes(tok, id),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// Chat completion chunks (`chat.completion.chunk`).
struct ChatFormat {
    id: String,
    created: u64,
    model: String,
    n: usize,
    include_usage: bool,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
    /// Per choice, the tool-call parser its content goes through (when tools are on).
    tool_streams: Vec<Option<ToolStream>>,
}

impl ChatFormat {
    fn chunk(&self, choices: Vec<ChatChunkChoice>) -> Event {
        data_line(&Chunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage: self.include_usage.then_some(None),
        })
    }
}

impl ChunkFormat for ChatFormat {
    fn admitted(&mut self) -> Vec<Event> {
        (0..self.n)
            .map(|i| {
                self.chunk(vec![ChatChunkChoice {
                    index: i as u32,
                    delta: ChatDelta {
                        role: Some("assistant"),
                        content: Some(String::new()),
                        ..Default::default()
                    },
                    logprobs: None,
                    finish_reason: None,
                }])
            })
            .collect()
    }

    fn delta(&mut self, mut d: Delta) -> Vec<Event> {
        let mut out = Vec::new();
        let mut tool_calls = Vec::new();
        let mut called = false;
        if let Some(Some(ts)) = self.tool_streams.get_mut(d.index as usize) {
            let mut events = ts.push(&d.content);
            if d.finish.is_some() {
                events.extend(ts.finish());
            }
            called = ts.has_calls();
            (d.content, tool_calls) = request::stream_delta(events);
        }
        if !d.content.is_empty()
            || !d.reasoning.is_empty()
            || !d.logprobs.is_empty()
            || !tool_calls.is_empty()
        {
            let delta = ChatDelta {
                role: None,
                content: (!d.content.is_empty()
                    || (d.reasoning.is_empty() && tool_calls.is_empty()))
                .then_some(d.content),
                reasoning_content: (!d.reasoning.is_empty()).then_some(d.reasoning),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            };
            out.push(self.chunk(vec![ChatChunkChoice {
                index: d.index,
                delta,
                logprobs: self
                    .logprobs
                    .then(|| chat_logprobs(&self.tokenizer, &d.logprobs)),
                finish_reason: None,
            }]));
        }
        if d.finish.is_some() {
            out.push(self.chunk(vec![ChatChunkChoice {
                index: d.index,
                delta: ChatDelta::default(),
                logprobs: None,
                finish_reason: request::finish_reason(d.finish, called),
            }]));
        }
        out
    }

    fn usage(&mut self, u: Usage) -> Event {
        data_line(&Chunk::<ChatChunkChoice> {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices: Vec::new(),
            usage: Some(Some(u)),
        })
    }

    fn include_usage(&self) -> bool {
        self.include_usage
    }
}
