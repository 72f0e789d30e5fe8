//! The served model as the handlers see it: a [`ModelSlot`] that is empty while the model
//! loads, holds the [`ModelState`] once it is up, and knows whether the server is draining.
//! It is one of the sub-states of `crate::state::AppState` (handlers take it with
//! `State<Arc<ModelSlot>>`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use r1_engine::chat_template::ChatTemplate;
use r1_engine::tokenizer::Tokenizer;

use crate::backend::Backend;
use crate::error::ApiError;

/// What the loader hands over once the model is up.
pub struct LoadedModel {
    pub engine: r1_engine::engine::EngineHandle,
    /// Joined at shutdown.
    pub engine_thread: Option<std::thread::JoinHandle<()>>,
    pub tokenizer: Arc<Tokenizer>,
    /// KV cache block size, to know how many tokens the cache holds.
    pub block_size: usize,
}

/// The model side of the state.
pub struct ModelState {
    pub engine: Arc<dyn Backend>,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Option<ChatTemplate>,
    /// The template's source (for reasoning auto-detection and errors).
    pub template_source: Option<String>,
    pub reasoning: bool,
    /// Compiles `response_format`, `guided_*` and forced tool calls for this vocabulary (the
    /// reason when the model's vocabulary cannot be indexed).
    pub constraints: Result<Arc<r1_engine::constraint::ConstraintCompiler>, String>,
    /// The format tool calls are parsed in (`--tool-call-parser`, or from the template).
    pub tool_parser: Option<crate::tools::ToolParserKind>,
    pub block_size: usize,
    pub loaded_at: u64,
}

impl ModelState {
    /// Tokens the whole KV cache holds.
    pub fn kv_capacity_tokens(&self) -> usize {
        self.engine.stats().kv_blocks_total * self.block_size
    }
}

/// The served model's name, the model once loaded, and the server's drain flag.
pub struct ModelSlot {
    /// The name clients pass as `model`.
    pub served_name: String,
    model: OnceLock<ModelState>,
    draining: AtomicBool,
    next_id: AtomicU64,
    pub started_at: u64,
}

impl ModelSlot {
    pub fn new(served_name: &str) -> Self {
        ModelSlot {
            served_name: served_name.to_string(),
            model: OnceLock::new(),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            started_at: unix_now(),
        }
    }

    /// Install the loaded model (once).
    pub fn set(&self, m: ModelState) {
        let _ = self.model.set(m);
    }

    /// The model if it has loaded (whether or not the server drains).
    pub fn get(&self) -> Option<&ModelState> {
        self.model.get()
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The model, or 503 while it loads / the server drains.
    pub fn ready(&self) -> Result<&ModelState, ApiError> {
        if self.is_draining() {
            return Err(ApiError::unavailable("The server is shutting down."));
        }
        self.model
            .get()
            .ok_or_else(|| ApiError::unavailable("The model is still loading; retry shortly."))
    }

    /// Check a request's `model` against the served name (absent = the served model), then
    /// that the model is ready: the common start of every model route.
    pub fn for_request(&self, requested: Option<&str>) -> Result<&ModelState, ApiError> {
        match requested {
            None | Some("") => {}
            Some(m) if m == self.served_name => {}
            Some(m) => return Err(ApiError::model_not_found(m, &self.served_name)),
        }
        self.ready()
    }

    /// A fresh response id (`chatcmpl-…`, `cmpl-…`).
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!(
            "{prefix}-{:016x}{n:08x}",
            nanos ^ (n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        )
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn system_fingerprint() -> String {
    format!("r1serve-{}", env!("CARGO_PKG_VERSION"))
}
