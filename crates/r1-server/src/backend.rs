//! The narrow interface between the HTTP side and the engine, in the style of TGI's
//! `Backend`: [`Backend::generate`] turns one request into its stream of events (dropping the
//! stream cancels the request), failures are the typed [`EngineError`] (mapped to HTTP in
//! `error.rs`), and the few facts the server reads (stats, context length) come with it.
//! [`EngineHandle`], r1-engine's batching engine thread, is the one implementation.

use std::pin::Pin;

use futures_util::stream::{self, Stream};
use r1_engine::engine::{EngineError, EngineEvent, EngineHandle, EngineStats, GenerateRequest};

/// One request's engine events, in order; every choice ends with one `Finished`.
pub type EventStream = Pin<Box<dyn Stream<Item = EngineEvent> + Send>>;

pub trait Backend: Send + Sync {
    /// Queue a request; its first event says whether it was admitted or rejected.
    fn generate(&self, req: GenerateRequest) -> Result<EventStream, EngineError>;
    /// A snapshot of the engine's counters (metrics, scaling, `/v1/engine/stats`).
    fn stats(&self) -> EngineStats;
    /// The context limit of one request, in tokens.
    fn max_model_len(&self) -> usize;
    /// Stop the engine (requests still running get `EngineError::ShuttingDown`).
    fn shutdown(&self);
}

impl Backend for EngineHandle {
    fn generate(&self, req: GenerateRequest) -> Result<EventStream, EngineError> {
        let rs = self.submit(req)?;
        Ok(Box::pin(stream::unfold(rs, |mut rs| async move {
            let e = rs.recv().await?;
            Some((e, rs))
        })))
    }

    fn stats(&self) -> EngineStats {
        EngineHandle::stats(self)
    }

    fn max_model_len(&self) -> usize {
        EngineHandle::max_model_len(self)
    }

    fn shutdown(&self) {
        EngineHandle::shutdown(self)
    }
}
