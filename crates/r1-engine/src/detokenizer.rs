//! Incremental detokenization for streaming: push generated token ids one at a time and get
//! text deltas that never split a UTF-8 character. The concatenated deltas plus `finish()`
//! equal `Tokenizer::decode` of all the ids.
//!
//! Byte-level vocabularies (every GGUF tokenizer, and HF tokenizers with a `ByteLevel`
//! decoder) are decoded exactly on bytes: a token's bytes are appended to a small pending
//! buffer and every complete character is released; at most 3 bytes wait for the rest of a
//! character. Invalid bytes become U+FFFD exactly as `String::from_utf8_lossy` (and so
//! `decode`) makes them. Other decoders use the prefix/read-offset window of vLLM and TGI:
//! decode a few recent tokens, emit what grew, hold back text ending in U+FFFD.

use crate::tokenizer::Tokenizer;

/// The decoder state alone, for callers that keep the tokenizer elsewhere (one per sequence).
#[derive(Clone, Debug)]
pub struct DecodeState {
    skip_special: bool,
    mode: Mode,
}

#[derive(Clone, Debug)]
enum Mode {
    Bytes {
        pending: Vec<u8>,
    },
    Window {
        ids: Vec<u32>,
        prefix: usize,
        read: usize,
    },
}

impl DecodeState {
    /// A state for `tokenizer`'s kind of vocabulary.
    pub fn new(tokenizer: &Tokenizer, skip_special: bool) -> Self {
        if tokenizer.is_byte_level() {
            DecodeState {
                skip_special,
                mode: Mode::Bytes {
                    pending: Vec::new(),
                },
            }
        } else {
            Self::windowed(skip_special)
        }
    }

    /// The prefix/read-offset window method, whatever the vocabulary (works for any decoder).
    pub fn windowed(skip_special: bool) -> Self {
        DecodeState {
            skip_special,
            mode: Mode::Window {
                ids: Vec::new(),
                prefix: 0,
                read: 0,
            },
        }
    }

    /// Add one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> String {
        match &mut self.mode {
            Mode::Bytes { pending } => {
                if let Some(bytes) = tokenizer.piece(id, self.skip_special) {
                    pending.extend_from_slice(bytes);
                }
                take_complete(pending)
            }
            Mode::Window { ids, prefix, read } => {
                ids.push(id);
                let prefix_text = tokenizer.decode(&ids[*prefix..*read], self.skip_special);
                let new_text = tokenizer.decode(&ids[*prefix..], self.skip_special);
                if new_text.len() <= prefix_text.len() || new_text.ends_with('\u{FFFD}') {
                    return String::new();
                }
                let Some(delta) = new_text.get(prefix_text.len()..) else {
                    return String::new();
                };
                let delta = delta.to_string();
                // Keep only the tokens from the new prefix on.
                ids.drain(..*read);
                *prefix = 0;
                *read = ids.len();
                delta
            }
        }
    }

    /// Flush what is held back (an incomplete character becomes U+FFFD) and reset.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> String {
        match &mut self.mode {
            Mode::Bytes { pending } => {
                let rest = String::from_utf8_lossy(pending).into_owned();
                pending.clear();
                rest
            }
            Mode::Window { ids, prefix, read } => {
                let prefix_text = tokenizer.decode(&ids[*prefix..*read], self.skip_special);
                let new_text = tokenizer.decode(&ids[*prefix..], self.skip_special);
                let rest = new_text
                    .get(prefix_text.len()..)
                    .filter(|_| new_text.starts_with(&prefix_text))
                    .unwrap_or_default()
                    .to_string();
                ids.clear();
                *prefix = 0;
                *read = 0;
                rest
            }
        }
    }

    /// Whether text is held back waiting for more tokens.
    pub fn has_pending(&self) -> bool {
        match &self.mode {
            Mode::Bytes { pending } => !pending.is_empty(),
            Mode::Window { ids, read, .. } => ids.len() > *read,
        }
    }
}

/// Release the longest prefix of `pending` that `from_utf8_lossy` would decode the same way no
/// matter what follows: valid characters, and U+FFFD for each invalid sequence. An incomplete
/// character at the end stays in `pending`.
fn take_complete(pending: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut start = 0;
    loop {
        match std::str::from_utf8(&pending[start..]) {
            Ok(s) => {
                out.push_str(s);
                start = pending.len();
                break;
            }
            Err(e) => {
                let valid = start + e.valid_up_to();
                // Safe to unwrap-free: the range was just validated.
                out.push_str(std::str::from_utf8(&pending[start..valid]).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        start = valid + n;
                    }
                    None => {
                        start = valid;
                        break;
                    }
                }
            }
        }
    }
    pending.drain(..start);
    out
}

/// An incremental decoder bound to a tokenizer: `push` ids, write the deltas, `finish` at the
/// end. Special tokens are skipped by default, as in vLLM's and llama-server's outputs.
#[derive(Clone, Debug)]
pub struct IncrementalDecoder<'t> {
    tokenizer: &'t Tokenizer,
    state: DecodeState,
}

impl<'t> IncrementalDecoder<'t> {
    pub fn new(tokenizer: &'t Tokenizer) -> Self {
        Self::with_skip_special(tokenizer, true)
    }

    pub fn with_skip_special(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        IncrementalDecoder {
            tokenizer,
            state: DecodeState::new(tokenizer, skip_special),
        }
    }

    /// Use the prefix/read-offset window method even for a byte-level vocabulary.
    pub fn windowed(tokenizer: &'t Tokenizer, skip_special: bool) -> Self {
        IncrementalDecoder {
            tokenizer,
            state: DecodeState::windowed(skip_special),
        }
    }

    /// Add one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.state.push(self.tokenizer, id)
    }

    /// Flush what is held back and reset, ready for a new stream.
    pub fn finish(&mut self) -> String {
        self.state.finish(self.tokenizer)
    }

    pub fn has_pending(&self) -> bool {
        self.state.has_pending()
    }
}

#[cfg(test)]
mod tests {
    use super::take_complete;

    fn feed(chunks: &[&[u8]]) -> String {
        let mut pending = Vec::new();
        let mut out = String::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let d = take_complete(&mut pending);
            assert!(pending.len() <= 3, "at most an incomplete character waits");
            out.push_str(&d);
        }
        out.push_str(&String::from_utf8_lossy(&pending));
        out
    }

    #[test]
    fn matches_from_utf8_lossy_on_any_split() {
        let cases: Vec<Vec<u8>> = vec![
            "你好，世界".as_bytes().to_vec(),
            "a😀b€".as_bytes().to_vec(),
            vec![0xE4, 0xBD, b'A', 0xFF, 0xF0, 0x9F, 0x98],
            vec![0xC3, 0x28, 0xE2, 0x82, 0xAC, 0x80, 0xED, 0xA0, 0x80],
            vec![0xF4, 0x90, 0x80, 0x80, b'z'],
        ];
        for bytes in cases {
            let want = String::from_utf8_lossy(&bytes).into_owned();
            // Every way of cutting into two or three chunks, and one byte at a time.
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let got = feed(&[&bytes[..i], &bytes[i..j], &bytes[j..]]);
                    assert_eq!(got, want, "{bytes:x?} cut at {i},{j}");
                }
            }
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(feed(&singles), want);
        }
    }
}
