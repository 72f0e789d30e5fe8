//! llama.cpp importance matrices (`llama-imatrix` output) for `r1serve quantize --imatrix`:
//! the GGUF format (`<tensor>.in_sum2` and `<tensor>.counts`, llama-imatrix's default) and the
//! legacy `.dat` format (`--output-format dat`). Values are normalized as `llama-quantize`
//! does (`load_imatrix` in tools/quantize/quantize.cpp): sums over counts, per expert.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use r1_model::gguf::GgufFile;
use r1_model::quant::{self, GgmlType};

#[derive(Debug)]
pub struct Imatrix {
    /// Tensor name → importance per column (× experts for 3-D tensors).
    pub entries: HashMap<String, Vec<f32>>,
    pub dataset: Option<String>,
    pub chunk_count: u32,
}

pub fn load(path: &Path) -> anyhow::Result<Imatrix> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let im = if bytes.starts_with(b"GGUF") {
        load_gguf(path)?
    } else {
        load_legacy(path, &bytes)?
    };
    for (name, v) in &im.entries {
        if let Some(x) = v.iter().find(|x| !x.is_finite()) {
            bail!(
                "{}: entry `{name}` holds a non-finite value ({x})",
                path.display()
            );
        }
    }
    if im.entries.is_empty() {
        bail!("{}: no importance matrix entries", path.display());
    }
    Ok(im)
}

fn load_gguf(path: &Path) -> anyhow::Result<Imatrix> {
    let f =
        GgufFile::open(path).with_context(|| format!("{}: not a GGUF imatrix", path.display()))?;
    let has_meta = [
        "imatrix.datasets",
        "imatrix.chunk_count",
        "imatrix.chunk_size",
    ]
    .iter()
    .all(|k| f.get(k).is_some());
    if !has_meta {
        bail!(
            "{}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)",
            path.display()
        );
    }
    let dataset = f
        .get_str_array("imatrix.datasets")
        .ok()
        .and_then(|v| v.first().map(|s| s.to_string()));
    let chunk_count = f.opt_u64("imatrix.chunk_count")?.unwrap_or(0) as u32;
    let read = |name: &str| -> anyhow::Result<Vec<f32>> {
        let t = f.require_tensor(name)?;
        if t.ty != GgmlType::F32 {
            bail!(
                "{}: `{name}` must be F32, is {}",
                path.display(),
                t.ty.name()
            );
        }
        let mut v = vec![0f32; t.n_elements() as usize];
        quant::dequantize(GgmlType::F32, f.tensor_data(t), &mut v)?;
        Ok(v)
    };
    let mut entries = HashMap::new();
    for t in f.tensors() {
        let Some(name) = t.name.strip_suffix(".in_sum2") else {
            continue;
        };
        let counts_name = format!("{name}.counts");
        if f.tensor(&counts_name).is_none() {
            bail!("{}: `{}` has no `{counts_name}`", path.display(), t.name);
        }
        let sums = read(&t.name)?;
        let counts = read(&counts_name)?;
        if counts.is_empty() || !sums.len().is_multiple_of(counts.len()) {
            bail!(
                "{}: `{name}`: {} sums do not split over {} counts",
                path.display(),
                sums.len(),
                counts.len()
            );
        }
        let ne0 = sums.len() / counts.len();
        let mut e = vec![0f32; sums.len()];
        for (j, &c) in counts.iter().enumerate() {
            let c = c.round() as i64 as f32;
            for i in 0..ne0 {
                e[j * ne0 + i] = if c > 0.0 { sums[j * ne0 + i] / c } else { 1.0 };
            }
        }
        entries.insert(name.to_string(), e);
    }
    Ok(Imatrix {
        entries,
        dataset,
        chunk_count,
    })
}

fn load_legacy(path: &Path, b: &[u8]) -> anyhow::Result<Imatrix> {
    let p = path.display();
    let mut at = 0usize;
    let mut i32_at = |what: &str| -> anyhow::Result<i32> {
        let v = b
            .get(at..at + 4)
            .with_context(|| format!("{p}: truncated at byte {at} reading {what}"))?;
        at += 4;
        Ok(i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    };
    let n = i32_at("the entry count")?;
    if n < 1 {
        bail!("{p}: not an imatrix (neither GGUF nor a legacy .dat with entries)");
    }
    let mut entries = HashMap::new();
    let mut pos;
    {
        pos = 4usize;
        for i in 0..n {
            let rd = |pos: &mut usize, len: usize, what: String| -> anyhow::Result<&[u8]> {
                let s = b
                    .get(*pos..*pos + len)
                    .with_context(|| format!("{p}: truncated in entry {i} ({what})"))?;
                *pos += len;
                Ok(s)
            };
            let len = i32::from_le_bytes(rd(&mut pos, 4, "name length".into())?.try_into()?);
            if len < 0 {
                bail!("{p}: entry {i}: negative name length");
            }
            let name =
                String::from_utf8_lossy(rd(&mut pos, len as usize, "name".into())?).into_owned();
            let ncall = i32::from_le_bytes(rd(&mut pos, 4, format!("{name}: ncall"))?.try_into()?);
            let nval = i32::from_le_bytes(rd(&mut pos, 4, format!("{name}: nval"))?.try_into()?);
            if nval < 1 {
                bail!("{p}: entry `{name}`: {nval} values");
            }
            let data = rd(&mut pos, 4 * nval as usize, format!("{name}: values"))?;
            let v = data
                .chunks_exact(4)
                .map(|c| {
                    let s = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    if ncall > 0 {
                        s / ncall as i64 as f32
                    } else {
                        s
                    }
                })
                .collect();
            entries.insert(name, v);
        }
    }
    let _ = at;
    let mut chunk_count = 0;
    let mut dataset = None;
    if let Some(c) = b.get(pos..pos + 4) {
        chunk_count = i32::from_le_bytes(c.try_into()?).max(0) as u32;
        if let Some(l) = b.get(pos + 4..pos + 8) {
            let l = i32::from_le_bytes(l.try_into()?);
            if l > 0 {
                if let Some(s) = b.get(pos + 8..pos + 8 + l as usize) {
                    dataset = Some(String::from_utf8_lossy(s).into_owned());
                }
            }
        }
    }
    Ok(Imatrix {
        entries,
        dataset,
        chunk_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_dat_is_read_and_divided_by_ncall() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_le_bytes());
        let name = b"blk.0.attn_q.weight";
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&4i32.to_le_bytes()); // ncall
        b.extend_from_slice(&2i32.to_le_bytes()); // nval
        b.extend_from_slice(&8f32.to_le_bytes());
        b.extend_from_slice(&2f32.to_le_bytes());
        b.extend_from_slice(&10i32.to_le_bytes()); // chunks
        b.extend_from_slice(&3i32.to_le_bytes());
        b.extend_from_slice(b"abc");
        let im = load_legacy(Path::new("x.dat"), &b).unwrap();
        assert_eq!(im.entries["blk.0.attn_q.weight"], vec![2.0, 0.5]);
        assert_eq!(im.chunk_count, 10);
        assert_eq!(im.dataset.as_deref(), Some("abc"));
        let err = load_legacy(Path::new("x.dat"), &b[..20]).unwrap_err();
        assert!(format!("{err:#}").contains("x.dat: truncated"), "{err:#}");
    }
}
