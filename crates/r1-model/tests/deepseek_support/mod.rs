//! Shared helpers of the DeepSeek tests: fixture loading, reference values and a plain
//! greedy loop over `Batch` + `KvCache` (prefill, then one token per step).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use r1_model::arch::deepseek_v3::{DeepSeekV3, Trace};
use r1_model::{Batch, HfDir, KvCache, Model, WeightDtype};
use serde_json::Value;

pub const BLOCK: usize = 16;

/// A fixture folder (`tiny-deepseek-v3`, `-yarn`, `-bf16`), or `None` (SKIP printed).
pub fn fixture_dir(variant: &str) -> Option<PathBuf> {
    r1_model::testdata::fixture(&format!("{variant}/config.json"))
        .map(|p| p.parent().unwrap().to_path_buf())
}

pub fn load_model(dir: &Path, dtype: WeightDtype) -> DeepSeekV3 {
    let hf = HfDir::open(dir).unwrap_or_else(|e| panic!("{e}"));
    DeepSeekV3::from_hf(&hf, 2, dtype).unwrap_or_else(|e| panic!("{e}"))
}

pub struct Reference {
    pub json: Value,
    tensors: Vec<u8>,
}

impl Reference {
    pub fn load(dir: &Path) -> Reference {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let tensors = std::fs::read(dir.join("reference_tensors.safetensors")).unwrap();
        Reference { json, tensors }
    }

    pub fn n_prompts(&self) -> usize {
        self.json["prompts"].as_array().unwrap().len()
    }

    pub fn prompt_ids(&self, i: usize) -> Vec<u32> {
        ids(&self.json["prompts"][i]["input_ids"])
    }

    pub fn greedy_ids(&self, i: usize) -> Vec<u32> {
        ids(&self.json["prompts"][i]["greedy"]["token_ids"])
    }

    /// A full f32 tensor of the tensors file, with its shape.
    pub fn tensor(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let st = safetensors::SafeTensors::deserialize(&self.tensors).unwrap();
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v, t.shape().to_vec())
    }
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A cache big enough for `seqs` sequences of up to `max_len` tokens each.
pub fn new_cache(m: &dyn Model, seqs: usize, max_len: usize) -> KvCache {
    let per = max_len.div_ceil(BLOCK);
    KvCache::with_dtype(m.kv_layout(), BLOCK, seqs * per, m.kv_dtype())
}

/// Blocks `first..first+n` as a block table.
pub fn table(first: usize, n: usize) -> Vec<u32> {
    (first..first + n).map(|b| b as u32).collect()
}

/// Last-position logits of `tokens` run as one prefill in a fresh cache.
pub fn prefill_logits(m: &DeepSeekV3, tokens: &[u32], trace: Option<&mut Trace>) -> Vec<f32> {
    let mut kv = new_cache(m, 1, tokens.len());
    let mut b = Batch::default();
    b.push(tokens, 0, table(0, tokens.len().div_ceil(BLOCK)), true);
    m.forward_traced(&b, &mut kv, trace).unwrap().data
}

/// Greedy decoding: prefill the prompt, then one token per step; returns the `n` chosen
/// tokens and the logits that chose each.
pub fn greedy(m: &dyn Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let total = prompt.len() + n;
    let mut kv = new_cache(m, 1, total);
    let bt = table(0, total.div_ceil(BLOCK));
    let mut b = Batch::default();
    b.push(prompt, 0, bt.clone(), true);
    let mut logits = m.forward(&b, &mut kv).unwrap().data;
    let mut out = Vec::new();
    let mut all = Vec::new();
    for step in 0..n {
        let t = argmax(&logits);
        out.push(t);
        all.push(logits);
        if step + 1 == n {
            break;
        }
        let mut b = Batch::default();
        b.push(&[t], prompt.len() + step, bt.clone(), true);
        logits = m.forward(&b, &mut kv).unwrap().data;
    }
    (out, all)
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("r1serve-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

#[derive(Clone)]
pub struct RawTensor {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl RawTensor {
    pub fn from_f32(shape: &[usize], v: &[f32]) -> Self {
        RawTensor {
            dtype: safetensors::Dtype::F32,
            shape: shape.to_vec(),
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    /// Values of an F32/BF16 tensor.
    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            safetensors::Dtype::F32 => self
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            safetensors::Dtype::BF16 => self
                .data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            d => panic!("to_f32 of {d:?}"),
        }
    }
}

/// All tensors of a safetensors file, by name (sorted).
pub fn read_raw(path: &Path) -> std::collections::BTreeMap<String, RawTensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(n, t)| {
            (
                n.to_string(),
                RawTensor {
                    dtype: t.dtype(),
                    shape: t.shape().to_vec(),
                    data: t.data().to_vec(),
                },
            )
        })
        .collect()
}

pub fn write_raw<'a>(path: &Path, tensors: impl IntoIterator<Item = (&'a String, &'a RawTensor)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .into_iter()
        .map(|(n, t)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Copy `config.json` of `src` into `dst`, edited by `edit`.
pub fn write_config(src: &Path, dst: &Path, edit: impl FnOnce(&mut Value)) {
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(
        dst.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
}
