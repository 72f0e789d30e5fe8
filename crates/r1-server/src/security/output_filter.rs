//! Sensitive-data detection on generated text, as an adapter over the request's event stream
//! ([`redact`]). The audit layer puts the request's [`RequestGuard`] in its extensions; the
//! handler takes it with `crate::extract::RequestCtx` and `routes::events` puts this adapter
//! (then the audit adapter) over the generation's events. Findings go to the audit slot.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use r1_security::{Detector, RedactMode, StreamRedactor};

use crate::generation::{EventStream, GenEvent};
use crate::security::audit_slot::{AuditSlot, RequestGuard};

/// The output filter as an adapter over a request's events: every delta's content and
/// reasoning pass through the choice's streaming redactors (one each, so streamed and
/// non-streamed answers are treated alike; a finishing delta flushes them). The findings go
/// to the audit slot when the stream ends or is dropped. With detection off the events pass
/// untouched.
pub fn redact(events: EventStream, guard: &RequestGuard) -> EventStream {
    if guard.mode == RedactMode::Off {
        return events;
    }
    Box::pin(Redacting {
        inner: events,
        filter: OutputFilter {
            mode: guard.mode,
            slot: Some(guard.slot.clone()),
            redactors: Vec::new(),
        },
    })
}

struct Redacting {
    inner: EventStream,
    filter: OutputFilter,
}

impl Stream for Redacting {
    type Item = GenEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GenEvent>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(GenEvent::Delta(mut d))) => {
                let last = d.finish.is_some();
                this.filter
                    .apply(d.index as usize, &mut d.content, &mut d.reasoning, last);
                Poll::Ready(Some(GenEvent::Delta(d)))
            }
            Poll::Ready(None) => {
                this.filter.report();
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// One request's redactors and where they report.
struct OutputFilter {
    mode: RedactMode,
    /// Taken when the findings are reported.
    slot: Option<AuditSlot>,
    /// Per choice: (content, reasoning) redactors.
    redactors: Vec<(StreamRedactor, StreamRedactor)>,
}

impl OutputFilter {
    /// Filter one choice's new content and reasoning text in place; `last` flushes.
    fn apply(&mut self, choice: usize, content: &mut String, reasoning: &mut String, last: bool) {
        let replace = self.mode == RedactMode::Redact;
        while self.redactors.len() <= choice {
            self.redactors
                .push((StreamRedactor::new(replace), StreamRedactor::new(replace)));
        }
        let (c, r) = &mut self.redactors[choice];
        for (red, text) in [(c, &mut *content), (r, &mut *reasoning)] {
            let mut out = if text.is_empty() {
                String::new()
            } else {
                red.push(text)
            };
            if last {
                out.push_str(&red.finish());
            }
            // In flag mode the findings are only recorded: the text goes out as it came.
            if replace {
                *text = out;
            }
        }
    }

    /// Report what was found (the stream is over or dropped).
    fn report(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        let mut cats = Vec::new();
        for (c, r) in &self.redactors {
            cats.extend_from_slice(c.found());
            cats.extend_from_slice(r.found());
        }
        let redacted = self.mode == RedactMode::Redact;
        slot.with(|f| {
            if redacted {
                f.redactions += cats.len();
            }
            f.categories.extend(cats);
        });
    }
}

impl Drop for OutputFilter {
    fn drop(&mut self) {
        self.report();
    }
}

/// Text that goes out without passing through a generation (`echo` of the prompt): redacted
/// whole, findings recorded.
pub fn filter_whole(guard: Option<&RequestGuard>, text: String) -> String {
    let Some(g) = guard else {
        return text;
    };
    if g.mode == RedactMode::Off {
        return text;
    }
    let (out, found) = Detector.redact(&text);
    g.slot.with(|f| {
        if g.mode == RedactMode::Redact {
            f.redactions += found.len();
        }
        f.categories.extend(found.iter().map(|x| x.category));
    });
    if g.mode == RedactMode::Redact {
        out
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::StreamExt;

    use super::*;
    use crate::generation::Delta;
    use crate::openai_types::Usage;
    use crate::security::audit_slot::{audited, AuditFacts};

    /// Completion tokens, redactions, output text.
    type Written = (Option<u64>, usize, Option<String>);

    fn delta(text: &str, last: bool) -> GenEvent {
        GenEvent::Delta(Delta {
            content: text.to_string(),
            finish: last.then_some(r1_engine::engine::Finish::Stop),
            ..Delta::default()
        })
    }

    // The adapters over a stream: an address split across two deltas is redacted, the text
    // as sent and the counts reach the slot, and the record is written once, when the last
    // holder lets go, whether the stream ran to its end or was dropped.
    #[tokio::test]
    async fn redaction_and_audit_are_adapters_over_the_events() {
        for run_to_end in [true, false] {
            let slot = AuditSlot::default();
            let guard = RequestGuard {
                mode: RedactMode::Redact,
                slot: slot.clone(),
                keep_text: true,
            };
            let written: std::sync::Arc<Mutex<Vec<Written>>> = Default::default();
            let w = written.clone();
            slot.write_when_released(move |f: &AuditFacts| {
                w.lock()
                    .unwrap()
                    .push((f.completion_tokens, f.redactions, f.output_text.clone()))
            });
            let events: EventStream = Box::pin(futures_util::stream::iter(vec![
                GenEvent::Admitted,
                delta("mail jane.doe@exa", false),
                delta("mple.com now", true),
                GenEvent::Usage(Usage::new(5, 0, 2, 0)),
            ]));
            let mut s = audited(redact(events, &guard), &guard, 5);
            drop(guard);
            let mut out = String::new();
            if run_to_end {
                while let Some(ev) = s.next().await {
                    if let GenEvent::Delta(d) = ev {
                        out.push_str(&d.content);
                    }
                }
                assert_eq!(out, "mail [REDACTED:EMAIL] now");
                assert_eq!(written.lock().unwrap().len(), 1, "written at the end");
            } else {
                assert!(
                    written.lock().unwrap().is_empty(),
                    "the stream still holds it"
                );
            }
            drop(s);
            let w = written.lock().unwrap().clone();
            assert_eq!(w.len(), 1, "one record");
            if run_to_end {
                assert_eq!(w[0], (Some(2), 1, Some(out)));
            } else {
                assert_eq!(w[0].0, Some(0));
            }
        }
    }
}
