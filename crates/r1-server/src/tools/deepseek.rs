//! DeepSeek's tool-call format, V3/R1 and V3.1:
//!
//! ```text
//! V3/R1: <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{ARGS}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>…<｜tool▁calls▁end｜>
//! V3.1:  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{ARGS}<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>
//! ```
//!
//! The arguments are passed on as the model wrote them (trimmed), streamed as they arrive.

use super::{strip_partial, Scanned, DS_CALL_BEGIN, DS_CALL_END, DS_SEP};

const FENCE: &str = "```json";

pub(super) fn scan(region: &str, done: bool, v31: bool) -> Vec<Scanned> {
    let pieces: Vec<&str> = region.split(DS_CALL_BEGIN).skip(1).collect();
    let n = pieces.len();
    let mut out = Vec::with_capacity(n);
    for (i, piece) in pieces.into_iter().enumerate() {
        let (body, complete) = match piece.find(DS_CALL_END) {
            Some(e) => (&piece[..e], true),
            // A later call began, or the output ended: this one is as long as it gets.
            None => (piece, done || i + 1 < n),
        };
        if let Some(c) = call(body, complete, v31) {
            out.push(c);
        }
    }
    out
}

fn call(body: &str, complete: bool, v31: bool) -> Option<Scanned> {
    let s = body.find(DS_SEP)?;
    let (head, after) = (&body[..s], &body[s + DS_SEP.len()..]);
    let (name, args_raw) = if v31 {
        (head.trim().to_string(), after)
    } else {
        // `function<｜tool▁sep｜>NAME\n```json\n…`: the name ends at the line break.
        match after.find('\n') {
            Some(nl) => (after[..nl].trim().to_string(), &after[nl + 1..]),
            None if complete => (after.trim().to_string(), ""),
            None => return None,
        }
    };
    if name.is_empty() {
        return None;
    }
    let args = if v31 {
        if complete {
            args_raw.trim().to_string()
        } else {
            strip_partial(args_raw, DS_CALL_END).trim().to_string()
        }
    } else {
        let t = args_raw.trim_start();
        let t = if let Some(rest) = t.strip_prefix(FENCE) {
            rest
        } else if t.len() < FENCE.len() && FENCE.starts_with(t) && !complete {
            // The fence is still arriving.
            ""
        } else {
            t.strip_prefix("```").unwrap_or(t)
        };
        if complete {
            let t = t.trim();
            t.strip_suffix("```").unwrap_or(t).trim().to_string()
        } else {
            // Hold back what could be the closing fence or the end marker.
            let t = strip_partial(t, DS_CALL_END).trim_end();
            let t = t.trim_end_matches('`').trim();
            t.to_string()
        }
    };
    Some(Scanned {
        name: Some(name),
        args,
        complete,
    })
}
