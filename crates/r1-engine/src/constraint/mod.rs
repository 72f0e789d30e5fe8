//! Constrained decoding: what a request may ask the output to be (a JSON schema, a regex, one
//! of a list of strings, a Lark or GBNF grammar), compiled once per request against the
//! model's vocabulary and enforced token by token by the engine, which masks the logits of
//! every token the grammar cannot accept next.
//!
//! This module is the interface between the HTTP side and the engine: r1-server turns
//! `response_format`, `guided_*` and forced tool calls into a [`ConstraintSpec`], compiles it
//! with the model's [`ConstraintCompiler`] (a schema it cannot enforce is a 400 naming the
//! keyword, never a silent free decode), and puts the [`Constraint`] into the
//! `GenerateRequest`. The engine makes one [`SeqMatcher`] per sequence from it.
//!
//! # Why llguidance, not outlines-core
//!
//! The grammar engine is [llguidance](https://github.com/guidance-ai/llguidance) (a token
//! trie walked against an Earley parser over regex lexemes), the one llama.cpp and mistral.rs
//! use. It is maintained; one engine does Lark grammars, JSON schema and regexes (and a JSON
//! schema inside a Lark grammar, which is what a forced tool call is); a mask takes about
//! 50 µs for a 128k vocabulary; and its work is lazy, per token, over the states actually
//! reached. outlines-core instead precomputes a DFA index of (state, token) pairs up front,
//! which takes seconds and explodes in size for large schemas, and it has no context-free
//! grammars at all.
//!
//! # Grammars and special tokens
//!
//! - [`Grammar::JsonSchema`]: output is compact JSON (`{"a":1,"b":[2,3]}`, as OpenAI returns
//!   it) after at most 16 whitespace characters (R1 writes `"\n\n"` after `</think>`); object
//!   properties come in the schema's order. A keyword llguidance does not enforce
//!   (`uniqueItems`, `not`, `if`, ...) or an unknown `format` is a
//!   [`ConstraintError::Unsupported`] naming it; nothing is enforced "leniently".
//! - [`Grammar::Regex`]: the whole output matches (Rust `regex` syntax).
//! - [`Grammar::Choice`]: exactly one of the strings.
//! - [`Grammar::Lark`]: llguidance's Lark dialect (`start:` rule; `%json {...}` embeds a
//!   JSON schema as a rule; [`json_schema_lark`] writes one with the same compact options as
//!   `JsonSchema`).
//! - [`Grammar::Gbnf`]: llama.cpp's GBNF, converted to Lark (`gbnf.rs`).
//!
//! Control tokens (GGUF token type 3: `<|im_end|>`, `<|endoftext|>`, `<｜end▁of▁sentence｜>`)
//! are named in Lark as bare `<|im_end|>`; a quoted `"<|im_end|>"` means the *text* and never
//! matches the control token. Every other token, user-defined added tokens included (Qwen's
//! `<tool_call>`, DeepSeek's `</think>`, and in the distill GGUFs
//! `<｜tool▁calls▁begin｜>`), is ordinary text: write it as a quoted literal
//! `"<｜tool▁calls▁begin｜>"` (the model may then spell it as the one added token or in
//! pieces), or as `<[ID]>` to allow exactly that token id. [`ConstraintCompiler::lark_token`]
//! writes the right form for a token's text, so grammars need not know which kind it is.
//!
//! The end-of-generation ids (EOS, `<|im_end|>`, ...) are allowed exactly when the grammar
//! accepts; when the grammar can go no further, the sequence ends with `stop` without one.

mod compile;
mod gbnf;
mod matcher;
#[cfg(test)]
mod tests;
mod tok_env;

use std::sync::Arc;
use std::time::{Duration, Instant};

use llguidance::ParserFactory;

use crate::tokenizer::Tokenizer;

pub use compile::{json_schema_lark, lark_literal, JSON_LEADING_WS_MAX};
pub use gbnf::gbnf_to_lark;
pub use matcher::{Commit, SeqMatcher};

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum Grammar {
    /// A JSON schema (`response_format: json_schema`, `guided_json`); `{"type": "object"}`
    /// for `json_object`.
    JsonSchema(serde_json::Value),
    /// A regular expression the whole output matches (`guided_regex`).
    Regex(String),
    /// Exactly one of these strings (`guided_choice`).
    Choice(Vec<String>),
    /// A Lark grammar, in llguidance's dialect (`guided_grammar`; also how forced tool calls
    /// are written: fixed text around `%json{...}` arguments).
    Lark(String),
    /// A GBNF grammar (llama.cpp's format; `guided_grammar` when it is written in GBNF).
    Gbnf(String),
}

/// A constraint as asked for, before compiling.
#[derive(Clone, Debug, PartialEq)]
pub struct ConstraintSpec {
    pub grammar: Grammar,
    /// Leave the output free until this text has been generated, then constrain what
    /// follows it (R1 thinks freely, then answers after `</think>`). `None`: from the first
    /// token.
    pub after: Option<String>,
}

/// Why a constraint could not be compiled. The message names the schema keyword, regex
/// construct or grammar line at fault; r1-server returns it as a 400.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid grammar: {0}")]
    Invalid(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// Compiles specs for one model's vocabulary. Building it indexes the vocabulary (a token
/// trie), so a model loads it once and shares it.
pub struct ConstraintCompiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
    build_time: Duration,
}

impl ConstraintCompiler {
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, ConstraintError> {
        let t0 = Instant::now();
        let env = tok_env::TokEnv::new(tokenizer)?.into_shared();
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Invalid(format!("building the token index: {e}")))?;
        // Errors go to the client; llguidance's own log lines would only be noise on stderr.
        factory.quiet();
        // A client gets the reason, not a dump of the parser state and the whole grammar.
        factory.limits_mut().verbose_errors = false;
        let build_time = t0.elapsed();
        tracing::info!(
            vocab = tokenizer.vocab_size(),
            ms = build_time.as_secs_f64() * 1e3,
            "constrained decoding: token index built"
        );
        Ok(ConstraintCompiler {
            factory: Arc::new(factory),
            vocab_size: tokenizer.vocab_size(),
            build_time,
        })
    }

    /// Compile `spec`: the grammar is parsed and its lexer built here, so every error shows
    /// up now (as a 400), not in the middle of decoding.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        if spec.after.as_deref() == Some("") {
            return Err(ConstraintError::Invalid(
                "`after` must not be empty (leave it out to constrain from the first token)".into(),
            ));
        }
        let grammar = compile::to_llguidance(&spec.grammar)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| compile::classify(&spec.grammar, &e.to_string()))?;
        Ok(Constraint {
            inner: Arc::new(matcher::Compiled::new(
                parser,
                spec.clone(),
                self.factory.tok_env().clone(),
            )),
        })
    }

    /// How long building the token index took (once per model).
    pub fn build_time(&self) -> Duration {
        self.build_time
    }

    /// The number of token ids the masks cover (the tokenizer's vocabulary; logits beyond it,
    /// the padding rows some models have, are always masked).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// How a Lark grammar names the single token whose text is `text`: `<|im_end|>` for a
    /// control token, `<[ID]>` for any other token (exactly that id, e.g. an added tool-call
    /// marker), `None` when no single token has that text.
    pub fn lark_token(&self, text: &str) -> Option<String> {
        let trie = self.factory.tok_env().tok_trie();
        if trie.get_special_token(text).is_some() {
            return Some(text.to_string());
        }
        trie.token_id(text.as_bytes()).map(|id| format!("<[{id}]>"))
    }
}

/// A compiled constraint: cheap to clone; the engine makes one matcher per sequence from it.
#[derive(Clone)]
pub struct Constraint {
    inner: Arc<matcher::Compiled>,
}

impl Constraint {
    /// A fresh matcher for one sequence (each of `n` choices gets its own).
    pub fn matcher(&self) -> SeqMatcher {
        SeqMatcher::new(self.inner.clone())
    }

    /// The spec this was compiled from.
    pub fn spec(&self) -> &ConstraintSpec {
        self.inner.spec()
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("spec", self.inner.spec())
            .finish_non_exhaustive()
    }
}

// The engine thread receives constraints from the HTTP side and moves matchers to the
// thread that computes masks during the forward pass.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_sync::<Constraint>();
    send_sync::<ConstraintCompiler>();
    send::<SeqMatcher>();
};
