//! One sequence's grammar state: free until the `after` text has been generated (if any),
//! then an llguidance matcher that gives the next token's mask and takes each sampled token.
//!
//! The engine's order per step is: [`SeqMatcher::compute_mask`] (on a worker thread, while
//! the forward pass runs), [`SeqMatcher::mask_logits`] (before penalties and temperature),
//! sample, [`SeqMatcher::commit`]. Nothing here panics on a bad token or a grammar error: it
//! is an `Err(message)` the engine turns into the request's error event.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llguidance::{Matcher, TokenParser};
use toktrie::{SimpleVob, TokTrie};

use super::ConstraintSpec;

/// A compiled grammar, shared by every sequence that uses it.
pub(crate) struct Compiled {
    /// A fresh parser; each sequence starts from its own deep copy. (Behind a mutex because
    /// llguidance's parser is `Send` but not promised `Sync`.)
    fresh: Mutex<TokenParser>,
    spec: ConstraintSpec,
    env: toktrie::TokEnv,
}

impl Compiled {
    pub(crate) fn new(parser: TokenParser, spec: ConstraintSpec, env: toktrie::TokEnv) -> Self {
        Compiled {
            fresh: Mutex::new(parser),
            spec,
            env,
        }
    }

    pub(crate) fn spec(&self) -> &ConstraintSpec {
        &self.spec
    }

    fn start(&self) -> Matcher {
        let p = self
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deep_clone();
        Matcher::new(Ok(p))
    }
}

enum Phase {
    /// Free text until `after` appears; `window` holds the last bytes generated, enough to
    /// find `after` across token boundaries.
    Waiting {
        window: Vec<u8>,
    },
    Active(Box<Matcher>),
    /// The grammar is complete.
    Done,
}

/// What a committed token did to the sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Still free text (waiting for `after`).
    Free,
    /// The grammar goes on.
    Continue,
    /// The grammar is complete: the sequence ends here (finish reason `stop`).
    Done,
}

/// The grammar state of one sequence.
pub struct SeqMatcher {
    compiled: Arc<Compiled>,
    phase: Phase,
    /// The next token's mask, computed ahead of sampling.
    mask: Option<SimpleVob>,
    /// Extra stop ids of the request: allowed only where the grammar accepts.
    extra_stops: Vec<u32>,
    /// `ignore_eos`: end-of-generation ids only when nothing else is allowed.
    block_eos: bool,
    masks: u64,
    mask_time: Duration,
}

impl SeqMatcher {
    pub(crate) fn new(compiled: Arc<Compiled>) -> Self {
        let phase = if compiled.spec.after.is_some() {
            Phase::Waiting { window: Vec::new() }
        } else {
            Phase::Active(Box::new(compiled.start()))
        };
        SeqMatcher {
            compiled,
            phase,
            mask: None,
            extra_stops: Vec::new(),
            block_eos: false,
            masks: 0,
            mask_time: Duration::ZERO,
        }
    }

    /// The request's own stop ids, and whether it ignores EOS.
    pub fn with_stops(mut self, extra_stop_ids: &[u32], ignore_eos: bool) -> Self {
        self.extra_stops = extra_stop_ids.to_vec();
        self.block_eos = ignore_eos;
        self
    }

    /// Whether the next token is constrained (false while waiting for `after`, and after the
    /// grammar completed).
    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Active(_))
    }

    /// Whether the grammar is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Whether a mask must be computed before the next token is sampled.
    pub fn needs_mask(&self) -> bool {
        self.is_active() && self.mask.is_none()
    }

    /// Masks computed so far and the time they took.
    pub fn mask_stats(&self) -> (u64, Duration) {
        (self.masks, self.mask_time)
    }

    fn trie(&self) -> &TokTrie {
        self.compiled.env.tok_trie()
    }

    /// Compute the next token's mask (a no-op when free, done, or already computed).
    pub fn compute_mask(&mut self) -> Result<(), String> {
        if !self.needs_mask() {
            return Ok(());
        }
        let t0 = Instant::now();
        let Phase::Active(m) = &mut self.phase else {
            return Ok(());
        };
        let mut mask = match m.compute_mask() {
            Ok(mask) => mask,
            // The grammar cannot go on but is complete: only an end-of-generation token.
            Err(_) if m.is_stopped() && m.stop_reason().is_ok() => {
                self.compiled.env.tok_trie().eos_token_set()
            }
            Err(e) => return Err(grammar_error(&e.to_string())),
        };
        let trie = self.compiled.env.tok_trie();
        let accepting = trie.eos_tokens().iter().any(|&e| mask.is_allowed(e));
        if self.block_eos && accepting {
            let mut without = mask.clone();
            for &e in trie.eos_tokens() {
                without.disallow_token(e);
            }
            if !without.is_zero() {
                mask = without;
            }
        }
        for &s in &self.extra_stops {
            if (s as usize) < mask.len() {
                mask.set(s as usize, accepting);
            }
        }
        self.masks += 1;
        self.mask_time += t0.elapsed();
        self.mask = Some(mask);
        Ok(())
    }

    /// Set every logit the grammar disallows to -inf (ids past the vocabulary too). Computes
    /// the mask here if it was not computed ahead.
    pub fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        if !self.is_active() {
            return Ok(());
        }
        self.compute_mask()?;
        let Some(mask) = &self.mask else {
            return Ok(());
        };
        let n = mask.len().min(logits.len());
        for (w, &bits) in mask.as_slice().iter().enumerate() {
            let base = w * 32;
            if base >= n {
                break;
            }
            let end = (base + 32).min(n);
            if bits == 0 {
                logits[base..end].fill(f32::NEG_INFINITY);
            } else if bits != u32::MAX {
                for (i, l) in logits[base..end].iter_mut().enumerate() {
                    if bits & (1 << i) == 0 {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }
        }
        logits[n..].fill(f32::NEG_INFINITY);
        Ok(())
    }

    /// Take the sampled token (not an end-of-generation id: the engine ends the sequence on
    /// those itself).
    pub fn commit(&mut self, token: u32) -> Result<Commit, String> {
        self.mask = None;
        match &mut self.phase {
            Phase::Done => Ok(Commit::Done),
            Phase::Active(m) => {
                m.consume_token(token)
                    .map_err(|e| grammar_error(&e.to_string()))?;
                if m.is_stopped() {
                    self.phase = Phase::Done;
                    Ok(Commit::Done)
                } else {
                    Ok(Commit::Continue)
                }
            }
            Phase::Waiting { window } => {
                let after = self.compiled.spec.after.as_deref().unwrap_or_default();
                let bytes = token_text(self.compiled.env.tok_trie(), token);
                window.extend_from_slice(bytes);
                let Some(at) = find(window, after.as_bytes()) else {
                    // Keep just enough to find `after` split across tokens.
                    let keep = after.len().saturating_sub(1);
                    if window.len() > keep {
                        window.drain(..window.len() - keep);
                    }
                    return Ok(Commit::Free);
                };
                let rest = window[at + after.len()..].to_vec();
                self.activate(&rest)
            }
        }
    }

    /// Start the grammar on the text that followed `after` in the same token.
    fn activate(&mut self, rest: &[u8]) -> Result<Commit, String> {
        let mut m = self.compiled.start();
        if !rest.is_empty() {
            let toks = self.compiled.env.tokenize_bytes(rest);
            let after = self.compiled.spec.after.as_deref().unwrap_or_default();
            let fits = m
                .try_consume_tokens(&toks)
                .map_err(|e| grammar_error(&e.to_string()))?;
            if fits != toks.len() {
                return Err(format!(
                    "the text generated right after `{after}` ({:?}) does not fit the grammar",
                    String::from_utf8_lossy(rest)
                ));
            }
        }
        if m.is_stopped() {
            self.phase = Phase::Done;
            return Ok(Commit::Done);
        }
        self.phase = Phase::Active(Box::new(m));
        Ok(Commit::Continue)
    }

    /// Whether the grammar would accept ending here.
    pub fn is_accepting(&mut self) -> bool {
        match &mut self.phase {
            Phase::Active(m) => m.is_accepting().unwrap_or(false),
            Phase::Done => true,
            Phase::Waiting { .. } => false,
        }
    }

    /// The trie's bytes of a token (control tokens without the special-token marker).
    pub fn token_bytes(&self, token: u32) -> &[u8] {
        token_text(self.trie(), token)
    }
}

fn token_text(trie: &TokTrie, token: u32) -> &[u8] {
    let b = trie.token(token);
    match b.first() {
        Some(&TokTrie::SPECIAL_TOKEN_MARKER) => &b[1..],
        _ => b,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// llguidance's runtime errors without the trailer it adds when verbose errors are off.
fn grammar_error(msg: &str) -> String {
    let m = msg.trim_end_matches("\n<non-verbose/>").trim();
    format!("constrained decoding: {m}")
}
