//! The small routes: models, health, readiness, tokenize/detokenize, engine stats.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::extract::{ApiJson, RequestCtx};
use crate::model::ModelSlot;
use crate::openai_types::{
    DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse,
};
use crate::routes::chat::render_messages;

fn model_card(slot: &ModelSlot) -> Value {
    let m = slot.get();
    json!({
        "id": slot.served_name,
        "object": "model",
        "created": m.map_or(slot.started_at, |m| m.loaded_at),
        "owned_by": "r1serve",
        "root": slot.served_name,
        "parent": null,
        "max_model_len": m.map(|m| m.engine.max_model_len()),
    })
}

/// `GET /v1/models`
pub async fn list_models(State(st): State<Arc<ModelSlot>>) -> Response {
    Json(json!({ "object": "list", "data": [model_card(&st)] })).into_response()
}

/// `GET /v1/models/{id}`
pub async fn get_model(State(st): State<Arc<ModelSlot>>, Path(id): Path<String>) -> Response {
    if id != st.served_name {
        return ApiError::model_not_found(&id, &st.served_name).into_response();
    }
    Json(model_card(&st)).into_response()
}

/// `GET /health`: the process is alive (200 even while loading or draining).
pub async fn health(State(st): State<Arc<ModelSlot>>) -> Response {
    let status = if st.is_draining() {
        "draining"
    } else if st.get().is_some() {
        "ok"
    } else {
        "loading"
    };
    Json(json!({ "status": status })).into_response()
}

/// `GET /ready`: 200 once the model is loaded, 503 before that and while draining.
pub async fn ready(State(st): State<Arc<ModelSlot>>) -> Response {
    let (code, status) = if st.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if st.get().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "loading")
    } else {
        (StatusCode::OK, "ready")
    };
    (code, Json(json!({ "status": status }))).into_response()
}

/// `GET /v1/engine/stats`: the engine's scheduler and KV-cache counters.
pub async fn engine_stats(State(st): State<Arc<ModelSlot>>) -> Response {
    let Some(m) = st.get() else {
        return ApiError::unavailable("The model is still loading.").into_response();
    };
    let s = m.engine.stats();
    Json(json!({
        "running": s.running,
        "waiting": s.waiting,
        "kv_blocks_total": s.kv_blocks_total,
        "kv_blocks_used": s.kv_blocks_used,
        "kv_usage": s.kv_usage,
        "prefix_query_tokens": s.prefix_query_tokens,
        "prefix_hit_tokens": s.prefix_hit_tokens,
        "prompt_tokens": s.prompt_tokens,
        "generation_tokens": s.generation_tokens,
        "steps": s.steps,
        "preemptions": s.preemptions,
        "draining": st.is_draining(),
    }))
    .into_response()
}

/// `POST /tokenize` (vLLM's): `{"prompt": ...}` or `{"messages": [...]}`.
pub async fn tokenize(
    State(st): State<Arc<ModelSlot>>,
    rc: RequestCtx,
    ApiJson(req): ApiJson<TokenizeRequest>,
) -> Response {
    rc.record_model(req.model.as_deref());
    let run = || -> Result<TokenizeResponse, ApiError> {
        let m = st.for_request(req.model.as_deref())?;
        let tokens = match (&req.prompt, &req.messages) {
            (Some(p), None) => m
                .tokenizer
                .encode(p, req.add_special_tokens.unwrap_or(true), true),
            (None, Some(msgs)) => {
                let text = render_messages(
                    m,
                    msgs,
                    req.add_generation_prompt.unwrap_or(true),
                    None,
                    None,
                )?;
                m.tokenizer
                    .encode(&text, req.add_special_tokens.unwrap_or(false), true)
            }
            _ => {
                return Err(ApiError::bad_request(
                    "Give exactly one of `prompt` and `messages`.",
                    Some("prompt"),
                ))
            }
        }
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?;
        let token_strs = req.return_token_strs.unwrap_or(false).then(|| {
            tokens
                .iter()
                .map(|&t| m.tokenizer.id_to_token(t).unwrap_or_default())
                .collect()
        });
        Ok(TokenizeResponse {
            count: tokens.len(),
            max_model_len: m.engine.max_model_len(),
            tokens,
            token_strs,
        })
    };
    match run() {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /detokenize` (vLLM's): `{"tokens": [...]}` → `{"prompt": "..."}`.
pub async fn detokenize(
    State(st): State<Arc<ModelSlot>>,
    rc: RequestCtx,
    ApiJson(req): ApiJson<DetokenizeRequest>,
) -> Response {
    rc.record_model(req.model.as_deref());
    let run = || -> Result<DetokenizeResponse, ApiError> {
        let m = st.for_request(req.model.as_deref())?;
        let vocab = m.tokenizer.vocab_size();
        if let Some(&t) = req.tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::bad_request(
                format!("Token id {t} is outside the vocabulary of {vocab} tokens."),
                Some("tokens"),
            ));
        }
        Ok(DetokenizeResponse {
            prompt: m.tokenizer.decode(&req.tokens, false),
        })
    };
    match run() {
        Ok(r) => Json(r).into_response(),
        Err(e) => e.into_response(),
    }
}
