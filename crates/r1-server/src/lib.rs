//! r1-server: the OpenAI- and DeepSeek-compatible HTTP API of r1serve.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /v1/models/{id}`, `GET /health`, `GET /ready`, `POST /tokenize`, `POST /detokenize`,
//! `GET /v1/engine/stats`, `GET /metrics` (Prometheus), `GET /v1/scaling` (scaling advice),
//! `/admin/*`. [`run_blocking`] starts listening at once (`/ready` answers 503), loads the
//! model on a blocking thread, serves, and drains on SIGTERM/SIGINT.
//!
//! # The path of one chat request, top to bottom
//!
//! 1. **Connection** (`security/listener.rs`): our hyper accept loop: TLS, the connection
//!    cap (one 429 to extra connections, through `routes::over_limit_router`), header size
//!    and read-time limits.
//! 2. **Layers** (`routes/mod.rs` `outer_layers`, outer to inner): `caller.rs` (request id,
//!    anonymous `Caller` with the peer IP) → `metrics/http.rs` (counters, span) →
//!    `security/audit_layer.rs` (body hash; puts the request's `AuditSlot` and output-filter
//!    `RequestGuard`, `security/audit_slot.rs`, in its extensions) → `security/auth.rs` (API
//!    key → `Caller`, route permission, 401/403) → access log → tower-http's body limit
//!    (`--max-body-bytes` on a declared length, every route).
//! 3. **Typed request** (`extract.rs`): `ApiJson` reads the body once under the same limit
//!    (413) and parses it once into `openai_types.rs`'s `ChatCompletionRequest` (400 naming
//!    the field); `RequestCtx` takes the caller and output filter from the extensions.
//! 4. **Admission** (`routes/admit.rs` `admit`, from the handler in `routes/chat.rs`): 503
//!    while loading or draining (`model.rs`); the class (`overload/classes.rs`, key tier or
//!    `priority`); the rate limit (`overload/rate_limit.rs`); then one priority queue for all
//!    classes (`overload/admission.rs`): a place in the class (429 + Retry-After when full),
//!    or in wait mode a turn among the waiters, by class priority then arrival, handed over
//!    through a tokio `oneshot`. The rest of the handler runs with the request's
//!    `RequestContext` (`overload/mod.rs`: ticket, class priority, latency target, cache).
//! 5. **Prompt** (`routes/chat.rs`): chat template (`r1_engine::chat_template`), tokenize,
//!    `generation::engine_request` checks every field into a `GenerateRequest`.
//! 6. **Engine** (`generation.rs` `submit`): the response cache
//!    (`overload/response_cache.rs`) or `backend.rs`'s `Backend::generate` (the engine
//!    thread's `EngineHandle`), a stream of engine events; the engine's typed
//!    `EngineError` becomes an HTTP error in one place (`error.rs`, `From<EngineError>`).
//! 7. **Events** (`routes/mod.rs` `events`): `generation.rs`'s `Generation` turns engine
//!    events into per-choice deltas (the `<think>` split, `reasoning.rs`; the ticket released
//!    at admission; the class's max queue wait) and ends with the usage; over that stream,
//!    two adapters: the output filter (`security/output_filter.rs` `redact`) and the audit
//!    adapter (`security/audit_slot.rs` `audited`: token counts, output text).
//! 8. **Writer**: one JSON body (`generation::collect`) or SSE (`sse.rs`, axum `Sse` with
//!    `KeepAlive`; routes implement `ChunkFormat`). The audit record is written at once for a
//!    plain answer, and for a stream when its adapters let go of the audit slot (the stream
//!    ended, or the client left: dropping the body also cancels the request in the engine).
//!
//! `/metrics` is `metrics/exposition.rs` (`--metrics-compat vllm` adds vLLM's gauge names).
//!
//! # State
//!
//! The router's state, [`AppState`] (`state.rs`), is a handful of sub-states behind `Arc`s
//! (the model slot `model.rs`, `Overload`, `Security`, `ServerMetrics`, `ScalingMonitor`, the
//! body limit, the stream settings). Handlers and layers take only the parts they need with
//! `State<T>` through axum's `FromRef`, so only `routes/mod.rs` and this file know
//! `AppState`, and the crate's modules import each other without a cycle.

pub mod backend;
pub mod caller;
pub mod error;
pub mod extract;
pub mod generation;
pub mod metrics;
pub mod model;
pub mod openai_types;
pub mod overload;
pub mod reasoning;
pub mod routes;
pub mod scaling;
pub mod security;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod structured;
pub mod tool_types;
pub mod tools;
pub mod webui;

use std::sync::Arc;
use std::time::{Duration, Instant};

use r1_engine::chat_template::ChatTemplate;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use model::{LoadedModel, ModelState};
pub use reasoning::{ReasoningDelta, ReasoningMode, ReasoningParser, ReasoningStream};
pub use state::{AppState, ServerConfig};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the model failed: {0}")]
    Load(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Security(#[from] security::SecurityError),
}

/// Serve until SIGTERM/SIGINT (then drain) on a runtime of its own. `load` runs on a
/// blocking thread while the server already answers `/health` and `/ready`.
pub fn run_blocking<L>(config: ServerConfig, load: L) -> Result<(), ServerError>
where
    L: FnOnce() -> Result<LoadedModel, String> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("r1-http")
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(config, load));
    // Connections still open after a drain timeout, or a load still running, are dropped.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// Build the model side of the state from what the loader returned.
pub fn model_state(config: &ServerConfig, lm: &LoadedModel) -> Result<ModelState, ServerError> {
    let tok = &lm.tokenizer;
    let (source, template) = match &config.chat_template {
        Some(src) => {
            let t = ChatTemplate::new(src, &tok.bos_token(), &tok.eos_token())
                .map_err(|e| ServerError::Template(e.to_string()))?;
            (Some(src.clone()), Some(t))
        }
        None => match tok.chat_template() {
            None => (None, None),
            Some(src) => match ChatTemplate::new(src, &tok.bos_token(), &tok.eos_token()) {
                Ok(t) => (Some(src.to_string()), Some(t)),
                Err(e) => {
                    tracing::warn!("the model's chat template is unusable ({e}); chat is off");
                    (Some(src.to_string()), None)
                }
            },
        },
    };
    // Indexing the vocabulary for constrained decoding takes a moment: done once, here.
    let constraints = r1_engine::constraint::ConstraintCompiler::new(tok)
        .map(Arc::new)
        .map_err(|e| e.to_string());
    if let Err(e) = &constraints {
        tracing::warn!("constrained decoding is off for this model: {e}");
    }
    let tool_parser = config
        .tool_call_parser
        .or_else(|| source.as_deref().and_then(tools::ToolParserKind::detect));
    Ok(ModelState {
        constraints,
        tool_parser,
        engine: Arc::new(lm.engine.clone()),
        tokenizer: lm.tokenizer.clone(),
        reasoning: config.reasoning.enabled_for(source.as_deref()),
        template,
        template_source: source,
        block_size: lm.block_size,
        loaded_at: model::unix_now(),
    })
}

/// The server loop (see [`run_blocking`]).
pub async fn serve<L>(config: ServerConfig, load: L) -> Result<(), ServerError>
where
    L: FnOnce() -> Result<LoadedModel, String> + Send + 'static,
{
    let security = Arc::new(security::Security::open(config.security.clone())?);
    security.check_startup(&config.host)?;
    let tls = match &config.security.tls {
        Some((cert, key)) => Some(security::listener::tls_acceptor(cert, key)?),
        None => None,
    };
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let mut signals = shutdown::Signals::install()?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("r1serve: listening on {scheme}://{local}");
    let state = AppState::new(config.clone()).with_security(security.clone());
    security::reload::spawn(security.clone());

    let (drain_tx, drain_rx) = watch::channel(false);
    let app = routes::router(state.clone());
    let limits = security::listener::ConnLimits {
        max_connections: config.security.max_connections,
        header_read_timeout: config.security.header_read_timeout,
        max_header_bytes: config.security.max_header_bytes,
        tls,
    };
    let over_limit = routes::over_limit_router(state.clone());
    let mut server = tokio::spawn(security::listener::serve(
        listener, app, over_limit, limits, drain_rx,
    ));

    let http_metrics = state.metrics.clone();
    let scaling_task = tokio::spawn(scaling::run(
        state.scaling.clone(),
        state.model.clone(),
        state.overload.clone(),
        move || http_metrics.responses_with_status(429),
    ));
    let load_started = Instant::now();
    let loader = tokio::task::spawn_blocking(load);
    tokio::pin!(loader);
    let mut engine_thread = None;
    let mut failure = None;
    let mut loading = true;
    loop {
        tokio::select! {
            r = &mut loader, if loading => {
                loading = false;
                let lm = match r {
                    Ok(Ok(lm)) => lm,
                    Ok(Err(e)) => { failure = Some(ServerError::Load(e)); break; }
                    Err(e) => { failure = Some(ServerError::Load(format!("the loader panicked: {e}"))); break; }
                };
                match model_state(&config, &lm) {
                    Ok(ms) => {
                        eprintln!(
                            "r1serve: serving `{}` (context {} tokens, reasoning parser {}); ready",
                            config.served_model_name,
                            ms.engine.max_model_len(),
                            if ms.reasoning { "on" } else { "off" },
                        );
                        state.metrics.set_model_load_time(load_started.elapsed());
                        state.model.set(ms);
                        engine_thread = lm.engine_thread;
                    }
                    Err(e) => {
                        lm.engine.shutdown();
                        failure = Some(e);
                        break;
                    }
                }
            }
            _ = security.drain_requested.notified() => {
                eprintln!(
                    "r1serve: /admin/drain: draining (in-flight requests get up to {:.0}s)",
                    config.drain_timeout.as_secs_f64()
                );
                break;
            }
            sig = signals.recv() => {
                eprintln!(
                    "r1serve: {sig}: draining (in-flight requests get up to {:.0}s)",
                    config.drain_timeout.as_secs_f64()
                );
                break;
            }
            r = &mut server => {
                // The server stopped by itself: an accept loop error.
                failure = Some(match r {
                    Ok(Ok(())) => ServerError::Load("the server stopped unexpectedly".into()),
                    Ok(Err(e)) => ServerError::Io(e),
                    Err(e) => ServerError::Load(format!("the server task failed: {e}")),
                });
                break;
            }
        }
    }

    state.model.set_draining();
    let _ = drain_tx.send(true);
    if failure.is_none() {
        tokio::select! {
            _ = &mut server => eprintln!("r1serve: drained"),
            _ = tokio::time::sleep(config.drain_timeout) => {
                eprintln!("r1serve: drain timeout; ending the requests still running");
            }
            sig = signals.recv() => eprintln!("r1serve: {sig} again; stopping now"),
        }
    }
    server.abort();
    scaling_task.abort();
    if let Some(m) = state.model.get() {
        m.engine.shutdown();
    }
    if let Some(t) = engine_thread {
        let join = tokio::task::spawn_blocking(move || t.join());
        if tokio::time::timeout(Duration::from_secs(10), join)
            .await
            .is_err()
        {
            tracing::warn!("the engine thread did not stop within 10 s");
        }
    }
    if let Some(a) = &security.audit {
        a.flush();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
