//! What the layers and the generation learn about one request while it runs, shared through
//! the request's extensions: the audit layer creates the [`AuditSlot`], authentication fills
//! in the caller, and two adapters over the request's event stream fill in the rest: the
//! output filter (`output_filter::redact`: findings, redactions) and [`audited`] (token
//! counts, output text). The record of a streamed answer is written when the last holder of
//! the slot lets go of it (see [`AuditSlot::write_when_released`]), so it carries everything
//! the stream reported, however the stream ended.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::Stream;
use r1_security::{Category, RedactMode};

use crate::generation::{EventStream, GenEvent};

/// What the layers and the generation learn about a request while it runs.
#[derive(Debug, Default)]
pub struct AuditFacts {
    pub user_id: Option<String>,
    pub role: Option<String>,
    /// The request's `model` field (set by the handler that parsed the body).
    pub model: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub categories: Vec<Category>,
    pub redactions: usize,
    pub output_text: Option<String>,
    pub error: Option<String>,
}

type Writer = Box<dyn FnOnce(&AuditFacts) + Send>;

#[derive(Default)]
struct Inner {
    facts: Mutex<AuditFacts>,
    /// Called with the facts when the last holder of the slot lets go.
    on_release: Mutex<Option<Writer>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let writer = self.on_release.get_mut().map(Option::take);
        if let Ok(Some(w)) = writer {
            let facts = self.facts.get_mut().unwrap_or_else(|p| p.into_inner());
            w(facts);
        }
    }
}

/// Shared between the audit layer, authentication and the adapters (request extension).
#[derive(Clone, Default)]
pub struct AuditSlot(Arc<Inner>);

impl std::fmt::Debug for AuditSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|facts| f.debug_tuple("AuditSlot").field(facts).finish())
    }
}

impl AuditSlot {
    pub fn with<R>(&self, f: impl FnOnce(&mut AuditFacts) -> R) -> R {
        f(&mut self.0.facts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Run `write` with the final facts once every holder of the slot has let go of it (at
    /// once if this is the last one).
    pub fn write_when_released(self, write: impl FnOnce(&AuditFacts) + Send + 'static) {
        *self.0.on_release.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(write));
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

/// The audit adapter: passes `events` through unchanged and reports the token counts (and,
/// with `keep_text`, the output as sent) to the slot when the stream ends or is dropped.
pub fn audited(events: EventStream, guard: &RequestGuard, prompt_tokens: usize) -> EventStream {
    Box::pin(Audited {
        inner: Some(events),
        slot: Some(guard.slot.clone()),
        text: Vec::new(),
        keep_text: guard.keep_text,
        prompt_tokens: prompt_tokens as u64,
        completion_tokens: 0,
    })
}

struct Audited {
    inner: Option<EventStream>,
    slot: Option<AuditSlot>,
    /// Per choice, when kept: reasoning and content as sent.
    text: Vec<String>,
    keep_text: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Audited {
    fn observe(&mut self, ev: &GenEvent) {
        match ev {
            GenEvent::Delta(d) if self.keep_text => {
                let i = d.index as usize;
                if self.text.len() <= i {
                    self.text.resize(i + 1, String::new());
                }
                self.text[i].push_str(&d.reasoning);
                self.text[i].push_str(&d.content);
            }
            GenEvent::Usage(u) => self.completion_tokens = u.completion_tokens as u64,
            _ => {}
        }
    }

    /// The stream is over: let go of it first (the output filter behind reports then), then
    /// report and let go of the slot.
    fn finish(&mut self) {
        self.inner = None;
        let Some(slot) = self.slot.take() else {
            return;
        };
        let text = std::mem::take(&mut self.text);
        slot.with(|f| {
            f.prompt_tokens = Some(self.prompt_tokens);
            f.completion_tokens = Some(self.completion_tokens);
            if self.keep_text {
                f.output_text = Some(text.join("\n"));
            }
        });
    }
}

impl Stream for Audited {
    type Item = GenEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GenEvent>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(ev)) => {
                self.observe(&ev);
                Poll::Ready(Some(ev))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        self.finish();
    }
}
