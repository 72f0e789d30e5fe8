//! `Qwen2ForCausalLM` / `LlamaForCausalLM` HF directories (the DeepSeek-R1 distills) as an
//! in-memory GGUF with llama.cpp's names and conventions, so the one llama/qwen2
//! implementation serves both formats. What `convert_hf_to_gguf.py` does, in the parts that
//! matter here: tensor renaming, llama q/k rows permuted for adjacent-pair (NORM) rope,
//! `output.weight` only for untied heads, llama3 rope frequency factors as `rope_freqs.weight`.

use super::{HfDir, HfError, WeightDtype};
use crate::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::quant::GgmlType;

/// Reorder the rows of each head from HF's rotate-half layout to adjacent pairs
/// (`convert_hf_to_gguf.py`'s `LlamaModel.permute`): new row `h·d + 2i + j` = old row
/// `h·d + j·d/2 + i`.
fn permute_rows(bytes: &[u8], rows: usize, n_head: usize) -> Vec<u8> {
    let rb = bytes.len() / rows;
    let hd = rows / n_head;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let new = h * hd + 2 * i + j;
                let old = h * hd + j * hd / 2 + i;
                out[new * rb..(new + 1) * rb].copy_from_slice(&bytes[old * rb..(old + 1) * rb]);
            }
        }
    }
    out
}

/// llama 3.1 `rope_scaling` (`rope_type: llama3`) as per-frequency divisors.
fn llama3_factors(dir: &HfDir, head_dim: usize, base: f64) -> Result<Option<Vec<f32>>, HfError> {
    let c = &dir.config;
    let Some(rs) = c.object("rope_scaling")? else {
        return Ok(None);
    };
    let ty = rs
        .opt_str("rope_type")?
        .or(rs.opt_str("type")?)
        .unwrap_or("")
        .to_string();
    match ty.as_str() {
        "llama3" => {}
        "default" | "" => return Ok(None),
        other => {
            return Err(rs.err(
                "rope_type",
                format!("`{other}` is not supported for this architecture"),
            ))
        }
    }
    let factor = rs.f64_or("factor", 8.0)?;
    let low = rs.f64_or("low_freq_factor", 1.0)?;
    let high = rs.f64_or("high_freq_factor", 4.0)?;
    let old = rs.f64_or("original_max_position_embeddings", 8192.0)?;
    let (low_wl, high_wl) = (old / low, old / high);
    let f = (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f64 / head_dim as f64);
            let wl = 2.0 * std::f64::consts::PI / freq;
            if wl < high_wl {
                1.0
            } else if wl > low_wl {
                factor as f32
            } else {
                let smooth = (old / wl - low) / (high - low);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect();
    Ok(Some(f))
}

/// The hyper-parameters and GGUF metadata of a llama/qwen2 directory.
struct Meta {
    arch: &'static str,
    md: Vec<(String, GgufValue)>,
    rope_freqs: Option<Vec<f32>>,
    hidden: usize,
    n_head: usize,
    n_kv: usize,
    head_dim: usize,
    n_layers: usize,
    ffn: usize,
    vocab: usize,
}

fn meta(dir: &HfDir) -> Result<Meta, HfError> {
    let c = &dir.config;
    let arch = match c.architecture()? {
        "Qwen2ForCausalLM" => "qwen2",
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        other => {
            return Err(c.err(
                "architectures",
                format!("`{other}` is not a llama/qwen2 model"),
            ))
        }
    };
    let hidden = c.usize("hidden_size")?;
    let n_head = c.usize("num_attention_heads")?;
    let n_kv = c.usize_or("num_key_value_heads", n_head)?;
    if n_head == 0 || n_kv == 0 || n_head % n_kv != 0 {
        return Err(c.err(
            "num_key_value_heads",
            format!("{n_kv} does not divide {n_head} heads"),
        ));
    }
    let head_dim = c.usize_or("head_dim", hidden / n_head)?;
    let n_layers = c.usize("num_hidden_layers")?;
    let ffn = c.usize("intermediate_size")?;
    let vocab = c.usize("vocab_size")?;
    let base = c.f64_or("rope_theta", 10000.0)?;
    let k = |s: &str| format!("{arch}.{s}");
    let mut md = Vec::new();
    let mut set = |key: String, v: GgufValue| md.push((key, v));
    let name = dir
        .dir()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    set(
        "general.architecture".into(),
        GgufValue::String(arch.into()),
    );
    set("general.name".into(), GgufValue::String(name));
    set(k("block_count"), GgufValue::U32(n_layers as u32));
    set(
        k("context_length"),
        GgufValue::U32(c.usize_or("max_position_embeddings", 4096)? as u32),
    );
    set(k("embedding_length"), GgufValue::U32(hidden as u32));
    set(k("feed_forward_length"), GgufValue::U32(ffn as u32));
    set(k("attention.head_count"), GgufValue::U32(n_head as u32));
    set(k("attention.head_count_kv"), GgufValue::U32(n_kv as u32));
    set(k("attention.key_length"), GgufValue::U32(head_dim as u32));
    set(k("vocab_size"), GgufValue::U32(vocab as u32));
    set(k("rope.freq_base"), GgufValue::F32(base as f32));
    set(
        k("attention.layer_norm_rms_epsilon"),
        GgufValue::F32(c.f64_or("rms_norm_eps", 1e-6)? as f32),
    );
    let rope_freqs = llama3_factors(dir, head_dim, base)?;
    Ok(Meta {
        arch,
        md,
        rope_freqs,
        hidden,
        n_head,
        n_kv,
        head_dim,
        n_layers,
        ffn,
        vocab,
    })
}

/// The same conversion as [`gguf_from_hf`], as a plan to stream (`r1serve quantize`,
/// quantization at load).
pub(super) fn layout(dir: &HfDir) -> Result<super::GgufLayout, HfError> {
    use super::gguf_layout::{llama_tensor, values_tensor};
    let m = meta(dir)?;
    let mut t = Vec::new();
    if let Some(f) = m.rope_freqs.clone() {
        t.push(values_tensor("rope_freqs.weight", f));
    }
    let (hidden, vocab, ffn) = (m.hidden, m.vocab, m.ffn);
    t.push(llama_tensor(
        dir,
        "model.embed_tokens.weight",
        "token_embd.weight",
        &[vocab, hidden],
        None,
        false,
    )?);
    let tied = dir.config.bool_or("tie_word_embeddings", false)? || !dir.has("lm_head.weight");
    if !tied {
        t.push(llama_tensor(
            dir,
            "lm_head.weight",
            "output.weight",
            &[vocab, hidden],
            None,
            false,
        )?);
    }
    t.push(llama_tensor(
        dir,
        "model.norm.weight",
        "output_norm.weight",
        &[hidden],
        None,
        true,
    )?);
    let llama = m.arch == "llama";
    let (qd, kvd) = (m.n_head * m.head_dim, m.n_kv * m.head_dim);
    for l in 0..m.n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        t.push(llama_tensor(
            dir,
            &p("input_layernorm.weight"),
            &g("attn_norm.weight"),
            &[hidden],
            None,
            true,
        )?);
        t.push(llama_tensor(
            dir,
            &p("post_attention_layernorm.weight"),
            &g("ffn_norm.weight"),
            &[hidden],
            None,
            true,
        )?);
        for (proj, gg, len, nh) in [
            ("q", "attn_q", qd, m.n_head),
            ("k", "attn_k", kvd, m.n_kv),
            ("v", "attn_v", kvd, 0),
        ] {
            let perm = (llama && nh > 0).then_some(nh);
            let w = p(&format!("self_attn.{proj}_proj.weight"));
            t.push(llama_tensor(
                dir,
                &w,
                &g(&format!("{gg}.weight")),
                &[len, hidden],
                perm,
                false,
            )?);
            let b = p(&format!("self_attn.{proj}_proj.bias"));
            if dir.has(&b) {
                t.push(llama_tensor(
                    dir,
                    &b,
                    &g(&format!("{gg}.bias")),
                    &[len],
                    perm,
                    true,
                )?);
            }
        }
        t.push(llama_tensor(
            dir,
            &p("self_attn.o_proj.weight"),
            &g("attn_output.weight"),
            &[hidden, qd],
            None,
            false,
        )?);
        t.push(llama_tensor(
            dir,
            &p("mlp.gate_proj.weight"),
            &g("ffn_gate.weight"),
            &[ffn, hidden],
            None,
            false,
        )?);
        t.push(llama_tensor(
            dir,
            &p("mlp.up_proj.weight"),
            &g("ffn_up.weight"),
            &[ffn, hidden],
            None,
            false,
        )?);
        t.push(llama_tensor(
            dir,
            &p("mlp.down_proj.weight"),
            &g("ffn_down.weight"),
            &[hidden, ffn],
            None,
            false,
        )?);
    }
    Ok(super::GgufLayout {
        arch: m.arch.into(),
        metadata: m.md,
        tensors: t,
    })
}

/// Build the GGUF llama.cpp would convert this directory to (weights as stored, or f32).
pub fn gguf_from_hf(dir: &HfDir, dtype: WeightDtype) -> Result<GgufFile, HfError> {
    let c = &dir.config;
    let Meta {
        arch,
        md,
        rope_freqs,
        hidden,
        n_head,
        n_kv,
        head_dim,
        n_layers,
        ffn,
        vocab,
    } = meta(dir)?;
    let mut w = GgufWriter::new();
    for (key, v) in md {
        w.set(&key, v);
    }
    if let Some(f) = rope_freqs {
        let n = f.len() as u64;
        let bytes = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.tensor("rope_freqs.weight", GgmlType::F32, &[n], bytes);
    }
    let mut mat = |hf: &str,
                   gg: &str,
                   rows: usize,
                   cols: usize,
                   permute: Option<usize>|
     -> Result<(), HfError> {
        let m = dir.matrix(hf, rows, cols, dtype)?;
        let bytes = match permute {
            Some(nh) => permute_rows(m.data(), rows, nh),
            None => m.data().to_vec(),
        };
        w.tensor(gg, m.ty, &[cols as u64, rows as u64], bytes);
        Ok(())
    };
    let llama = arch == "llama";
    mat(
        "model.embed_tokens.weight",
        "token_embd.weight",
        vocab,
        hidden,
        None,
    )?;
    let tied = c.bool_or("tie_word_embeddings", false)? || !dir.has("lm_head.weight");
    if !tied {
        mat("lm_head.weight", "output.weight", vocab, hidden, None)?;
    }
    let (qd, kvd) = (n_head * head_dim, n_kv * head_dim);
    for l in 0..n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        mat(
            &p("self_attn.q_proj.weight"),
            &g("attn_q.weight"),
            qd,
            hidden,
            llama.then_some(n_head),
        )?;
        mat(
            &p("self_attn.k_proj.weight"),
            &g("attn_k.weight"),
            kvd,
            hidden,
            llama.then_some(n_kv),
        )?;
        mat(
            &p("self_attn.v_proj.weight"),
            &g("attn_v.weight"),
            kvd,
            hidden,
            None,
        )?;
        mat(
            &p("self_attn.o_proj.weight"),
            &g("attn_output.weight"),
            hidden,
            qd,
            None,
        )?;
        mat(
            &p("mlp.gate_proj.weight"),
            &g("ffn_gate.weight"),
            ffn,
            hidden,
            None,
        )?;
        mat(
            &p("mlp.up_proj.weight"),
            &g("ffn_up.weight"),
            ffn,
            hidden,
            None,
        )?;
        mat(
            &p("mlp.down_proj.weight"),
            &g("ffn_down.weight"),
            hidden,
            ffn,
            None,
        )?;
    }
    let mut vec = |hf: &str, gg: &str, len: usize, permute: Option<usize>| -> Result<(), HfError> {
        let v = dir.vector(hf, len)?;
        let mut bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        if let Some(nh) = permute {
            bytes = permute_rows(&bytes, len, nh);
        }
        w.tensor(gg, GgmlType::F32, &[len as u64], bytes);
        Ok(())
    };
    vec("model.norm.weight", "output_norm.weight", hidden, None)?;
    for l in 0..n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g = |s: &str| format!("blk.{l}.{s}");
        vec(
            &p("input_layernorm.weight"),
            &g("attn_norm.weight"),
            hidden,
            None,
        )?;
        vec(
            &p("post_attention_layernorm.weight"),
            &g("ffn_norm.weight"),
            hidden,
            None,
        )?;
        for (proj, gg, len, nh) in [
            ("q", "attn_q", qd, n_head),
            ("k", "attn_k", kvd, n_kv),
            ("v", "attn_v", kvd, 0),
        ] {
            let hf = p(&format!("self_attn.{proj}_proj.bias"));
            if dir.has(&hf) {
                let perm = (llama && nh > 0).then_some(nh);
                vec(&hf, &g(&format!("{gg}.bias")), len, perm)?;
            }
        }
    }
    let label = dir.config.path().display().to_string();
    GgufFile::from_bytes(label.clone(), w.to_bytes()).map_err(|e| HfError::Format {
        path: label,
        msg: format!("converting to GGUF: {e}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn permutation_pairs_the_two_halves_of_each_head() {
        // One head of 4 rows (1 byte each): HF [a0 a1 | b0 b1] -> GGUF [a0 b0 a1 b1].
        let rows = [10u8, 11, 20, 21];
        assert_eq!(super::permute_rows(&rows, 4, 1), vec![10, 20, 11, 21]);
    }
}
