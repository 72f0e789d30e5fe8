//! Reading an HF checkpoint a slab of rows at a time, for converters that must never hold
//! the whole model (or one whole f32 copy of a large tensor) in memory: `r1serve quantize`
//! from an HF directory, and quantization at load. FP8 weights are dequantized block by
//! block with their `weight_scale_inv`; pages already read can be dropped from the resident
//! set so that reading a 700 GB checkpoint does not grow the process by 700 GB.

use safetensors::Dtype;

use super::{fp8_e4m3_table, HfDir, HfError};

impl HfDir {
    /// `[rows, cols]` of a tensor read as a matrix: a 1-D tensor is one row, a 3-D or wider
    /// tensor has its leading dimensions flattened into rows.
    pub fn matrix_shape(&self, name: &str) -> Result<(usize, usize), HfError> {
        let (e, _) = self.entry(name)?;
        match e.shape[..] {
            [] => Ok((1, 1)),
            [n] => Ok((1, n)),
            [.., c] => Ok((e.shape[..e.shape.len() - 1].iter().product(), c)),
        }
    }

    /// Rows `r0..r0 + n` of `name` (see [`Self::matrix_shape`]) as f32, into `out`
    /// (`n · cols` values). FP8 e4m3 rows are multiplied by their blocks' scales.
    pub fn rows_f32(
        &self,
        name: &str,
        r0: usize,
        n: usize,
        out: &mut [f32],
    ) -> Result<(), HfError> {
        let (rows, cols) = self.matrix_shape(name)?;
        if r0 + n > rows || out.len() != n * cols {
            return Err(self.tensor_err(
                name,
                format!(
                    "rows {r0}..{} of {rows} (internal: {} values)",
                    r0 + n,
                    out.len()
                ),
            ));
        }
        let (e, bytes) = self.entry(name)?;
        let dtype = e.dtype;
        let width = match dtype {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
            Dtype::F8_E4M3 => 1,
            other => return Err(self.tensor_err(name, format!("dtype {other:?} is not supported"))),
        };
        if bytes.len() != rows * cols * width {
            return Err(self.tensor_err(
                name,
                format!(
                    "{} data bytes for shape {:?} in {dtype:?}",
                    bytes.len(),
                    e.shape
                ),
            ));
        }
        let src = &bytes[r0 * cols * width..(r0 + n) * cols * width];
        match dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            Dtype::BF16 => {
                for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            _ => self.fp8_rows(name, rows, cols, r0, src, out)?,
        }
        Ok(())
    }

    /// FP8 rows times their `[ceil(rows/br), ceil(cols/bc)]` block scales.
    fn fp8_rows(
        &self,
        name: &str,
        rows: usize,
        cols: usize,
        r0: usize,
        src: &[u8],
        out: &mut [f32],
    ) -> Result<(), HfError> {
        let sname = format!("{name}_scale_inv");
        if !self.has(&sname) {
            return Err(self.tensor_err(
                name,
                format!("FP8 (F8_E4M3) weight without its block scales `{sname}`"),
            ));
        }
        let (br, bc) = self.fp8_block;
        let want = [rows.div_ceil(br), cols.div_ceil(bc)];
        let sshape = self.matrix_shape(&sname)?;
        if self.shape(&sname) != Some(&want[..]) {
            return Err(self.tensor_err(
                &sname,
                format!(
                    "shape {:?}, expected {want:?} for a {rows}x{cols} weight in {br}x{bc} blocks",
                    self.shape(&sname).unwrap_or(&[])
                ),
            ));
        }
        let n = out.len() / cols;
        let (b0, b1) = (r0 / br, (r0 + n).div_ceil(br));
        let mut scale = vec![0f32; (b1 - b0) * sshape.1];
        self.rows_f32(&sname, b0, b1 - b0, &mut scale)?;
        let table = fp8_e4m3_table();
        for i in 0..n {
            let r = r0 + i;
            let srow = &scale[(r / br - b0) * want[1]..(r / br - b0 + 1) * want[1]];
            for (c, (o, &b)) in out[i * cols..(i + 1) * cols]
                .iter_mut()
                .zip(&src[i * cols..(i + 1) * cols])
                .enumerate()
            {
                *o = table[b as usize] * srow[c / bc];
            }
        }
        Ok(())
    }

    /// Drop a tensor's pages from this process's resident set once it has been read: the
    /// page cache keeps them, but a one-pass conversion's RSS stays at what it built.
    pub fn release(&self, name: &str) {
        if let Ok((rows, _)) = self.matrix_shape(name) {
            self.release_rows(name, 0, rows);
        }
    }

    /// [`Self::release`] for rows `r0..r0 + n` only (a slab just converted): a stack of 256
    /// experts, or one large embedding, then never sits in memory whole.
    pub fn release_rows(&self, name: &str, r0: usize, n: usize) {
        let Some(e) = self.tensors.get(name) else {
            return;
        };
        let rows = self.matrix_shape(name).map_or(1, |(r, _)| r.max(1));
        let row_bytes = (e.end - e.start) / rows;
        let start = e.start + r0 * row_bytes;
        let len = (n * row_bytes).min(e.end - start);
        let map = &self.files[e.file].1;
        // SAFETY: a read-only file mapping; MADV_DONTNEED only drops this process's copy of
        // the pages (whole pages around the range), which fault in again from the file if
        // read later.
        #[cfg(unix)]
        unsafe {
            let _ = map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len);
        }
        #[cfg(not(unix))]
        let _ = (map, start, len);
    }
}
