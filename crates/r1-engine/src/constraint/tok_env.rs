//! llguidance's view of our vocabulary: a token trie of every token's bytes, with control
//! tokens under toktrie's special-token marker, and canonical tokenization for the bytes a
//! grammar forces.
//!
//! Control (special) tokens are stored as `0xFF` followed by their name (`\xFF<|im_end|>`),
//! the convention toktrie and llguidance share: a Lark grammar names them as `<|im_end|>`,
//! and no run of ordinary text can spell them. Every other token, user-defined added tokens
//! included (Qwen's `<tool_call>`, DeepSeek's `</think>` and, in the distill GGUFs,
//! `<｜tool▁calls▁begin｜>`), is its plain bytes, so a quoted Lark literal matches it.

use std::sync::Arc;

use toktrie::{TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use super::ConstraintError;
use crate::tokenizer::Tokenizer;

/// The token environment of one tokenizer (built once, shared by every parser).
pub(crate) struct TokEnv {
    trie: TokTrie,
    /// A copy of the encoder: llguidance tokenizes the bytes a grammar forces (a fixed key,
    /// a literal) and needs the tokenization the model saw in training.
    hf: tokenizers::Tokenizer,
}

impl TokEnv {
    pub(crate) fn new(tok: &Tokenizer) -> Result<Self, ConstraintError> {
        let n = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32).map(|id| token_word(tok, id)).collect();
        let stops: Vec<TokenId> = tok.stop_ids().to_vec();
        let eos = tok
            .eos_id()
            .or_else(|| stops.first().copied())
            .ok_or_else(|| {
                ConstraintError::Unsupported(
                    "the tokenizer has no end-of-sequence token, so a grammar cannot end".into(),
                )
            })?;
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_bos = tok.bos_id();
        let trie = TokTrie::from(&info, &words);
        // Every end-of-generation id (EOS, <|im_end|>, <|endoftext|>, ...) is allowed exactly
        // when the grammar accepts.
        let mut eos_set = vec![eos];
        eos_set.extend(stops.iter().copied().filter(|&s| s != eos));
        let trie = trie.with_eos_tokens(&eos_set);
        // The text of a control token is text here, as in `Tokenizer::encode` without
        // `parse_special`: only a grammar's `<|name|>` reference yields the control token.
        let mut hf = tok.hf().clone();
        hf.set_encode_special_tokens(true);
        Ok(TokEnv { trie, hf })
    }

    pub(crate) fn into_shared(self) -> toktrie::TokEnv {
        Arc::new(self)
    }
}

/// The bytes a token stands for in the trie: control tokens get the special-token marker.
fn token_word(tok: &Tokenizer, id: u32) -> Vec<u8> {
    let bytes = tok.token_bytes(id).unwrap_or_default();
    if tok.is_special(id) && !bytes.is_empty() {
        let mut w = Vec::with_capacity(bytes.len() + 1);
        w.push(TokTrie::SPECIAL_TOKEN_MARKER);
        w.extend_from_slice(&bytes);
        w
    } else {
        bytes
    }
}

impl TokenizerEnv for TokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Canonical (BPE) tokenization of text; bytes that are not UTF-8 (a forced prefix
    /// that ends mid-character) fall back to the trie's greedy split.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.hf.encode_fast(text, false) {
                Ok(enc) => enc.get_ids().to_vec(),
                Err(_) => self.trie.greedy_tokenize(s),
            },
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}
