//! Weight matrices as raw GGML bytes, borrowed from a memory-mapped file or owned.

use std::sync::Arc;

use crate::gguf::{GgufError, GgufFile, TensorInfo};
use crate::quant::{self, x16, GgmlType, WeightLayout};

/// Anything that holds weight bytes for the lifetime of a model.
pub trait ByteSource: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl ByteSource for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// Bytes of one tensor inside a GGUF file.
struct GgufTensor {
    file: Arc<GgufFile>,
    info: TensorInfo,
}

impl ByteSource for GgufTensor {
    fn bytes(&self) -> &[u8] {
        self.file.tensor_data(&self.info)
    }
}

/// Bytes of a row range of one tensor inside a GGUF file (one expert of a stacked 3-D
/// expert tensor, one head of a per-head tensor): borrowed like [`GgufTensor`], so a model
/// that slices its tensors holds no second copy of the weights.
struct GgufRows {
    file: Arc<GgufFile>,
    info: TensorInfo,
    start: usize,
    len: usize,
}

impl ByteSource for GgufRows {
    fn bytes(&self) -> &[u8] {
        &self.file.tensor_data(&self.info)[self.start..self.start + self.len]
    }
}

/// A `[rows, cols]` weight matrix (row = one output feature) in a GGML type.
#[derive(Clone)]
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Native rows, or groups of 16 interleaved at load (see `quant::x16`).
    pub layout: WeightLayout,
    src: Arc<dyn ByteSource>,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({} {}x{})", self.ty, self.rows, self.cols)
    }
}

impl QMatrix {
    /// Wrap encoded bytes; fails if the length does not match the shape.
    pub fn from_bytes(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self, String> {
        Self::from_source(ty, rows, cols, Arc::new(bytes))
    }

    /// Wrap bytes held elsewhere (a memory map); fails if the length does not match.
    pub fn from_source(
        ty: GgmlType,
        rows: usize,
        cols: usize,
        src: Arc<dyn ByteSource>,
    ) -> Result<Self, String> {
        let len = src.bytes().len();
        let need = ty
            .row_bytes(cols)
            .and_then(|r| r.checked_mul(rows))
            .ok_or_else(|| format!("{cols} columns is not a whole number of {ty} blocks"))?;
        if len != need {
            return Err(format!("{ty} {rows}x{cols} needs {need} bytes, got {len}"));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            layout: WeightLayout::Native,
            src,
        })
    }

    /// The same bytes declared to be in `layout` (already interleaved, e.g. by
    /// [`x16::interleave`]); fails where the type or row count does not allow it.
    pub fn with_layout(mut self, layout: WeightLayout) -> Result<Self, String> {
        if layout == WeightLayout::Interleaved16
            && !(x16::supported(self.ty) && self.rows.is_multiple_of(x16::GROUP))
        {
            return Err(format!(
                "{} {}x{} cannot be interleaved in groups of {}",
                self.ty,
                self.rows,
                self.cols,
                x16::GROUP
            ));
        }
        self.layout = layout;
        Ok(self)
    }

    /// An f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Self {
        assert_eq!(data.len(), rows * cols);
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_bytes(GgmlType::F32, rows, cols, bytes).expect("shape checked")
    }

    /// A 2-D tensor of a GGUF file, borrowed from its memory map.
    pub fn from_gguf(file: &Arc<GgufFile>, name: &str) -> Result<Self, GgufError> {
        let info = file.require_tensor(name)?.clone();
        if info.dims.len() > 2 {
            return Err(GgufError::Format {
                path: file.path().display().to_string(),
                msg: format!("tensor `{name}` should be 2-D, has dims {:?}", info.dims),
            });
        }
        Ok(QMatrix {
            ty: info.ty,
            rows: info.n_rows(),
            cols: info.row_len(),
            layout: info.layout,
            src: Arc::new(GgufTensor {
                file: file.clone(),
                info,
            }),
        })
    }

    /// Rows `r0..r0 + rows` of a GGUF tensor (any number of dims; a row is `dims[0]`
    /// values), borrowed from the file's memory.
    pub fn from_gguf_rows(
        file: &Arc<GgufFile>,
        info: &TensorInfo,
        r0: usize,
        rows: usize,
    ) -> Result<Self, String> {
        let cols = info.row_len();
        let rb = info.ty.row_bytes(cols).ok_or_else(|| {
            format!(
                "`{}`: {cols} columns is not whole {} blocks",
                info.name, info.ty
            )
        })?;
        let total = file.tensor_data(info).len();
        let (start, len) = (r0 * rb, rows * rb);
        if start.checked_add(len).is_none_or(|end| end > total) {
            return Err(format!(
                "`{}`: rows {r0}..{} out of range",
                info.name,
                r0 + rows
            ));
        }
        let unit = info.layout.unit_rows();
        if !r0.is_multiple_of(unit) || !rows.is_multiple_of(unit) {
            return Err(format!(
                "`{}`: rows {r0}..{} split its {unit}-row interleaved groups",
                info.name,
                r0 + rows
            ));
        }
        let src = GgufRows {
            file: file.clone(),
            info: info.clone(),
            start,
            len,
        };
        Self::from_source(info.ty, rows, cols, Arc::new(src))?.with_layout(info.layout)
    }

    pub fn data(&self) -> &[u8] {
        self.src.bytes()
    }

    pub fn row_bytes(&self) -> usize {
        self.ty
            .row_bytes(self.cols)
            .expect("checked at construction")
    }

    /// Dequantize row `r` into `out` (`cols` values).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        match self.layout {
            WeightLayout::Native => {
                quant::dequantize(self.ty, &self.data()[r * rb..(r + 1) * rb], out)
                    .expect("row length matches the type")
            }
            WeightLayout::Interleaved16 => {
                let g = r / x16::GROUP;
                let group = &self.data()[g * x16::GROUP * rb..(g + 1) * x16::GROUP * rb];
                let mut row = vec![0u8; rb];
                x16::extract_row(self.ty, self.cols, group, r % x16::GROUP, &mut row);
                quant::dequantize(self.ty, &row, out).expect("row length matches the type")
            }
        }
    }
}

/// Read a 1-D f32 tensor (norm weights, biases), converting from F16/BF16 if needed.
pub fn vector_from_gguf(file: &GgufFile, name: &str) -> Result<Vec<f32>, GgufError> {
    let info = file.require_tensor(name)?;
    let n = info.n_elements() as usize;
    let mut out = vec![0.0; n];
    quant::dequantize(info.ty, file.tensor_data(info), &mut out).map_err(|e| {
        GgufError::Format {
            path: file.path().display().to_string(),
            msg: format!("tensor `{name}`: {e}"),
        }
    })?;
    Ok(out)
}
