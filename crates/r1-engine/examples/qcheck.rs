use r1_model::gguf::GgufFile;
use r1_model::quant::{self, GgmlType};
fn rd(p: &str) -> Vec<f32> {
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}
fn main() {
    let f = GgufFile::open("models/smollm2.gguf").unwrap();
    let info = f.tensor("blk.0.attn_v.weight").unwrap();
    let w = f.tensor_data(info);
    let x = rd("/tmp/r1dump/attn_norm-0.bin");
    let want = rd("/tmp/lldump/Vcur-0.MUL_MAT.bin");
    let k = 576;
    let rows = 192;
    let rb = GgmlType::Q4_1.row_bytes(k).unwrap();
    for variant in 0..3 {
        let mut maxd = 0f32;
        let mut nd = 0;
        for t in 0..6 {
            let xr = &x[t * k..(t + 1) * k];
            let mut a = vec![0u8; GgmlType::Q8_1.row_bytes(k).unwrap()];
            quant::quantize_row(GgmlType::Q8_1, xr, &mut a).unwrap();
            if variant >= 1 {
                // x86 ggml: id = 127/max, round half to even
                for (b, xb) in a.chunks_exact_mut(36).zip(xr.chunks_exact(32)) {
                    let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let d = amax / 127.0;
                    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                    let mut sum = 0i32;
                    for (j, &v) in xb.iter().enumerate() {
                        let q = if variant == 1 {
                            (v * id).round_ties_even()
                        } else {
                            (v * id).round()
                        } as i32;
                        b[4 + j] = q as i8 as u8;
                        sum += q;
                    }
                    b[0..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                    b[2..4].copy_from_slice(
                        &half::f16::from_f32(sum as f32 * d).to_bits().to_le_bytes(),
                    );
                }
            }
            for r in 0..rows {
                let o = quant::vec_dot(GgmlType::Q4_1, k, &w[r * rb..(r + 1) * rb], &a);
                let d = (o - want[t * rows + r]).abs();
                if d > 1e-6 {
                    nd += 1;
                }
                maxd = maxd.max(d);
            }
        }
        println!(
            "variant {variant}: maxdiff {maxd:e}, {nd} of {} differ > 1e-6",
            6 * rows
        );
    }
}
