//! Redaction of text that arrives in pieces (streamed tokens). A pattern may be split across
//! pieces (`alice@exa` + `mple.com`), so the redactor holds back the last [`HOLD_BACK`] bytes
//! of what it has seen: text is released only once no pattern that could still be completed
//! reaches into it. Any pattern up to `HOLD_BACK` bytes long is caught wherever the pieces
//! split it; the delay is bounded by the same amount.

use super::{Category, Detector, Finding};

/// Bytes held back (the longest pattern guaranteed to be caught across pieces).
pub const HOLD_BACK: usize = 128;
/// Released bytes kept as left context, so a match's left boundary is judged correctly.
const CONTEXT: usize = 16;

#[derive(Debug, Default)]
pub struct StreamRedactor {
    /// Text seen but not yet released.
    pending: String,
    /// The tail of the released text (raw), for boundary checks.
    context: String,
    /// Replace findings (redact) or only record them (flag).
    replace: bool,
    found: Vec<Category>,
}

impl StreamRedactor {
    /// `replace`: redact mode; otherwise findings are only recorded and text passes unchanged
    /// (the text returned is still held back; a caller in flag mode passes its pieces on
    /// itself and uses this only to record findings).
    pub fn new(replace: bool) -> Self {
        StreamRedactor {
            replace,
            ..Default::default()
        }
    }

    /// Take the next piece; returns the text that may be released now.
    pub fn push(&mut self, piece: &str) -> String {
        self.pending.push_str(piece);
        self.release(false)
    }

    /// End of text: release everything left.
    pub fn finish(&mut self) -> String {
        self.release(true)
    }

    /// Categories of the findings released so far (one entry per finding).
    pub fn found(&self) -> &[Category] {
        &self.found
    }

    fn release(&mut self, all: bool) -> String {
        if self.pending.is_empty() {
            return String::new();
        }
        let ctx = self.context.len();
        let hay = format!("{}{}", self.context, self.pending);
        // Findings that start in the context were decided when that text was released.
        let found: Vec<Finding> = Detector
            .find(&hay)
            .into_iter()
            .filter(|f| f.start >= ctx)
            .map(|f| Finding {
                start: f.start - ctx,
                end: f.end - ctx,
                ..f
            })
            .collect();
        let mut cut = if all {
            self.pending.len()
        } else {
            floor_boundary(&self.pending, self.pending.len().saturating_sub(HOLD_BACK))
        };
        // A finding that straddles the cut stays whole on the held side.
        for f in &found {
            if f.start < cut && f.end > cut {
                cut = f.start;
            }
        }
        if cut == 0 {
            return String::new();
        }
        let released: Vec<Finding> = found.into_iter().filter(|f| f.end <= cut).collect();
        self.found.extend(released.iter().map(|f| f.category));
        let raw: String = self.pending.drain(..cut).collect();
        let out = if self.replace {
            super::replace(&raw, &released)
        } else {
            raw.clone()
        };
        self.context.push_str(&raw);
        let keep_from = floor_boundary(&self.context, self.context.len().saturating_sub(CONTEXT));
        self.context.drain(..keep_from);
        out
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
