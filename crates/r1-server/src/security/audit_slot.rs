//! What the layers and the generation learn about one request while it runs, shared through
//! the request's extensions: the audit layer creates the [`AuditSlot`], authentication and
//! the output filter fill it in, and the audit record is made from it.

use std::sync::{Arc, Mutex};

use r1_security::{Category, RedactMode};

/// What the layers and the generation learn about a request while it runs.
#[derive(Debug, Default)]
pub struct AuditFacts {
    pub user_id: Option<String>,
    pub role: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub categories: Vec<Category>,
    pub redactions: usize,
    pub output_text: Option<String>,
    pub error: Option<String>,
}

/// Shared between the audit layer, authentication and the generation (request extension).
#[derive(Clone, Debug, Default)]
pub struct AuditSlot(Arc<Mutex<AuditFacts>>);

impl AuditSlot {
    pub fn with<R>(&self, f: impl FnOnce(&mut AuditFacts) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The request's output filter settings, with the slot it reports to (put in the request's
/// extensions by the audit layer when detection or audit is on).
#[derive(Clone, Debug)]
pub struct RequestGuard {
    pub mode: RedactMode,
    pub slot: AuditSlot,
    /// Keep the output text for the audit record.
    pub keep_text: bool,
}
