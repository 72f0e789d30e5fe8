//! Block dequantization and the dot kernels against gguf-py's dequantization of real GGUF
//! tensors (`gguf-dequant-samples.*` in the shared fixtures): the first 4 rows exactly, and
//! whole-tensor sum / abs-sum.

use std::collections::BTreeMap;

use r1_model::gguf::GgufFile;
use r1_model::quant::{self, GgmlType, Isa};
use r1_model::testdata;
use safetensors::SafeTensors;

struct Sample {
    key: String,
    file: String,
    tensor: String,
    ty: String,
    ne: Vec<u64>,
    sum: f64,
    abs_sum: f64,
    rows: Vec<f32>,
}

fn load_samples() -> Option<Vec<Sample>> {
    let st_path = testdata::fixture("gguf-dequant-samples.safetensors")?;
    let js_path = testdata::fixture("gguf-dequant-samples.json")?;
    let js: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(js_path).unwrap()).unwrap();
    let bytes = std::fs::read(st_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(js["tensors"].clone()).unwrap();
    let mut out = Vec::new();
    for (key, meta) in tensors {
        let view = st.tensor(&key).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{key}");
        let rows: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        out.push(Sample {
            key,
            file: meta["gguf_file"].as_str().unwrap().to_string(),
            tensor: meta["tensor"].as_str().unwrap().to_string(),
            ty: meta["ggml_type"].as_str().unwrap().to_string(),
            ne: meta["gguf_ne"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect(),
            sum: meta["full_tensor_sum"].as_f64().unwrap(),
            abs_sum: meta["full_tensor_abs_sum"].as_f64().unwrap(),
            rows,
        });
    }
    Some(out)
}

fn open_models() -> Option<BTreeMap<String, GgufFile>> {
    let mut m = BTreeMap::new();
    for name in ["smollm2.gguf", "qwen05.gguf"] {
        let p = testdata::model(name)?;
        m.insert(name.to_string(), GgufFile::open(p).unwrap());
    }
    Some(m)
}

#[test]
fn dequant_matches_gguf_py_first_rows_and_sums() {
    let Some(samples) = load_samples() else {
        return;
    };
    let Some(models) = open_models() else { return };
    let mut types_seen = Vec::new();
    for s in &samples {
        let f = &models[&s.file];
        let info = f.tensor(&s.tensor).unwrap();
        assert_eq!(info.ty.name(), s.ty, "{}", s.key);
        assert_eq!(info.dims, s.ne, "{}", s.key);
        types_seen.push(info.ty);
        let data = f.tensor_data(info);
        let k = info.row_len();
        let rb = quant::row_bytes(info.ty, k).unwrap();
        assert_eq!(data.len(), rb * info.n_rows(), "{}", s.key);

        // first 4 rows: bit-exact (allow 1e-6 relative, in case of a different f32 op order)
        let mut first = vec![0f32; 4 * k];
        quant::dequantize(info.ty, &data[..4 * rb], &mut first).unwrap();
        assert_eq!(s.rows.len(), first.len());
        let mut exact = 0;
        for (i, (&got, &want)) in first.iter().zip(&s.rows).enumerate() {
            if got.to_bits() == want.to_bits() {
                exact += 1;
                continue;
            }
            let tol = 1e-6 * want.abs().max(1e-30);
            assert!(
                (got - want).abs() <= tol,
                "{}: element {i} (row {}, col {}): got {got}, gguf-py {want}",
                s.key,
                i / k,
                i % k
            );
        }
        eprintln!("{}: {exact}/{} elements bit-exact", s.key, first.len());

        // whole tensor, dequantized in chunks of rows
        let (mut sum, mut abs_sum) = (0f64, 0f64);
        let mut buf = vec![0f32; 64 * k];
        for chunk in data.chunks(64 * rb) {
            let rows = chunk.len() / rb;
            let out = &mut buf[..rows * k];
            quant::dequantize(info.ty, chunk, out).unwrap();
            for &v in out.iter() {
                sum += v as f64;
                abs_sum += (v as f64).abs();
            }
        }
        let tol = 1e-9 * s.abs_sum;
        assert!(
            (sum - s.sum).abs() <= tol,
            "{}: sum {sum} vs {}",
            s.key,
            s.sum
        );
        assert!(
            (abs_sum - s.abs_sum).abs() <= tol,
            "{}: abs sum {abs_sum} vs {}",
            s.key,
            s.abs_sum
        );
    }
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q6_K,
        GgmlType::Q4_K,
    ] {
        assert!(types_seen.contains(&ty), "fixture lacks {ty}");
    }
}

fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Tiny deterministic generator (no dependency on a particular rand API).
fn lcg_vals(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The kernels on real weights: rows 0..4 of each sample tensor against 3 quantized
/// activation rows, compared with an f64 dot of gguf-py's rows and the dequantized
/// activations, on every ISA this CPU has (and bit-identical across them).
#[test]
fn kernels_on_real_weights_match_gguf_py_rows() {
    let Some(samples) = load_samples() else {
        return;
    };
    let Some(models) = open_models() else { return };
    for s in &samples {
        let f = &models[&s.file];
        let info = f.tensor(&s.tensor).unwrap();
        let k = info.row_len();
        let rb = quant::row_bytes(info.ty, k).unwrap();
        let w = &f.tensor_data(info)[..4 * rb];
        let a_ty = quant::vec_dot_type(info.ty);
        let ab = quant::row_bytes(a_ty, k).unwrap();
        let n = 3;
        let x = lcg_vals(7, n * k);
        let mut a = vec![0u8; n * ab];
        quant::quantize_row(a_ty, &x, &mut a).unwrap();
        let mut adq = vec![0f32; n * k];
        quant::dequantize(a_ty, &a, &mut adq).unwrap();

        let mut results = Vec::new();
        for isa in Isa::available() {
            let mut out = vec![0f32; 4 * n];
            quant::try_gemm_isa(isa, info.ty, k, w, &a, n, &mut out).unwrap();
            results.push((isa, out));
        }
        let (_, base) = &results[0];
        for (isa, out) in &results[1..] {
            for (i, (x, y)) in out.iter().zip(base).enumerate() {
                assert_eq!(
                    x.to_bits(),
                    y.to_bits(),
                    "{} {isa:?} vs scalar at {i}",
                    s.key
                );
            }
        }
        for r in 0..4 {
            for t in 0..n {
                let wr = &s.rows[r * k..(r + 1) * k];
                let ar = &adq[t * k..(t + 1) * k];
                let exact: f64 = wr.iter().zip(ar).map(|(&p, &q)| p as f64 * q as f64).sum();
                let mag: f64 = wr
                    .iter()
                    .zip(ar)
                    .map(|(&p, &q)| (p as f64 * q as f64).abs())
                    .sum();
                // Q8_1: s = f16(d_f32 * sum q) is off the dequantized sum by up to 2^-10 for the
                // min-offset types, whose kernels use m * s.
                let mut tol = 1e-5 * mag;
                if a_ty == GgmlType::Q8_1 {
                    let wrow = &w[r * rb..(r + 1) * rb];
                    let arow = &a[t * ab..(t + 1) * ab];
                    for (wb, yb) in wrow.chunks_exact(20).zip(arow.chunks_exact(36)) {
                        tol += (f16_at(wb, 2) * f16_at(yb, 2)).abs() as f64 * 1.0e-3;
                    }
                }
                let got = base[r * n + t] as f64;
                assert!(
                    (got - exact).abs() <= tol,
                    "{}: row {r} token {t}: kernel {got} vs reference {exact} (tol {tol})",
                    s.key
                );
            }
        }
    }
}
