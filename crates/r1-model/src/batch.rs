//! A flattened batch: the new tokens of several sequences concatenated, no padding.

/// One sequence's part of a batch.
#[derive(Clone, Debug)]
pub struct SeqInBatch {
    /// Index of its first token in `Batch::tokens`.
    pub start: usize,
    /// Number of new tokens this step (a prefill chunk, or 1 for decode).
    pub len: usize,
    /// Position of the first new token (= tokens already in the cache).
    pub pos0: usize,
    /// The KV blocks holding positions `0..pos0 + len`, in order.
    pub block_table: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<u32>,
    pub seqs: Vec<SeqInBatch>,
    /// Indices into `tokens` whose logits the forward returns, in this order.
    pub logit_rows: Vec<usize>,
}

impl Batch {
    /// Add a sequence's new tokens; `want_logits` returns the logits of its last token.
    pub fn push(&mut self, tokens: &[u32], pos0: usize, block_table: Vec<u32>, want_logits: bool) {
        let start = self.tokens.len();
        self.tokens.extend_from_slice(tokens);
        self.seqs.push(SeqInBatch {
            start,
            len: tokens.len(),
            pos0,
            block_table,
        });
        if want_logits && !tokens.is_empty() {
            self.logit_rows.push(start + tokens.len() - 1);
        }
    }

    /// Check the batch against a KV cache and a vocabulary size: contiguous sequences, block
    /// tables that cover every position and stay inside the cache, known token ids, logit
    /// rows inside the batch. Every architecture calls this before its forward pass.
    pub fn validate(&self, kv: &crate::KvCache, vocab_size: usize) -> Result<(), String> {
        let mut expect = 0;
        for s in &self.seqs {
            if s.start != expect {
                return Err("sequences must be contiguous in the token list".into());
            }
            expect += s.len;
            let need = (s.pos0 + s.len).div_ceil(kv.block_size());
            if s.block_table.len() < need {
                return Err(format!(
                    "block table has {} blocks, {need} needed",
                    s.block_table.len()
                ));
            }
            if s.block_table.iter().any(|&b| b as usize >= kv.n_blocks()) {
                return Err("block table names a block outside the cache".into());
            }
        }
        if expect != self.tokens.len() {
            return Err("sequence lengths do not add up to the token count".into());
        }
        if let Some(&t) = self.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(format!(
                "token id {t} is outside the vocabulary ({vocab_size})"
            ));
        }
        if self.logit_rows.iter().any(|&r| r >= self.tokens.len()) {
            return Err("logit row outside the batch".into());
        }
        Ok(())
    }

    /// Position of every token, in `tokens` order.
    pub fn positions(&self) -> Vec<usize> {
        let mut pos = vec![0; self.tokens.len()];
        for s in &self.seqs {
            for i in 0..s.len {
                pos[s.start + i] = s.pos0 + i;
            }
        }
        pos
    }
}
