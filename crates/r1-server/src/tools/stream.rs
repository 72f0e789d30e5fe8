//! The streaming form of the parsers: push content deltas, get content deltas and tool-call
//! deltas back. Content is released as soon as it cannot be the start of a tool call (a
//! possible partial marker, and trailing whitespace, wait for the next delta); inside the
//! tool-call region the scanner reruns on each delta and what is new goes out: a call's
//! name once known, then its arguments piece by piece.
//!
//! Whatever the split, the content sent adds up to [`super::parse`]'s content and the calls to
//! its calls.

use super::{complete_calls, parse, RegionStart, ToolParserKind};

/// What one push adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolEvent {
    Content(String),
    /// Call `index` begins: its name (the chunk that also carries the id).
    Start {
        index: usize,
        name: String,
    },
    /// More of call `index`'s arguments.
    Args {
        index: usize,
        fragment: String,
    },
}

#[derive(Debug)]
pub struct ToolStream {
    kind: ToolParserKind,
    text: String,
    /// Bytes of the final content sent so far (a prefix of it).
    sent_content: usize,
    /// Where the tool-call region starts, once seen.
    region: Option<usize>,
    /// Per started call: the arguments sent so far.
    sent_args: Vec<String>,
    done: bool,
}

impl ToolStream {
    pub fn new(kind: ToolParserKind) -> Self {
        ToolStream {
            kind,
            text: String::new(),
            sent_content: 0,
            region: None,
            sent_args: Vec::new(),
            done: false,
        }
    }

    /// Whether any call has started.
    pub fn has_calls(&self) -> bool {
        !self.sent_args.is_empty()
    }

    pub fn push(&mut self, delta: &str) -> Vec<ToolEvent> {
        let mut out = Vec::new();
        if self.done || delta.is_empty() {
            return out;
        }
        self.text.push_str(delta);
        if self.region.is_none() {
            match self.kind.region_start(&self.text) {
                RegionStart::At(p) => {
                    self.region = Some(p);
                    // Send the content before the calls now; it cannot change any more.
                    let before = self.text[..p].trim().to_string();
                    self.send_content(&before, before.len(), &mut out);
                }
                RegionStart::Maybe(p) => {
                    let t = self.text[..p].trim().to_string();
                    let safe = self.safe_len(p);
                    self.send_content(&t, safe, &mut out);
                }
                RegionStart::None => {
                    let t = self.text.trim().to_string();
                    let safe = self.safe_len(self.text.len());
                    self.send_content(&t, safe, &mut out);
                }
            }
        }
        if let Some(p) = self.region {
            let scanned = self.kind.scan(&self.text[p..], false);
            self.send_calls(scanned, &mut out);
        }
        out
    }

    /// The output has ended: send what was held back.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.done = true;
        let whole = parse(self.kind, &self.text);
        if let Some(p) = self.region {
            let scanned = self.kind.scan(&self.text[p..], true);
            let calls = complete_calls(scanned.clone());
            if !calls.is_empty() {
                self.send_calls(
                    scanned.into_iter().filter(|c| c.complete).collect(),
                    &mut out,
                );
                return out;
            }
            if self.has_calls() {
                // A call was announced but never became well formed: nothing can take it
                // back, so the rest of the text is dropped rather than sent twice.
                tracing::warn!("a streamed tool call ended malformed");
                return out;
            }
        }
        let content = whole.content.unwrap_or_default();
        self.send_content(&content, content.len(), &mut out);
        out
    }

    /// Send `target[sent..upto]`; `target` is the content as it will finally read (trimmed),
    /// of which a prefix has gone out.
    fn send_content(&mut self, target: &str, upto: usize, out: &mut Vec<ToolEvent>) {
        let mut upto = upto.min(target.len());
        while !target.is_char_boundary(upto) {
            upto -= 1;
        }
        if upto > self.sent_content {
            out.push(ToolEvent::Content(
                target[self.sent_content..upto].to_string(),
            ));
            self.sent_content = upto;
        }
    }

    /// How much of the trimmed content of `text[..end]` may go out now: up to its last
    /// non-space character (trailing whitespace waits: it may end the content).
    fn safe_len(&self, end: usize) -> usize {
        self.text[..end].trim().len()
    }

    fn send_calls(&mut self, scanned: Vec<super::Scanned>, out: &mut Vec<ToolEvent>) {
        for (i, c) in scanned.into_iter().enumerate() {
            if i > self.sent_args.len() {
                break;
            }
            if i == self.sent_args.len() {
                let Some(name) = c.name else { break };
                out.push(ToolEvent::Start { index: i, name });
                self.sent_args.push(String::new());
            }
            let sent = &mut self.sent_args[i];
            if c.args.len() > sent.len() && c.args.starts_with(sent.as_str()) {
                out.push(ToolEvent::Args {
                    index: i,
                    fragment: c.args[sent.len()..].to_string(),
                });
                *sent = c.args;
            }
        }
    }
}
