//! The HTTP side's end of the engine: [`EngineHandle`] submits requests over the command
//! channel, and each request's [`RequestStream`] receives its events (dropping it cancels).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc as tmpsc;

use super::{EngineError, EngineEvent, EngineStats, GenerateRequest};
use crate::scheduler::RequestId;

/// Receives one request's events; dropping it cancels the request.
pub struct RequestStream {
    pub id: RequestId,
    rx: tmpsc::UnboundedReceiver<EngineEvent>,
    cmd: mpsc::Sender<Command>,
}

impl RequestStream {
    pub async fn recv(&mut self) -> Option<EngineEvent> {
        self.rx.recv().await
    }
    pub fn blocking_recv(&mut self) -> Option<EngineEvent> {
        self.rx.blocking_recv()
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        let _ = self.cmd.send(Command::Cancel(self.id));
    }
}

pub(super) enum Command {
    Add(
        Box<GenerateRequest>,
        RequestId,
        tmpsc::UnboundedSender<EngineEvent>,
        Instant,
    ),
    Cancel(RequestId),
    Shutdown,
}

#[derive(Clone)]
pub struct EngineHandle {
    pub(super) cmd: mpsc::Sender<Command>,
    pub(super) next_id: Arc<AtomicU64>,
    pub(super) stats: Arc<Mutex<EngineStats>>,
    pub(super) max_model_len: usize,
}

impl EngineHandle {
    /// Queue a request; the first event says whether it was admitted or rejected.
    pub fn submit(&self, req: GenerateRequest) -> Result<RequestStream, EngineError> {
        req.params.validate().map_err(EngineError::Invalid)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tmpsc::unbounded_channel();
        self.cmd
            .send(Command::Add(Box::new(req), id, tx, Instant::now()))
            .map_err(|_| EngineError::Stopped)?;
        Ok(RequestStream {
            id,
            rx,
            cmd: self.cmd.clone(),
        })
    }

    pub fn stats(&self) -> EngineStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}
