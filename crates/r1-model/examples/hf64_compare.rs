//! Teacher-forced comparison of deepseek2 GGUFs with float64 references, one line per file:
//!
//! ```text
//! cargo run --release -p r1-model --example hf64_compare -- [--threads N] FILE.gguf=REF.json ...
//! ```
//!
//! Prints `hf64 FILE median=… p90=… greedy=A/B clean_max=…` (d: the largest |Δlogprob| over
//! the reference's top-2 tokens per step; clean_max: the largest d before the first routing
//! near-tie). Used by `scripts/deepseek-gguf-vs-llamacpp.sh`; the bounds are the test's
//! (`tests/deepseek_hf64.rs`). A file that fails to load prints `hf64 FILE error=…`.

#[path = "../tests/hf64_support/mod.rs"]
mod hf64_support;

use std::path::Path;

use hf64_support::*;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2;
    if args.first().map(String::as_str) == Some("--threads") {
        threads = args.get(1).and_then(|t| t.parse().ok()).unwrap_or_else(|| {
            eprintln!("hf64_compare: --threads needs a number");
            std::process::exit(2)
        });
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: hf64_compare [--threads N] FILE.gguf=REF.json ...");
        std::process::exit(2);
    }
    for pair in args {
        let Some((file, reference)) = pair.split_once('=') else {
            eprintln!("hf64_compare: `{pair}` is not FILE.gguf=REF.json");
            std::process::exit(2);
        };
        let r = load_reference(Path::new(reference));
        // Loading errors are reported per file (a type r1serve cannot open yet is a row of
        // the table, not the end of it).
        let res = std::panic::catch_unwind(|| run_file(Path::new(file), &r, threads));
        match res {
            Ok((s, prompts)) => {
                let clean_max = prompts
                    .iter()
                    .flat_map(|p| p.d[..p.clean_steps].iter().copied())
                    .fold(0.0, f64::max);
                println!(
                    "hf64 {file} median={:.3e} p90={:.3e} greedy={}/{} clean_max={clean_max:.3e}",
                    s.median, s.p90, s.greedy_agree, s.steps
                );
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("hf64 {file} error={}", msg.replace('\n', " "));
            }
        }
    }
}
