//! Pre-tokenizers per `tokenizer.ggml.pre`, as llama.cpp defines them (`llm_tokenizer_bpe` in
//! `src/llama-vocab.cpp`). llama.cpp applies its regex list in order: every regex splits each
//! piece left by the previous one into matches and the gaps between them, all kept. That is a
//! `Sequence` of HF `Split(regex, Isolated)` pre-tokenizers followed by a byte-level mapping
//! without its own regex, which is also what HF's tokenizer.json files for these models hold.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's split, llama.cpp's `LLAMA_VOCAB_PRE_TYPE_GPT2`.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3 (`llama-bpe`): digits in groups of up to three. llama.cpp spells the
/// case-insensitive contractions out instead of `(?i:...)`; the two are equivalent.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 (also `deepseek-r1-qwen`): like Llama 3 but single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek-V3 / R1 (`deepseek-v3`): three regexes. The CJK class is
/// `[一-龥぀-ゟ゠-ヿ]` written as code points.
const DEEPSEEK3: &[&str] = &[
    r"\p{N}{1,3}",
    r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+",
    r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
];

/// The cased-letter class of DeepSeek LLM's tokenizer (`deepseek-llm`), as code points. Some of
/// its characters (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) change under Unicode
/// normalisation, which is why the class is not written with literal characters.
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[\x{41}-\x{5A}\x{61}-\x{7A}\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";

/// `[一-龥ࠀ-一가-퟿]+` of DeepSeek LLM / Coder, as code points.
const DEEPSEEK_CJK: &str = r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+";

const DEEPSEEK_LLM: &[&str] = &[
    r"[\r\n]",
    DEEPSEEK_LLM_LETTERS,
    r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
    r"\s+$",
    DEEPSEEK_CJK,
    r"\p{N}+",
];

const DEEPSEEK_CODER: &[&str] = &[
    r"[\r\n]",
    r"\s?\p{L}+",
    r"\s?\p{P}+",
    DEEPSEEK_CJK,
    r"\p{N}",
];

/// What llama.cpp uses when `tokenizer.ggml.pre` is missing or `default`.
const DEFAULT: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];

/// A pre-tokenizer family: its regexes and the flags llama.cpp sets with it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PreSpec {
    pub regexes: &'static [&'static str],
    /// A word that is itself a token is not merged (llama.cpp `ignore_merges`, Llama 3).
    pub ignore_merges: bool,
    /// llama.cpp's `add_bos` default for the family, before `tokenizer.ggml.add_bos_token`.
    pub add_bos: bool,
}

/// The `tokenizer.ggml.pre` names this module understands (for error messages).
pub(crate) const KNOWN: &str = "default, gpt-2, smollm, starcoder, llama-bpe (llama3), \
     qwen2, deepseek-r1-qwen, deepseek-v3, deepseek-llm, deepseek-coder and their llama.cpp aliases";

impl PreSpec {
    pub fn lookup(pre: &str) -> Option<PreSpec> {
        let spec = |regexes, ignore_merges, add_bos| PreSpec {
            regexes,
            ignore_merges,
            add_bos,
        };
        Some(match pre {
            "default" | "" => spec(DEFAULT, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => spec(&[LLAMA3], true, true),
            "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => spec(&[LLAMA3], false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "stablelm2" | "megrez" | "hunyuan" => {
                spec(&[QWEN2], false, false)
            }
            "deepseek-v3" | "hunyuan-dense" | "joyai-llm" => spec(DEEPSEEK3, false, false),
            "deepseek-llm" => spec(DEEPSEEK_LLM, false, false),
            "deepseek-coder" => spec(DEEPSEEK_CODER, false, false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => spec(&[r"\p{N}", GPT2], false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "mpt" | "olmo" | "jais" | "exaone4"
            | "trillion" => spec(&[GPT2], false, false),
            _ => return None,
        })
    }

    /// The HF pre-tokenizer: the regex splits, then the byte-level mapping without a regex.
    pub fn build(&self) -> tokenizers::Result<PreTokenizerWrapper> {
        let mut steps = Vec::with_capacity(self.regexes.len() + 1);
        for re in self.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, true, false,
        )));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}

/// GPT-2's byte-to-unicode table reversed: the byte a byte-level vocabulary character stands
/// for. Printable Latin-1 characters stand for themselves, the other 68 bytes are mapped in
/// order to U+0100..U+0143.
pub(crate) fn byte_level_table() -> [i16; 324] {
    let mut table = [-1i16; 324];
    let mut next = 256usize;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            b as usize
        } else {
            next += 1;
            next - 1
        };
        table[c] = b as i16;
    }
    table
}

/// The bytes a byte-level vocabulary entry stands for. Like HF's `ByteLevel` decoder, an entry
/// with any character outside the table (an added token such as `<｜end▁of▁sentence｜>`, or one
/// with a plain space) stands for its own UTF-8 bytes.
pub(crate) fn piece_bytes(table: &[i16; 324], piece: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(piece.len());
    for c in piece.chars() {
        match table.get(c as usize) {
            Some(&b) if b >= 0 => out.push(b as u8),
            _ => return piece.as_bytes().to_vec(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::PreSpec;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    use tokenizers::{PreTokenizerWrapper, Result};

    /// The pre_tokenizer of deepseek-ai/DeepSeek-V3's tokenizer.json (the file has CR/LF
    /// characters where this JSON has `\r\n` escapes).
    const DEEPSEEK_V3_JSON: &str = r##"{"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
        {"type": "Split", "pattern": {"Regex": "[一-龥぀-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false},
        {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}"##;

    /// Llama 3's (DeepSeek-R1-Distill-Llama's) pre_tokenizer, with the `(?i:...)` that
    /// llama.cpp spells out.
    const LLAMA3_JSON: &str = r##"{"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}"##;

    fn splits(p: &PreTokenizerWrapper, s: &str) -> Result<Vec<(String, (usize, usize))>> {
        let mut pre = PreTokenizedString::from(s);
        p.pre_tokenize(&mut pre)?;
        Ok(pre
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, o, _)| (s.to_string(), o))
            .collect())
    }

    #[test]
    fn llamacpp_regex_lists_split_like_the_original_tokenizer_json() {
        let texts = [
            "Hello, World! I'M here; it's 12345 o'clock.\r\n\r\n  x",
            "你好，世界！日本語のカタカナ、ひらがな。한국어 123４５６",
            "def f(x):\n\treturn [x*2 for x in range(10)]  # done\n\n\n",
            "$$\\frac{a}{b}$$ -- 'quoted' \"double\" `tick` ~tilde~ #hash @at",
            "émigré naïve Ελληνικά Русский عربى हिन्दी 👍🏽👨‍👩‍👧",
            "   leading\t\ttabs and trailing   ",
        ];
        for (pre, json) in [
            ("deepseek-v3", DEEPSEEK_V3_JSON),
            ("llama-bpe", LLAMA3_JSON),
        ] {
            let original: PreTokenizerWrapper = serde_json::from_str(json).unwrap();
            let ours = PreSpec::lookup(pre).unwrap().build().unwrap();
            for t in texts {
                assert_eq!(
                    splits(&ours, t).unwrap(),
                    splits(&original, t).unwrap(),
                    "{pre}: {t:?}"
                );
            }
        }
    }
}
