//! Request JSON → typed request → field validation, as the HTTP handlers run it before any
//! model work: arbitrary bodies must give a request or an OpenAI-style 4xx, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use r1_server::error::parse_json;
use r1_server::generation::sampling_params;
use r1_server::openai_types::{ChatCompletionRequest, CompletionRequest};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the endpoint so one corpus covers both.
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let common = if which & 1 == 0 {
        match parse_json::<ChatCompletionRequest>(body) {
            Ok(r) => r.common(),
            Err(e) => {
                assert!(e.status.is_client_error());
                let _ = e.body_json();
                return;
            }
        }
    } else {
        match parse_json::<CompletionRequest>(body) {
            Ok(r) => r.common(),
            Err(e) => {
                assert!(e.status.is_client_error());
                let _ = e.body_json();
                return;
            }
        }
    };
    if let Err(e) = sampling_params(&common, 49152) {
        assert!(e.status.is_client_error());
    }
});
