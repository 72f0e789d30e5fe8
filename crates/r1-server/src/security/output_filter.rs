//! Sensitive-data detection on generated text. The audit layer puts the request's
//! [`RequestGuard`] in its extensions; the handler takes it with `crate::extract::RequestCtx`
//! and hands it to `generation::submit`, which passes every piece of output through an
//! [`OutputFilter`]: per choice, one streaming redactor for the answer and one for the
//! reasoning text, so streamed and non-streamed answers are treated alike.
//! Findings, token counts and (with `--audit-include-text`) the output go to the audit slot.

use r1_security::{Detector, RedactMode, StreamRedactor};

use crate::security::audit_slot::RequestGuard;

/// One request's output filter (owned by its `Generation`).
pub struct OutputFilter {
    guard: RequestGuard,
    /// Per choice: (content, reasoning) redactors.
    redactors: Vec<(StreamRedactor, StreamRedactor)>,
    text: Vec<String>,
}

impl OutputFilter {
    pub fn new(guard: RequestGuard, choices: usize) -> Self {
        let replace = guard.mode == RedactMode::Redact;
        OutputFilter {
            redactors: (0..choices)
                .map(|_| (StreamRedactor::new(replace), StreamRedactor::new(replace)))
                .collect(),
            text: vec![String::new(); if guard.keep_text { choices } else { 0 }],
            guard,
        }
    }

    /// Filter one choice's new content and reasoning text in place; `last` flushes.
    pub fn apply(
        &mut self,
        choice: usize,
        content: &mut String,
        reasoning: &mut String,
        last: bool,
    ) {
        let Some((c, r)) = self.redactors.get_mut(choice) else {
            return;
        };
        let detecting = self.guard.mode != RedactMode::Off;
        for (red, text) in [(c, &mut *content), (r, &mut *reasoning)] {
            if !detecting {
                break;
            }
            let mut out = if text.is_empty() {
                String::new()
            } else {
                red.push(text)
            };
            if last {
                out.push_str(&red.finish());
            }
            match self.guard.mode {
                // Only recorded: the text goes out as it came.
                RedactMode::Flag | RedactMode::Off => {}
                RedactMode::Redact => *text = out,
            }
        }
        if let Some(t) = self.text.get_mut(choice) {
            t.push_str(reasoning);
            t.push_str(content);
        }
    }

    /// Report what was found and the token counts (the generation is over or dropped).
    pub fn report(&mut self, prompt_tokens: usize, completion_tokens: usize) {
        let mut cats = Vec::new();
        for (c, r) in &self.redactors {
            cats.extend_from_slice(c.found());
            cats.extend_from_slice(r.found());
        }
        let redacted = self.guard.mode == RedactMode::Redact;
        let text = std::mem::take(&mut self.text);
        self.guard.slot.with(|f| {
            f.prompt_tokens = Some(prompt_tokens as u64);
            f.completion_tokens = Some(completion_tokens as u64);
            if redacted {
                f.redactions += cats.len();
            }
            f.categories.extend(cats);
            if !text.is_empty() {
                f.output_text = Some(text.join("\n"));
            }
        });
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
