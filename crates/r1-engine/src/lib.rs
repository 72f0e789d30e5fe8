//! r1-engine: tokenizer, chat templates, sampling and the generation loop of r1serve.
