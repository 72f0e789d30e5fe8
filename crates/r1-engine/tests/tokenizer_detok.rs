//! Streaming detokenization on the real vocabularies: deltas never hold a broken character,
//! and they add up to `decode` of all ids, which itself equals the references' texts (HF
//! transformers' greedy text, llama-server's generated text).

use std::path::Path;
use std::sync::OnceLock;

use r1_engine::detokenizer::{DecodeState, IncrementalDecoder};
use r1_engine::tokenizer::Tokenizer;
use r1_model::gguf::GgufFile;
use r1_model::testdata;
use serde_json::Value;

const MODELS: [&str; 2] = ["smollm2", "qwen05"];

const TEXTS: &[&str] = &[
    "你好，世界",
    "日本語のテキストです。カタカナとひらがな",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷 end",
    "😀😀😀",
    "Ünïcödé àccents façade naïve",
    "mixed 中文 and English, 한국어 and Ελληνικά",
    "def f(x):\n\treturn x  # tab\n",
    "",
];

fn tok(name: &str) -> Option<&'static Tokenizer> {
    static CACHE: [OnceLock<Option<Tokenizer>>; 2] = [OnceLock::new(), OnceLock::new()];
    let i = MODELS.iter().position(|m| *m == name).unwrap();
    CACHE[i]
        .get_or_init(|| {
            let path = testdata::model(&format!("{name}.gguf"))?;
            Some(Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap())
        })
        .as_ref()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Stream `ids` through a decoder; returns the deltas (the last one from `finish`).
fn stream(mut dec: IncrementalDecoder<'_>, ids: &[u32]) -> Vec<String> {
    let mut deltas: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    deltas.push(dec.finish());
    assert!(!dec.has_pending());
    deltas
}

/// Both methods (exact bytes, and the prefix/read-offset window) on `ids`, checked against
/// `want`: no delta carries U+FFFD (for valid text) and the deltas add up to `want`.
fn check_stream(t: &Tokenizer, ids: &[u32], skip_special: bool, want: &str, what: &str) {
    assert_eq!(t.decode(ids, skip_special), want, "{what}: decode");
    let decoders = [
        IncrementalDecoder::with_skip_special(t, skip_special),
        IncrementalDecoder::windowed(t, skip_special),
    ];
    for dec in decoders {
        let deltas = stream(dec, ids);
        if !want.contains('\u{FFFD}') {
            for d in &deltas {
                assert!(
                    !d.contains('\u{FFFD}'),
                    "{what}: broken character in {deltas:?}"
                );
            }
        }
        assert_eq!(deltas.concat(), want, "{what}: {deltas:?}");
    }
}

#[test]
fn deltas_never_split_characters_and_add_up_to_decode() {
    for name in MODELS {
        let Some(t) = tok(name) else {
            return;
        };
        for &text in TEXTS {
            let ids = t.encode(text, false, true).unwrap();
            check_stream(t, &ids, true, text, &format!("{name} {text:?}"));
        }
        // SmolLM2 spreads each Chinese character over several byte tokens.
        if name == "smollm2" {
            let ids = t.encode("你好，世界", false, false).unwrap();
            assert_eq!(ids.len(), 10);
            // 你 = E4 BD A0 is split E4 BD | A0, 好 = E5 A5 BD is split E5 A5 | BD, ，is whole.
            let mut dec = IncrementalDecoder::new(t);
            assert_eq!(dec.push(ids[0]), "", "two bytes of 你 wait");
            assert!(dec.has_pending());
            assert_eq!(dec.push(ids[1]), "你");
            assert_eq!(dec.push(ids[2]), "");
            assert_eq!(dec.push(ids[3]), "好");
            assert_eq!(dec.push(ids[4]), "，");
            assert!(!dec.has_pending());
        }
    }
}

#[test]
fn streams_reproduce_hf_greedy_texts() {
    for name in MODELS {
        let (Some(t), Some(path)) = (
            tok(name),
            testdata::fixture(&format!("{name}-hf-reference.json")),
        ) else {
            return;
        };
        for p in json(&path)["prompts"].as_array().unwrap() {
            let g = &p["greedy"];
            let text = g["text"].as_str().unwrap();
            check_stream(
                t,
                &ids(&g["token_ids"]),
                false,
                text,
                &format!("{name} greedy"),
            );
            let prompt = p["text"].as_str().unwrap();
            check_stream(
                t,
                &ids(&p["input_ids"]),
                true,
                prompt,
                &format!("{name} prompt"),
            );
        }
    }
}

#[test]
fn streams_reproduce_llama_server_generations() {
    for name in MODELS {
        let (Some(t), Some(path)) = (
            tok(name),
            testdata::fixture(&format!("llamacpp/{name}.json")),
        ) else {
            return;
        };
        for r in json(&path)["results"].as_array().unwrap() {
            let text = r["generated_text"].as_str().unwrap();
            let gen = ids(&r["generated_token_ids"]);
            check_stream(t, &gen, true, text, &format!("{name} llama-server"));
        }
    }
}

#[test]
fn invalid_utf8_becomes_replacement_characters_like_decode() {
    let Some(t) = tok("smollm2") else {
        return;
    };
    // Byte-level tokens standing for single bytes: a lone continuation byte, a lead byte cut
    // short by ASCII, and a lead byte left hanging at the end.
    let byte = |b: u8| {
        (0..t.vocab_size() as u32)
            .find(|&i| t.token_bytes(i).as_deref() == Some(&[b][..]))
            .unwrap()
    };
    let a = t.encode("A", false, false).unwrap()[0];
    let ids = [a, byte(0x80), a, byte(0xE4), a, byte(0xE4)];
    let want = "A\u{FFFD}A\u{FFFD}A\u{FFFD}";
    check_stream(t, &ids, true, want, "invalid bytes");
}

#[test]
fn special_tokens_are_skipped_unless_asked_for() {
    let Some(t) = tok("qwen05") else {
        return;
    };
    let ids = t
        .encode("<|im_start|>assistant\n你好<|im_end|>", false, true)
        .unwrap();
    check_stream(t, &ids, true, "assistant\n你好", "skip");
    check_stream(
        t,
        &ids,
        false,
        "<|im_start|>assistant\n你好<|im_end|>",
        "keep",
    );
    // The detached state does the same with the tokenizer passed per call.
    let mut state = DecodeState::new(t, true);
    let mut out: String = ids.iter().map(|&id| state.push(t, id)).collect();
    out.push_str(&state.finish(t));
    assert_eq!(out, "assistant\n你好");
}
