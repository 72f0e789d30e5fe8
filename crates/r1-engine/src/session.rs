//! One conversation run directly on a model, without the batching engine: the path of
//! `r1serve run`, `chat` and `bench`. It keeps its tokens' KV so a follow-up turn only
//! prefills what changed.

use r1_model::{Batch, KvCache, Logits, Model, ModelError};

pub struct Session<'m> {
    model: &'m dyn Model,
    kv: KvCache,
    block_table: Vec<u32>,
    /// Tokens whose K/V are in the cache, in order.
    tokens: Vec<u32>,
    max_tokens: usize,
}

/// Tokens per KV block for a single session.
const BLOCK: usize = 16;

impl<'m> Session<'m> {
    /// A session that can hold up to `max_tokens` tokens (capped by the model's context).
    pub fn new(model: &'m dyn Model, max_tokens: usize) -> Self {
        let max_tokens = max_tokens.min(model.config().context_length).max(1);
        let n_blocks = max_tokens.div_ceil(BLOCK);
        Session {
            model,
            kv: KvCache::with_dtype(model.kv_layout(), BLOCK, n_blocks, model.kv_dtype()),
            block_table: (0..n_blocks as u32).collect(),
            tokens: Vec::new(),
            max_tokens,
        }
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn capacity(&self) -> usize {
        self.max_tokens
    }

    /// Forget everything after the first `n` tokens (their K/V will be overwritten).
    pub fn truncate(&mut self, n: usize) {
        self.tokens.truncate(n);
    }

    /// Keep the longest cached prefix shared with `prompt`, returning its length, so that
    /// only the rest needs a forward pass. At least one token is always left to run, since
    /// the caller needs logits for the last prompt position.
    pub fn reuse_prefix(&mut self, prompt: &[u32]) -> usize {
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len().saturating_sub(1));
        self.truncate(common);
        common
    }

    /// Append `new` tokens in chunks of at most `chunk`; returns the logits after the last.
    pub fn feed(&mut self, new: &[u32], chunk: usize) -> Result<Vec<f32>, ModelError> {
        let mut all = self.feed_all_logits(new, chunk, false)?;
        Ok(all.pop().unwrap_or_default())
    }

    /// Append `new` tokens; returns the logits after every one of them if `every` is set,
    /// else only after the last.
    pub fn feed_all_logits(
        &mut self,
        new: &[u32],
        chunk: usize,
        every: bool,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if new.is_empty() {
            return Err(ModelError::Batch("nothing to feed".into()));
        }
        if self.tokens.len() + new.len() > self.max_tokens {
            return Err(ModelError::Batch(format!(
                "{} tokens exceed the session's context of {}",
                self.tokens.len() + new.len(),
                self.max_tokens
            )));
        }
        let mut out = Vec::new();
        let chunk = chunk.max(1);
        for (ci, part) in new.chunks(chunk).enumerate() {
            let last_chunk = (ci + 1) * chunk >= new.len();
            let pos0 = self.tokens.len();
            let mut batch = Batch::default();
            let blocks = (pos0 + part.len()).div_ceil(BLOCK);
            batch.push(part, pos0, self.block_table[..blocks].to_vec(), false);
            if every {
                batch.logit_rows = (0..part.len()).collect();
            } else if last_chunk {
                batch.logit_rows = vec![part.len() - 1];
            }
            let logits: Logits = self.model.forward(&batch, &mut self.kv)?;
            self.tokens.extend_from_slice(part);
            for r in 0..logits.rows() {
                out.push(logits.row(r).to_vec());
            }
        }
        Ok(out)
    }
}
