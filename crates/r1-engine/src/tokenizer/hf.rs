//! Loading a Hugging Face tokenizer: `tokenizer.json` plus `tokenizer_config.json` (special
//! tokens, `add_bos_token`, the chat template) and, as transformers 5 saves it, a separate
//! `chat_template.jinja`.

use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::DecoderWrapper;

use super::{pre, SpecialPolicy, Tokenizer, TokenizerError};

fn read(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        origin: path.display().to_string(),
        source,
    })
}

/// A special token in tokenizer_config.json: a string, or `{"content": ...}` (AddedToken form).
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of `{name, template}` (the "default" one is used).
fn template_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |want: Option<&str>| {
                list.iter().find_map(|t| {
                    let name = t.get("name").and_then(Value::as_str);
                    if want.is_none() || name == want {
                        t.get("template")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    } else {
                        None
                    }
                })
            };
            named(Some("default")).or_else(|| named(None))
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Load `tokenizer.json` and, if given, `tokenizer_config.json`, which supplies the BOS/EOS
    /// tokens, `add_bos_token`/`add_eos_token` and the chat template. When the config has no
    /// template, a `chat_template.jinja` next to it (or next to tokenizer.json) is used.
    /// Without `add_bos_token`/`add_eos_token`, BOS/EOS come from tokenizer.json's
    /// post-processor.
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let origin = tokenizer_json.display().to_string();
        let inner = tokenizers::Tokenizer::from_str(&read(tokenizer_json)?).map_err(|e| {
            TokenizerError::Invalid {
                origin: origin.clone(),
                msg: format!("not a valid tokenizer.json: {e}"),
            }
        })?;
        let config = match tokenizer_config_json {
            Some(p) => {
                serde_json::from_str::<Value>(&read(p)?).map_err(|e| TokenizerError::Invalid {
                    origin: p.display().to_string(),
                    msg: format!("not valid JSON: {e}"),
                })?
            }
            None => Value::Null,
        };
        let config_origin = tokenizer_config_json
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| origin.clone());

        let added = inner.get_added_tokens_decoder();
        let vocab = inner.get_vocab(true);
        let n = vocab
            .values()
            .chain(added.keys())
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1);
        let mut special = vec![false; n];
        let mut special_texts = Vec::new();
        for (&id, tok) in &added {
            if tok.special {
                special[id as usize] = true;
                special_texts.push(tok.content.clone());
            }
        }

        let pieces = matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_))).then(|| {
            let table = pre::byte_level_table();
            (0..n as u32)
                .map(|id| {
                    inner
                        .id_to_token(id)
                        .map(|t| pre::piece_bytes(&table, &t))
                        .unwrap_or_default()
                        .into_boxed_slice()
                })
                .collect()
        });

        let lookup = |key: &str| -> Result<Option<u32>, TokenizerError> {
            match token_text(config.get(key)) {
                None => Ok(None),
                Some(t) => inner
                    .token_to_id(&t)
                    .map(Some)
                    .ok_or_else(|| TokenizerError::Invalid {
                        origin: config_origin.clone(),
                        msg: format!("{key} {t:?} is not in the vocabulary of {origin}"),
                    }),
            }
        };
        let bos = lookup("bos_token")?;
        let eos = lookup("eos_token")?;
        let add_bos = config.get("add_bos_token").and_then(Value::as_bool);
        let add_eos = config.get("add_eos_token").and_then(Value::as_bool);
        let policy = if add_bos.is_some() || add_eos.is_some() {
            let add_bos = add_bos.unwrap_or(false);
            let add_eos = add_eos.unwrap_or(false);
            if (add_bos && bos.is_none()) || (add_eos && eos.is_none()) {
                return Err(TokenizerError::Invalid {
                    origin: config_origin,
                    msg: "add_bos_token/add_eos_token is set but the token is not".into(),
                });
            }
            SpecialPolicy::Manual { add_bos, add_eos }
        } else {
            SpecialPolicy::PostProcessor
        };

        let mut chat_template = template_text(config.get("chat_template"));
        if chat_template.is_none() {
            let dirs = tokenizer_config_json
                .and_then(Path::parent)
                .into_iter()
                .chain(tokenizer_json.parent());
            for dir in dirs {
                let p = dir.join("chat_template.jinja");
                if p.is_file() {
                    chat_template = Some(read(&p)?);
                    break;
                }
            }
        }

        let mut tok = Tokenizer {
            inner,
            plain: OnceLock::new(),
            special_texts,
            pieces,
            special,
            bos,
            eos,
            policy,
            stops: Vec::new(),
            chat_template,
            vocab_size: n,
        };
        tok.stops = tok.find_stops(Vec::new());
        Ok(tok)
    }

    /// Load a model directory: `tokenizer.json`, plus `tokenizer_config.json` when present.
    pub fn from_hf_dir(dir: &Path) -> Result<Self, TokenizerError> {
        let config = dir.join("tokenizer_config.json");
        let config = config.is_file().then_some(config);
        Self::from_hf_files(&dir.join("tokenizer.json"), config.as_deref())
    }
}
