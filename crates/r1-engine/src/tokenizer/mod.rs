//! The tokenizer: byte-level BPE, built from a GGUF file's `tokenizer.ggml.*` metadata the way
//! llama.cpp reads it, or from a Hugging Face model directory (`tokenizer.json` +
//! `tokenizer_config.json`). Internally an HF `tokenizers::Tokenizer` does the encoding.
//!
//! Semantics follow llama.cpp's `llama_tokenize`:
//! * `add_special` adds BOS/EOS as the model asks (`tokenizer.ggml.add_bos_token`, ...);
//! * `parse_special` makes the text of control tokens (`<|im_start|>`) encode to their ids;
//!   without it such text is tokenized as ordinary text. User-defined tokens (GGUF token type
//!   4, HF added tokens that are not special, e.g. Qwen's `<tool_call>`) always match.
//!
//! Decoding is HF's: the byte-level pieces are concatenated and invalid UTF-8 becomes U+FFFD.
//! No "clean up tokenization spaces" pass is applied, so `decode(encode(s)) == s`.

mod hf;
mod pre;
mod to_gguf;

pub use to_gguf::gguf_tokenizer_metadata;

use std::sync::OnceLock;

use r1_model::gguf::{GgufError, GgufFile};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::AddedToken;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The metadata or file describes a tokenizer we cannot build; `origin` names the file.
    #[error("{origin}: {msg}")]
    Invalid { origin: String, msg: String },
    #[error("{origin}: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// An error reported by the `tokenizers` library.
    #[error("tokenizer: {0}")]
    Library(String),
}

fn lib_err(e: tokenizers::Error) -> TokenizerError {
    TokenizerError::Library(e.to_string())
}

/// Token texts that end generation, after llama.cpp's `special_eog_ids` (matched by text, as
/// llama.cpp does): end-of-turn/end-of-text markers and the FIM pad/repo/file-separator tokens.
/// Newer llama.cpp also lists `</s>` (for PaddleOCR); it is left out here because Qwen2's
/// vocabulary has an ordinary text token `</s>` (id 128247) that must not end generation.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
    "<|fim_pad|>",
    "<fim-pad>",
    "<fim_pad>",
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<reponame>",
    "<|file_sep|>",
];

/// How BOS/EOS are added when `encode(.., add_special = true, ..)`.
#[derive(Clone, Copy, Debug)]
enum SpecialPolicy {
    /// Added here (GGUF flags, or HF `add_bos_token`/`add_eos_token` in tokenizer_config).
    Manual { add_bos: bool, add_eos: bool },
    /// Left to the tokenizer.json post-processor.
    PostProcessor,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// A copy that does not split special tokens out of the text (built when first needed).
    plain: OnceLock<tokenizers::Tokenizer>,
    /// Contents of the special added tokens, to know when `plain` is needed.
    special_texts: Vec<String>,
    /// id -> bytes, for byte-level vocabularies (None: decode through the HF decoder).
    pieces: Option<Vec<Box<[u8]>>>,
    /// id -> is a special (control) token, skipped by `decode(.., skip_special = true)`.
    special: Vec<bool>,
    bos: Option<u32>,
    eos: Option<u32>,
    policy: SpecialPolicy,
    stops: Vec<u32>,
    chat_template: Option<String>,
    vocab_size: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("policy", &self.policy)
            .field("stops", &self.stops)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Build the tokenizer from a GGUF file's metadata. Only byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`) is supported, which covers the DeepSeek-R1 family.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, TokenizerError> {
        let origin = gguf.path().display().to_string();
        let invalid = |msg: String| TokenizerError::Invalid {
            origin: origin.clone(),
            msg,
        };
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(invalid(format!(
                "tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let pre_name = gguf.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
        let pre = pre::PreSpec::lookup(pre_name).ok_or_else(|| {
            invalid(format!(
                "tokenizer.ggml.pre `{pre_name}` is not supported (known: {})",
                pre::KNOWN
            ))
        })?;
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(invalid(format!("tokenizer.ggml.tokens has {n} entries")));
        }
        let types = match gguf.get("tokenizer.ggml.token_type") {
            Some(_) => gguf.get_i64_array("tokenizer.ggml.token_type")?,
            None => vec![1; n],
        };
        if types.len() < n {
            return Err(invalid(format!(
                "tokenizer.ggml.token_type has {} entries for {n} tokens",
                types.len()
            )));
        }

        let mut texts = Vec::with_capacity(n);
        let mut vocab = Vocab::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens the same way.
            let t = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                (*t).to_string()
            };
            if let Some(prev) = vocab.insert(t.clone(), i as u32) {
                return Err(invalid(format!(
                    "duplicate token {t:?} in tokenizer.ggml.tokens (ids {prev} and {i})"
                )));
            }
            texts.push(t);
        }
        let mut merges = Vec::new();
        for (i, m) in gguf
            .get_str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
        {
            // llama.cpp splits at the first space after the first byte.
            let pos = m
                .as_bytes()
                .get(1..)
                .and_then(|rest| rest.iter().position(|&b| b == b' '));
            let pos = pos.map(|p| p + 1);
            match pos {
                Some(p) if p + 1 < m.len() => {
                    merges.push((m[..p].to_string(), m[p + 1..].to_string()))
                }
                _ => {
                    return Err(invalid(format!(
                        "tokenizer.ggml.merges[{i}] = {m:?} is not two tokens separated by a space"
                    )))
                }
            }
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges)
            .build()
            .map_err(|e| invalid(format!("building the BPE model: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre.build().map_err(lib_err)?));
        inner.with_decoder(Some(ByteLevel::default()));

        // Control (3) and unknown (2) tokens are special; user-defined (4) ones are added
        // tokens that always match, as in llama.cpp's tokenizer_st_partition.
        let mut special = vec![false; n];
        let mut added = Vec::new();
        for (i, ty) in types.iter().take(n).enumerate() {
            let is_special = matches!(ty, 2 | 3);
            if is_special || *ty == 4 {
                special[i] = is_special;
                added.push(AddedToken::from(texts[i].clone(), is_special).normalized(false));
            }
        }
        inner.add_tokens(&added);

        let id_key = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match gguf.opt_u64(key)? {
                Some(id) if (id as usize) < n => Ok(Some(id as u32)),
                Some(id) => Err(invalid(format!("{key} = {id} is outside the {n} tokens"))),
                None => Ok(None),
            }
        };
        let bos = id_key("tokenizer.ggml.bos_token_id")?;
        let eos = id_key("tokenizer.ggml.eos_token_id")?;
        let mut extra_stops = Vec::new();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            extra_stops.extend(id_key(key)?);
        }
        let add_bos = gguf
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(pre.add_bos);
        let add_eos = gguf
            .opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(invalid(
                "add_bos_token is true but tokenizer.ggml.bos_token_id is not set".into(),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(invalid(
                "add_eos_token is true but tokenizer.ggml.eos_token_id is not set".into(),
            ));
        }
        let chat_template = gguf.opt_str("tokenizer.chat_template")?.map(str::to_string);

        let table = pre::byte_level_table();
        let pieces = texts
            .iter()
            .map(|t| pre::piece_bytes(&table, t).into_boxed_slice())
            .collect();
        let special_texts = (0..n)
            .filter(|&i| special[i])
            .map(|i| texts[i].clone())
            .collect();
        let mut tok = Tokenizer {
            inner,
            plain: OnceLock::new(),
            special_texts,
            pieces: Some(pieces),
            special,
            bos,
            eos,
            policy: SpecialPolicy::Manual { add_bos, add_eos },
            stops: Vec::new(),
            chat_template,
            vocab_size: n,
        };
        tok.stops = tok.find_stops(extra_stops);
        Ok(tok)
    }

    /// eos, the given ids, and every token whose text is an end-of-generation marker.
    fn find_stops(&self, extra: Vec<u32>) -> Vec<u32> {
        let mut stops: Vec<u32> = self.eos.into_iter().chain(extra).collect();
        stops.extend(EOG_TEXTS.iter().filter_map(|t| self.token_to_id(t)));
        stops.sort_unstable();
        stops.dedup();
        stops
    }

    /// Tokenize `text`. `add_special` adds BOS/EOS as the model asks; `parse_special` lets the
    /// text of special tokens (e.g. `<|im_start|>`, as rendered by a chat template) become
    /// their ids instead of being tokenized as plain text.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let plain = !parse_special && self.special_texts.iter().any(|s| text.contains(s.as_str()));
        let tk = if plain {
            self.plain.get_or_init(|| {
                let mut t = self.inner.clone();
                t.set_encode_special_tokens(true);
                t
            })
        } else {
            &self.inner
        };
        match self.policy {
            SpecialPolicy::PostProcessor => {
                let enc = tk.encode_fast(text, add_special).map_err(lib_err)?;
                Ok(enc.get_ids().to_vec())
            }
            SpecialPolicy::Manual { add_bos, add_eos } => {
                let enc = tk.encode_fast(text, false).map_err(lib_err)?;
                let mut ids = Vec::with_capacity(enc.len() + 2);
                if add_special && add_bos {
                    ids.extend(self.bos);
                }
                ids.extend_from_slice(enc.get_ids());
                if add_special && add_eos {
                    ids.extend(self.eos);
                }
                Ok(ids)
            }
        }
    }

    /// The text of `ids`. Ids outside the vocabulary are ignored (as HF does); special tokens
    /// are left out when `skip_special`. Invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        match &self.pieces {
            Some(_) => {
                let mut bytes = Vec::with_capacity(ids.len() * 4);
                for &id in ids {
                    if let Some(b) = self.piece(id, skip_special) {
                        bytes.extend_from_slice(b);
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => self.inner.decode(ids, skip_special).unwrap_or_else(|e| {
                tracing::warn!("decoding {} tokens failed: {e}", ids.len());
                String::new()
            }),
        }
    }

    /// The bytes of one token of a byte-level vocabulary (None when out of range, skipped as
    /// special, or when the vocabulary is not byte-level).
    pub(crate) fn piece(&self, id: u32, skip_special: bool) -> Option<&[u8]> {
        let pieces = self.pieces.as_ref()?;
        if skip_special && self.is_special(id) {
            return None;
        }
        pieces.get(id as usize).map(|b| &b[..])
    }

    /// Whether `decode` works piece by piece on bytes (true for every GGUF tokenizer).
    pub fn is_byte_level(&self) -> bool {
        self.pieces.is_some()
    }

    /// The raw bytes one token stands for (may be part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match &self.pieces {
            Some(p) => p.get(id as usize).map(|b| b.to_vec()),
            None => self
                .id_to_token(id)
                .map(|_| self.decode(&[id], false).into_bytes()),
        }
    }

    /// The text one token decodes to on its own (lossy when it is part of a character).
    pub fn token_to_piece(&self, id: u32) -> Option<String> {
        self.token_bytes(id)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The vocabulary entry of `id` as stored (byte-level form, e.g. `Ġthe`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry or added token, by its stored text.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Number of token ids, added tokens included (the model's embedding rows may be more).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The BOS token's text, or "" when the model has none (for chat templates).
    pub fn bos_token(&self) -> String {
        self.bos
            .and_then(|id| self.id_to_token(id))
            .unwrap_or_default()
    }

    /// The EOS token's text, or "" when the model has none (for chat templates).
    pub fn eos_token(&self) -> String {
        self.eos
            .and_then(|id| self.id_to_token(id))
            .unwrap_or_default()
    }

    /// Whether `encode(.., add_special = true, ..)` puts BOS first.
    pub fn adds_bos(&self) -> bool {
        match self.policy {
            SpecialPolicy::Manual { add_bos, .. } => add_bos,
            SpecialPolicy::PostProcessor => self.bos.is_some_and(|b| {
                self.encode("", true, false)
                    .is_ok_and(|ids| ids.first() == Some(&b))
            }),
        }
    }

    /// Token ids that end generation: EOS plus the end-of-turn tokens in the vocabulary
    /// (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `<｜end▁of▁sentence｜>`, ...), sorted.
    pub fn stop_ids(&self) -> &[u32] {
        &self.stops
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stops.binary_search(&id).is_ok()
    }

    /// Add stop ids (e.g. `generation_config.json`'s `eos_token_id` list).
    pub fn add_stop_ids(&mut self, ids: impl IntoIterator<Item = u32>) {
        self.stops.extend(
            ids.into_iter()
                .filter(|&id| (id as usize) < self.vocab_size),
        );
        self.stops.sort_unstable();
        self.stops.dedup();
    }

    /// The model's Jinja chat template, if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The HF tokenizer inside (for tests and tools).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::pre;

    #[test]
    fn byte_level_table_is_gpt2s() {
        let t = pre::byte_level_table();
        assert_eq!(t['Ġ' as usize], b' ' as i16);
        assert_eq!(t['Ċ' as usize], b'\n' as i16);
        assert_eq!(t['ĉ' as usize], b'\t' as i16);
        assert_eq!(t['A' as usize], b'A' as i16);
        assert_eq!(t[0x143], 0xAD);
        let mut seen = [false; 256];
        for &b in t.iter().filter(|&&b| b >= 0) {
            assert!(!seen[b as usize]);
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(pre::piece_bytes(&t, "ĠÃ©"), vec![b' ', 0xC3, 0xA9]);
        assert_eq!(pre::piece_bytes(&t, "<｜User｜>"), "<｜User｜>".as_bytes());
    }

    #[test]
    fn every_pre_tokenizer_compiles() {
        for name in [
            "default",
            "llama-bpe",
            "dbrx",
            "qwen2",
            "deepseek-r1-qwen",
            "deepseek-v3",
            "deepseek-llm",
            "deepseek-coder",
            "smollm",
            "gpt-2",
        ] {
            let spec = pre::PreSpec::lookup(name).expect(name);
            spec.build().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(pre::PreSpec::lookup("no-such-pre").is_none());
    }
}
