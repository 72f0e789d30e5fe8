//! `Tokenizer::from_gguf` on small GGUF files written here: the BOS/EOS policy, llama.cpp's
//! `ignore_merges` for Llama 3, user-defined tokens, and clear errors for bad metadata.
//! Runs without the test models.

use r1_engine::tokenizer::Tokenizer;
use r1_model::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter};

/// GPT-2's byte-to-character table (bytes_to_unicode), written out independently here.
fn byte_chars() -> Vec<char> {
    let printable: Vec<u32> = (0x21..=0x7E)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = vec!['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        chars[b as usize] = if printable.contains(&b) {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    chars
}

fn strings(v: &[String]) -> GgufValue {
    GgufValue::Array(GgufArray {
        elem_type: 8,
        values: v.iter().cloned().map(GgufValue::String).collect(),
    })
}

/// A byte-level vocabulary: the 256 byte tokens, a few merges, `Ġworld` (reachable by no
/// merge), control tokens `<s>` `</s>` `<|eot_id|>` and the user-defined `<think>`.
struct Tiny {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
    extra: Vec<(&'static str, GgufValue)>,
    pre: &'static str,
    model: &'static str,
}

impl Tiny {
    fn new(pre: &'static str) -> Self {
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        let mut types = vec![1; 256];
        for (t, ty) in [
            ("Ġt", 1),
            ("he", 1),
            ("Ġthe", 1),
            ("Ġworld", 1),
            ("<s>", 3),
            ("</s>", 3),
            ("<|eot_id|>", 3),
            ("<think>", 4),
        ] {
            tokens.push(t.to_string());
            types.push(ty);
        }
        Tiny {
            tokens,
            types,
            merges: ["Ġ t", "h e", "Ġt he"].map(String::from).to_vec(),
            extra: vec![
                ("tokenizer.ggml.bos_token_id", GgufValue::U32(260)),
                ("tokenizer.ggml.eos_token_id", GgufValue::U32(261)),
            ],
            pre,
            model: "gpt2",
        }
    }

    fn set(mut self, key: &'static str, v: GgufValue) -> Self {
        self.extra.retain(|(k, _)| *k != key);
        self.extra.push((key, v));
        self
    }

    fn build(&self) -> Result<Tokenizer, String> {
        let mut w = GgufWriter::new();
        w.set("tokenizer.ggml.model", GgufValue::String(self.model.into()));
        w.set("tokenizer.ggml.pre", GgufValue::String(self.pre.into()));
        w.set("tokenizer.ggml.tokens", strings(&self.tokens));
        w.set(
            "tokenizer.ggml.token_type",
            GgufValue::Array(GgufArray {
                elem_type: 5,
                values: self.types.iter().map(|&t| GgufValue::I32(t)).collect(),
            }),
        );
        w.set("tokenizer.ggml.merges", strings(&self.merges));
        for (k, v) in &self.extra {
            w.set(k, v.clone());
        }
        let f = GgufFile::from_bytes("tiny.gguf", w.to_bytes()).unwrap();
        Tokenizer::from_gguf(&f).map_err(|e| e.to_string())
    }
}

#[test]
fn bos_and_eos_follow_the_model_flags() {
    // llama-bpe adds BOS unless the file says otherwise (llama.cpp's default for Llama 3).
    let t = Tiny::new("llama-bpe").build().unwrap();
    assert_eq!(t.encode(" the", true, true).unwrap(), vec![260, 258]);
    assert_eq!(t.encode(" the", false, true).unwrap(), vec![258]);
    assert_eq!(t.encode("", true, true).unwrap(), vec![260]);
    assert!(t.adds_bos());
    assert_eq!(t.bos_token(), "<s>");
    assert_eq!(t.eos_token(), "</s>");
    let t = Tiny::new("llama-bpe")
        .set("tokenizer.ggml.add_bos_token", GgufValue::Bool(false))
        .set("tokenizer.ggml.add_eos_token", GgufValue::Bool(true))
        .build()
        .unwrap();
    assert_eq!(t.encode(" the", true, true).unwrap(), vec![258, 261]);
    assert!(!t.adds_bos());
    // gpt-2 style pre-tokenizers add nothing by default.
    let t = Tiny::new("gpt-2").build().unwrap();
    assert_eq!(t.encode(" the", true, true).unwrap(), vec![258]);
}

#[test]
fn llama3_uses_whole_words_found_in_the_vocabulary() {
    // `Ġworld` is a token no merge builds: Llama 3 (ignore_merges) takes it whole, GPT-2
    // style BPE spells it out in bytes.
    let llama = Tiny::new("llama-bpe").build().unwrap();
    assert_eq!(llama.encode(" world", false, false).unwrap(), vec![259]);
    let gpt2 = Tiny::new("gpt-2").build().unwrap();
    let ids = gpt2.encode(" world", false, false).unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(gpt2.decode(&ids, false), " world");
}

#[test]
fn special_and_user_defined_tokens() {
    let t = Tiny::new("qwen2").build().unwrap();
    assert_eq!(t.encode("<s>", false, true).unwrap(), vec![260]);
    assert_eq!(
        t.encode("<s>", false, false).unwrap(),
        vec![b'<' as u32, b's' as u32, b'>' as u32]
    );
    // User-defined tokens match either way and survive skip_special.
    assert_eq!(t.encode("<think>", false, false).unwrap(), vec![263]);
    assert!(t.is_special(260) && !t.is_special(263));
    assert_eq!(t.decode(&[260, 263, 258, 261], true), "<think> the");
    assert_eq!(t.decode(&[260, 263, 258, 261], false), "<s><think> the</s>");
    // Out-of-range ids are ignored, as HF does.
    assert_eq!(t.decode(&[258, 99_999], false), " the");
    assert_eq!(t.token_bytes(99_999), None);
    // eos plus the end-of-turn texts found in the vocabulary.
    assert_eq!(t.stop_ids(), &[261, 262]);
    let t = Tiny::new("qwen2")
        .set("tokenizer.ggml.eos_token_id", GgufValue::U32(262))
        .build()
        .unwrap();
    assert_eq!(
        t.stop_ids(),
        &[262],
        "`</s>` is not a stop unless it is eos"
    );
    assert_eq!(t.chat_template(), None);
    assert_eq!(t.vocab_size(), 264);
}

#[test]
fn bad_metadata_is_an_error_naming_file_and_key() {
    let err = |tiny: Tiny| tiny.build().unwrap_err();
    let mut t = Tiny::new("qwen2");
    t.model = "llama";
    let e = err(t);
    assert!(e.contains("tiny.gguf") && e.contains("`llama`"), "{e}");
    let e = err(Tiny::new("no-such-pre"));
    assert!(
        e.contains("tokenizer.ggml.pre") && e.contains("no-such-pre"),
        "{e}"
    );
    let mut t = Tiny::new("qwen2");
    t.tokens[256] = t.tokens[0].clone();
    let e = err(t);
    assert!(e.contains("duplicate token"), "{e}");
    let mut t = Tiny::new("qwen2");
    t.merges.push("nospace".into());
    let e = err(t);
    assert!(e.contains("tokenizer.ggml.merges[3]"), "{e}");
    let mut t = Tiny::new("qwen2");
    t.merges.push("Ġ zzz".into());
    let e = err(t);
    assert!(e.contains("BPE"), "{e}");
    let mut t = Tiny::new("qwen2");
    t.types.truncate(10);
    let e = err(t);
    assert!(e.contains("token_type"), "{e}");
    let e = err(Tiny::new("qwen2").set("tokenizer.ggml.bos_token_id", GgufValue::U32(5000)));
    assert!(
        e.contains("tokenizer.ggml.bos_token_id") && e.contains("5000"),
        "{e}"
    );
    let e =
        err(Tiny::new("qwen2").set("tokenizer.ggml.eos_token_id", GgufValue::String("x".into())));
    assert!(e.contains("tokenizer.ggml.eos_token_id"), "{e}");
    let mut t = Tiny::new("llama-bpe");
    t.extra.clear();
    let e = err(t);
    assert!(e.contains("bos_token_id"), "{e}");
    // A file with no tokenizer at all.
    let f = GgufFile::from_bytes("empty.gguf", GgufWriter::new().to_bytes()).unwrap();
    let e = Tokenizer::from_gguf(&f).unwrap_err().to_string();
    assert!(
        e.contains("empty.gguf") && e.contains("tokenizer.ggml.model"),
        "{e}"
    );
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<r1_engine::chat_template::ChatTemplate>();
    check::<r1_engine::detokenizer::DecodeState>();
    check::<r1_engine::detokenizer::IncrementalDecoder<'static>>();
}
