//! deepseek2 GGUFs made by llama.cpp's own tools against exact float64 references.
//!
//! `$R1SERVE_FIXTURES/deepseek2-gguf/hf64-small1-<TYPE>.json` hold HF transformers run in
//! float64 on the dequantized weights of `small1-<TYPE>.gguf` (see that folder's README):
//! greedy ids, the top-10 logprobs per step, and per MoE layer and position the chosen
//! experts and the routing gap. Each file is run teacher-forced along the reference's greedy
//! tokens in one prefill, and every step is compared with the reference.
//!
//! * f16 (in the fixtures, always run): r1serve computes in f32 on f16 weights with f32
//!   activations, so it must agree to 1e-3 nats at every step before the first routing
//!   near-tie (reference gap < 1e-3), pick the same greedy token there, and choose the same
//!   experts up to that position; the bound also holds past a near-tie for as long as the
//!   chosen experts stay the reference's.
//! * Quantized types (activations rounded to Q8 blocks as in ggml, so no per-step bound
//!   holds; the random MoE amplifies the rounding): median d ≤ 0.25 and p90 d ≤ 1.5 over all
//!   steps, where d is the largest |Δlogprob| over the reference's top-2 tokens. A missing
//!   routed scaling factor alone gives a median of about 1.6. These files are made by
//!   llama-quantize (`scripts/deepseek-gguf-vs-llamacpp.sh` makes them); the test looks for
//!   them in `$R1SERVE_DS_GGUF_DIR` and uses one only when its sha256 is the one the
//!   reference was made from.
//!
//! The comparison itself is in `hf64_support/` (shared with `examples/hf64_compare.rs`).

mod hf64_support;

use std::path::PathBuf;

use hf64_support::*;

fn fixtures() -> Option<PathBuf> {
    r1_model::testdata::fixture("deepseek2-gguf/hf64-small1-f16.json")
        .map(|p| p.parent().unwrap().to_path_buf())
}

#[test]
fn f16_file_equals_the_float64_reference_before_routing_near_ties() {
    let Some(dir) = fixtures() else { return };
    let r = load_reference(&dir.join("hf64-small1-f16.json"));
    let path = dir.join(&r.name);
    assert_eq!(sha256_file(&path), r.sha256, "{} changed", path.display());
    let (summary, results) = run_file(&path, &r, 2);
    let mut checked = 0;
    for (i, (res, p)) in results.iter().zip(&r.prompts).enumerate() {
        eprintln!(
            "f16 prompt {i}: {} clean steps (first near-tie at position {:?}), {} with the \
             reference's experts (first difference {:?}), max d there {:.2e}",
            res.clean_steps,
            res.first_tie,
            res.same_route_steps,
            res.first_routing_diff,
            res.d[..res.same_route_steps]
                .iter()
                .copied()
                .fold(0.0, f64::max),
        );
        if let Some((layer, pos)) = res.first_routing_diff {
            let tie = res.first_tie.unwrap_or(usize::MAX);
            assert!(
                pos >= tie,
                "prompt {i}: layer {layer} chose other experts at position {pos}, before the \
                 first near-tie ({tie})"
            );
        }
        // Past a near-tie the engines may legitimately route differently; until they do,
        // they compute the same function and the bound holds.
        for s in 0..res.same_route_steps {
            assert!(
                res.d[s] <= F16_TOL,
                "prompt {i} step {s}: |Δlogprob| {:.3e} > {F16_TOL}",
                res.d[s]
            );
            // A greedy pick is only defined where the reference's top-2 are apart.
            if p.top[s].1 > 10.0 * F16_TOL {
                assert!(
                    res.greedy_ok[s],
                    "prompt {i} step {s}: greedy token differs"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} steps with the reference's routing"
    );
    // Past the near-ties a flip may move the logits, but the bulk must stay exact.
    assert!(summary.median <= F16_TOL, "median d {}", summary.median);
}

/// Every quantized file in `$R1SERVE_DS_GGUF_DIR` that a reference was made from.
#[test]
fn quantized_files_stay_within_the_quantile_bounds() {
    let Some(dir) = fixtures() else { return };
    let Some(qdir) = std::env::var_os("R1SERVE_DS_GGUF_DIR").map(PathBuf::from) else {
        eprintln!(
            "SKIP: R1SERVE_DS_GGUF_DIR is not set; scripts/deepseek-gguf-vs-llamacpp.sh makes \
             the quantized small1 files with llama-quantize and runs this test on them"
        );
        return;
    };
    let mut refs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("hf64-small1-") && !n.ends_with("-f16.json")
        })
        .collect();
    refs.sort();
    let mut failures = Vec::new();
    let mut ran = 0;
    for rp in refs {
        let r = load_reference(&rp);
        let path = qdir.join(&r.name);
        if !path.is_file() {
            eprintln!("SKIP {}: {} not made", r.name, path.display());
            continue;
        }
        let sha = sha256_file(&path);
        if sha != r.sha256 {
            eprintln!(
                "SKIP {}: sha256 {sha} is not the reference's {} (another imatrix or commit)",
                r.name, r.sha256
            );
            continue;
        }
        let (s, _) = run_file(&path, &r, 2);
        ran += 1;
        eprintln!(
            "{}: median d {:.4}, p90 {:.4}, greedy {}/{}",
            r.name, s.median, s.p90, s.greedy_agree, s.steps
        );
        if s.median > Q_MEDIAN || s.p90 > Q_P90 {
            failures.push(format!(
                "{}: median {:.4} p90 {:.4}",
                r.name, s.median, s.p90
            ));
        }
    }
    eprintln!("{ran} quantized files checked");
    assert!(failures.is_empty(), "over the bounds: {failures:?}");
}
