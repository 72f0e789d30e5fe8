//! Constrained decoding: what a request may ask the output to be (a JSON schema, a regex, one
//! of a list of strings, a Lark grammar), compiled once per request against the model's
//! vocabulary and enforced token by token by the engine, which masks the logits of every
//! token the grammar cannot accept next.
//!
//! This file is the interface between the HTTP side and the engine: r1-server turns
//! `response_format`, `guided_*` and forced tool calls into a [`ConstraintSpec`], compiles it
//! with the model's [`ConstraintCompiler`] (a schema it cannot enforce is a 400 naming the
//! keyword, never a silent free decode), and puts the [`Constraint`] into the
//! `GenerateRequest`. The engine makes one matcher per sequence from it.

use std::sync::Arc;

use crate::tokenizer::Tokenizer;

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
    _vocab_size: usize,
}

impl ConstraintCompiler {
    pub fn new(tokenizer: &Tokenizer) -> Result<Self, ConstraintError> {
        Ok(ConstraintCompiler {
            _vocab_size: tokenizer.vocab_size(),
        })
    }

    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, ConstraintError> {
        let _ = spec;
        Err(ConstraintError::Unsupported(
            "constrained decoding is not built into this binary yet".into(),
        ))
    }
}

/// A compiled constraint: cheap to clone; the engine makes one matcher per sequence from it.
#[derive(Clone)]
pub struct Constraint {
    _inner: Arc<()>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint").finish_non_exhaustive()
    }
}
