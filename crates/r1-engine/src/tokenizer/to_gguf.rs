//! The GGUF tokenizer keys (`tokenizer.ggml.*`, `tokenizer.chat_template`) of an HF model
//! directory, as llama.cpp's `convert_hf_to_gguf.py` writes them for byte-level BPE
//! (`get_vocab_base` and `SpecialVocab`), so a GGUF made by `r1serve quantize` from an HF
//! directory carries its tokenizer and llama.cpp can run it.
//!
//! The converter names the pre-tokenizer by hashing the tokens of a check text. Here each
//! name r1serve (and llama.cpp) knows is tried instead: the first whose regexes split a set
//! of check texts as tokenizer.json's pre-tokenizer does, else the first that gives the same
//! tokens with this vocabulary. Where the converter's hash names a synonym (SmolLM's
//! vocabulary under `gpt-2` splitting is `smollm` to it), the tokens are the same.

use std::path::Path;
use std::str::FromStr;

use r1_model::gguf::{GgufArray, GgufValue};
use serde_json::Value;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

use super::{pre::PreSpec, TokenizerError};

/// llama.cpp's token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Tried in this order: the DeepSeek-R1 family's own first.
const CANDIDATES: [&str; 8] = [
    "deepseek-v3",
    "qwen2",
    "llama-bpe",
    "smollm",
    "deepseek-llm",
    "deepseek-coder",
    "gpt-2",
    "default",
];

/// Text that tells the pre-tokenizers apart: digits runs, contractions, CJK, punctuation
/// runs, whitespace kinds (the spirit of the converter's `chktxt`).
const CHECK: [&str; 7] = [
    "Hello, World! I'M here; it's 12345 o'clock.\r\n\r\n  x",
    "你好，世界！日本語のカタカナ、ひらがな。한국어 123４５６",
    "def f(x):\n\treturn [x*2 for x in range(10)]  # done\n\n\n",
    "$$\\frac{a}{b}$$ -- 'quoted' \"double\" `tick` ~tilde~ #hash @at 3.14159 1,000,000",
    "émigré naïve Ελληνικά Русский عربى हिन्दी 👍🏽👨‍👩‍👧",
    "   leading\t\ttabs and trailing   ",
    "ABCdef ghiJKL 'S 'T 'RE 've 'll x'd 7777777 🚀 ..., ?!?",
];

fn read(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        origin: path.display().to_string(),
        source,
    })
}

fn invalid(path: &Path, msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        origin: path.display().to_string(),
        msg: msg.into(),
    }
}

fn splits(p: &impl PreTokenizer, s: &str) -> Option<Vec<(String, (usize, usize))>> {
    let mut pre = PreTokenizedString::from(s);
    p.pre_tokenize(&mut pre).ok()?;
    Some(
        pre.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, o, _)| (s.to_string(), o))
            .collect(),
    )
}

/// The `tokenizer.ggml.pre` name for tokenizer.json's pre-tokenizer: the first candidate
/// whose regexes split the check texts exactly as it does; failing that, the first with
/// which this vocabulary gives the same tokens (the converter's own test, on token ids: two
/// regexes that split digits differently agree when the vocabulary has single digits only).
fn detect_pre(inner: &tokenizers::Tokenizer) -> Option<&'static str> {
    let ours = |name: &str| PreSpec::lookup(name).and_then(|s| s.build().ok());
    if let Some(hf) = inner.get_pre_tokenizer() {
        let want: Vec<_> = CHECK.iter().map(|t| splits(hf, t)).collect();
        let exact = CANDIDATES.into_iter().find(|name| {
            ours(name).is_some_and(|p| {
                CHECK
                    .iter()
                    .zip(&want)
                    .all(|(t, w)| w.is_some() && splits(&p, t) == *w)
            })
        });
        if exact.is_some() {
            return exact;
        }
    }
    let ids =
        |t: &tokenizers::Tokenizer, s: &str| t.encode(s, false).ok().map(|e| e.get_ids().to_vec());
    let want: Vec<_> = CHECK.iter().map(|s| ids(inner, s)).collect();
    if want.iter().any(Option::is_none) {
        return None;
    }
    CANDIDATES.into_iter().find(|name| {
        let Some(pre) = ours(name) else {
            return false;
        };
        let mut t = inner.clone();
        t.with_pre_tokenizer(Some(pre));
        CHECK.iter().zip(&want).all(|(s, w)| ids(&t, s) == *w)
    })
}

/// What the converter treats as special even when tokenizer.json does not say so.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<start_of_") && t.ends_with('>'))
        || (t.starts_with("<end_of_") && t.ends_with('>'))
}

/// A special token in tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> Option<&str> {
    match v? {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content")?.as_str(),
        _ => None,
    }
}

/// A GGUF array of strings (element type 8).
fn strings(v: Vec<String>) -> GgufValue {
    GgufValue::Array(GgufArray {
        elem_type: 8,
        values: v.into_iter().map(GgufValue::String).collect(),
    })
}

/// The tokenizer keys for the model in `dir`, whose embedding has `vocab_size` rows
/// (`config.json`'s `vocab_size`; ids past the tokenizer's become `[PADn]`, as there).
pub fn gguf_tokenizer_metadata(
    dir: &Path,
    vocab_size: usize,
) -> Result<Vec<(String, GgufValue)>, TokenizerError> {
    let tj = dir.join("tokenizer.json");
    let text = read(&tj)?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| invalid(&tj, format!("not valid JSON: {e}")))?;
    let model_ty = json
        .pointer("/model/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    if model_ty != "BPE" {
        return Err(invalid(
            &tj,
            format!(
                "model.type `{model_ty}`: only byte-level BPE tokenizers can be written to GGUF"
            ),
        ));
    }
    let inner = tokenizers::Tokenizer::from_str(&text)
        .map_err(|e| invalid(&tj, format!("not a valid tokenizer.json: {e}")))?;
    let pre = detect_pre(&inner).ok_or_else(|| {
        invalid(
            &tj,
            "pre_tokenizer: splits text like none of the pre-tokenizers llama.cpp names \
             (deepseek-v3, qwen2, llama-bpe, smollm, deepseek-llm, deepseek-coder, gpt-2)",
        )
    })?;

    let added = inner.get_added_tokens_decoder();
    let max_id = inner
        .get_vocab(true)
        .values()
        .copied()
        .max()
        .map_or(0, |m| m as usize);
    if max_id >= vocab_size {
        return Err(invalid(
            &tj,
            format!("token id {max_id} is past config.json's vocab_size {vocab_size}"),
        ));
    }
    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size as u32 {
        match (inner.id_to_token(id), added.get(&id)) {
            (None, _) => {
                tokens.push(format!("[PAD{id}]"));
                types.push(UNUSED);
            }
            (Some(t), Some(a)) => {
                if a.special || looks_special(&t) {
                    types.push(CONTROL);
                    tokens.push(t);
                } else {
                    types.push(USER_DEFINED);
                    tokens.push(t.replace('\u{2581}', " "));
                }
            }
            (Some(t), None) => {
                types.push(NORMAL);
                tokens.push(t);
            }
        }
    }
    let merges: Vec<String> = json
        .pointer("/model/merges")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => {
                        let a = p.first()?.as_str()?;
                        let b = p.get(1)?.as_str()?;
                        Some(format!("{a} {b}"))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();

    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::String(pre.into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(GgufArray {
                elem_type: 5,
                values: types.into_iter().map(GgufValue::I32).collect(),
            }),
        ),
        ("tokenizer.ggml.merges".to_string(), strings(merges)),
    ];

    let tc_path = dir.join("tokenizer_config.json");
    let tc: Value = if tc_path.is_file() {
        serde_json::from_str(&read(&tc_path)?)
            .map_err(|e| invalid(&tc_path, format!("not valid JSON: {e}")))?
    } else {
        Value::Null
    };
    for (field, key) in [
        ("bos_token", "bos_token_id"),
        ("eos_token", "eos_token_id"),
        ("unk_token", "unknown_token_id"),
        ("sep_token", "seperator_token_id"),
        ("pad_token", "padding_token_id"),
    ] {
        if let Some(t) = token_text(tc.get(field)) {
            let id = inner.token_to_id(t).ok_or_else(|| {
                invalid(&tc_path, format!("{field} {t:?} is not in the vocabulary"))
            })?;
            md.push((format!("tokenizer.ggml.{key}"), GgufValue::U32(id)));
        }
    }
    for field in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = tc.get(field).and_then(Value::as_bool) {
            md.push((format!("tokenizer.ggml.{field}"), GgufValue::Bool(b)));
        }
    }
    let jinja = dir.join("chat_template.jinja");
    let template = if jinja.is_file() {
        Some(read(&jinja)?)
    } else {
        match tc.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    };
    if let Some(t) = template {
        md.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    Ok(md)
}
