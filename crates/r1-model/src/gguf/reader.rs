//! GGUF v2/v3 reader over a memory map.
//!
//! Every count, length and offset read from the file is checked against the bytes that are
//! actually there before anything is allocated or sliced, so a truncated or corrupted file
//! gives a [`GgufError`] naming the file and the field — never a panic or a huge allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::cursor::{align_up, Cursor};
use super::split::{self, SplitError};
use super::value::{GgufArray, GgufValue};
use crate::quant::{x16, GgmlType, WeightLayout};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    #[error("{path}: metadata key `{key}`: {msg}")]
    Key {
        path: String,
        key: String,
        msg: String,
    },
    /// The parts of a split model do not fit together (see [`super::split`]).
    #[error(transparent)]
    Split(#[from] SplitError),
}

/// Where a tensor lives and what it holds. `dims` are in GGML order: `dims[0]` is the
/// contiguous (innermost) dimension, so a weight matrix `[out, in]` has `dims = [in, out]`.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    pub dims: Vec<u64>,
    /// Byte offset from the start of the file that holds it (its part, for a split model).
    pub offset: usize,
    /// Which part of a split model holds the tensor (0, the first, for a single file).
    pub part: usize,
    pub size_bytes: usize,
    /// How the rows lie in memory: as in the file, unless interleaved at load
    /// ([`GgufFile::interleave_weights`]).
    pub layout: WeightLayout,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Elements in one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    /// Number of rows (product of all dims but the first).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
}

pub(super) enum Backing {
    Mmap(memmap2::Mmap),
    /// A private copy in huge pages (see `resident`).
    Resident(memmap2::MmapMut),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Resident(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// One file of the model: the whole model, or one part of a split model.
pub(super) struct Part {
    pub(super) path: PathBuf,
    pub(super) backing: Backing,
    /// Where its tensor data starts.
    pub(super) data_offset: usize,
    pub(super) n_tensors: usize,
}

/// What [`GgufFile::parts`] tells about one file of the model.
#[derive(Clone, Copy, Debug)]
pub struct PartInfo<'a> {
    pub path: &'a Path,
    pub size_bytes: usize,
    pub n_tensors: usize,
}

/// A GGUF model: one file, or all parts of a split model (llama.cpp's `gguf-split`), opened
/// through the first part. Metadata comes from the first part; tensors from whichever part
/// holds them.
pub struct GgufFile {
    path: PathBuf,
    /// `parts[0]` is the file at `path`; more only for a split model.
    parts: Vec<Part>,
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    meta_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("parts", &self.parts.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-map and parse a GGUF file. For the first part of a split model
    /// (`NAME-00001-of-0000N.gguf`) every part is mapped; any other part is refused, as
    /// llama.cpp does, with an error naming the first.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let first = Self::open_one(path.as_ref())?;
        split::resolve(first, Self::open_one)
    }

    /// Map and parse one file, whatever its split keys say.
    pub(super) fn open_one(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on nobody
        // truncating the model file while it is served.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(path.to_path_buf(), Backing::Mmap(mmap))
    }

    /// Open for serving: parse the mapped file, then move its bytes into huge pages when
    /// it fits comfortably in memory (faster decode; see `resident`).
    /// Every part of a split model is copied, or none: the model is served from one kind of
    /// memory, and interleaving sees all of it.
    pub fn open_resident(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let mut f = Self::open(path.as_ref())?;
        if !super::resident::wanted(f.file_size()) {
            return Ok(f);
        }
        let mut copies = Vec::with_capacity(f.parts.len());
        for part in &f.parts {
            let len = part.backing.bytes().len();
            let Some(m) = super::resident::copy_to_huge_pages(&part.path, len) else {
                return Ok(f);
            };
            // The copy is of the file just parsed; a file that changed meanwhile is caught
            // by comparing the header bytes the offsets were read from.
            let head = part.data_offset.min(len);
            if m[..head] != part.backing.bytes()[..head] {
                tracing::warn!(
                    "{}: changed while loading; serving from the file mapping",
                    part.path.display()
                );
                return Ok(f);
            }
            copies.push(m);
        }
        for (part, m) in f.parts.iter_mut().zip(copies) {
            part.backing = Backing::Resident(m);
        }
        Ok(f)
    }

    /// Interleave, in the private copy, the 2-D tensors that `pick` names and the x16 kernels
    /// support (type, and a row count that is a multiple of 16); returns how many. Only for
    /// tensors read through [`crate::weights::QMatrix`] alone (matmuls, and row lookups by
    /// `dequantize_row`), never by raw offset. A file mapping is never changed, so a
    /// non-resident file keeps ggml's layout and order.
    pub fn interleave_weights(&mut self, pick: impl Fn(&str) -> bool) -> usize {
        let mut scratch = Vec::new();
        let mut count = 0;
        for t in &mut self.tensors {
            // 3-D tensors are stacked experts (`[cols, rows, experts]`): interleaving the
            // flattened rows keeps every expert's rows in whole groups when `rows` is a
            // multiple of the group.
            let rows_per_matrix = t.dims.get(1).copied().unwrap_or(0) as usize;
            if !(t.dims.len() == 2 || t.dims.len() == 3)
                || t.layout != WeightLayout::Native
                || !x16::available(t.ty)
                || !rows_per_matrix.is_multiple_of(x16::GROUP)
                || rows_per_matrix == 0
                || !pick(&t.name)
            {
                continue;
            }
            // A private copy (huge pages, or bytes built in memory) may be rewritten.
            let bytes = match &mut self.parts[t.part].backing {
                Backing::Resident(map) => &mut map[t.offset..t.offset + t.size_bytes],
                Backing::Bytes(v) => &mut v[t.offset..t.offset + t.size_bytes],
                Backing::Mmap(_) => continue,
            };
            x16::interleave(t.ty, t.row_len(), bytes, &mut scratch);
            t.layout = WeightLayout::Interleaved16;
            count += 1;
        }
        count
    }

    /// Lock every part's bytes in RAM (`mlock`), as llama.cpp's `--mlock` does: the kernel
    /// then never pages weights out under memory pressure (a file mapping's pages are
    /// otherwise the first to go). Needs `ulimit -l` (RLIMIT_MEMLOCK) at least the model's
    /// size, or CAP_IPC_LOCK; the error says which file could not be locked.
    pub fn mlock(&self) -> Result<(), GgufError> {
        for p in &self.parts {
            let locked = match &p.backing {
                Backing::Mmap(m) => m.lock(),
                Backing::Resident(m) => m.lock(),
                Backing::Bytes(_) => Ok(()),
            };
            locked.map_err(|source| GgufError::Io {
                path: format!(
                    "{} (mlock {} bytes; raise `ulimit -l` or run without --mlock)",
                    p.path.display(),
                    p.backing.bytes().len()
                ),
                source,
            })?;
        }
        Ok(())
    }

    /// Whether the bytes live in a private huge-page copy rather than the file mapping.
    pub fn is_resident(&self) -> bool {
        self.parts
            .iter()
            .all(|p| matches!(p.backing, Backing::Resident(_)))
    }

    /// Parse GGUF bytes held in memory; `name` is used in error messages. A part of a split
    /// model is refused: its other parts cannot be found from here.
    pub fn from_bytes(name: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<Self, GgufError> {
        let f = Self::parse(name.into(), Backing::Bytes(bytes))?;
        split::refuse_in_memory(&f)?;
        Ok(f)
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<Self, GgufError> {
        let shown = path.display().to_string();
        let bytes = backing.bytes();
        let mut cur = Cursor {
            buf: bytes,
            pos: 0,
            path: &shown,
        };
        let magic = cur.take(4, "magic")?;
        if magic != MAGIC {
            return Err(cur.err(format!(
                "not a GGUF file (magic {:02x?}, expected \"GGUF\")",
                magic
            )));
        }
        let version = cur.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(cur.err(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = cur.u64("tensor_count")?;
        let n_kv = cur.u64("metadata_kv_count")?;
        // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
        cur.check_count(n_kv, 13, "metadata_kv_count")?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = cur.string(&format!("metadata key #{i}"))?;
            let ty = cur.u32(&format!("type of `{key}`"))?;
            let value = cur.value(ty, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(cur.err(format!("duplicate metadata key `{key}`")));
            }
            metadata.push((key, value));
        }
        let alignment = match meta_index.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(&i) => {
                let a = metadata[i].1.as_u64().unwrap_or(0);
                if a == 0 || !a.is_power_of_two() || a > 1 << 20 {
                    return Err(cur.err(format!(
                        "general.alignment = {:?} is not a power of two",
                        metadata[i].1
                    )));
                }
                a
            }
        };

        // A tensor info takes at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 + 8 bytes.
        cur.check_count(n_tensors, 32, "tensor_count")?;
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = cur.string(&format!("tensor #{i} name"))?;
            let n_dims = cur.u32(&format!("tensor `{name}` n_dims"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(cur.err(format!(
                    "tensor `{name}` has {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(cur.u64(&format!("tensor `{name}` dim {d}"))?);
            }
            let ty_id = cur.u32(&format!("tensor `{name}` type"))?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
                cur.err(format!("tensor `{name}` has unknown ggml type id {ty_id}"))
            })?;
            let offset = cur.u64(&format!("tensor `{name}` offset"))?;
            raw.push((name, dims, ty, offset));
        }
        let data_offset = align_up(cur.pos as u64, alignment);
        let file_len = bytes.len() as u64;
        if data_offset > file_len && !raw.is_empty() {
            return Err(cur.err(format!(
                "file is truncated: tensor data would start at byte {data_offset} but the file has {file_len} bytes"
            )));
        }

        let n_tensors = raw.len();
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, dims, ty, offset) in raw {
            // Bound the product of the non-zero dims, not just of all dims: with a zero first
            // dim the element count is 0 while the row count (the other dims) could still
            // wrap (found by fuzzing with overflow checks).
            let extent = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d.max(1)));
            if extent.is_none_or(|n| n > (1u64 << 48)) {
                return Err(cur.err(format!("tensor `{name}` has absurd shape {dims:?}")));
            }
            let n_elem: u64 = dims.iter().product();
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(cur.err(format!(
                    "tensor `{name}`: row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    ty,
                    ty.block_size()
                )));
            }
            let size = n_elem / ty.block_size() as u64 * ty.type_size() as u64;
            if offset % alignment != 0 {
                return Err(cur.err(format!(
                    "tensor `{name}` offset {offset} is not aligned to {alignment}"
                )));
            }
            let start = data_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(cur.err(format!(
                        "file is truncated or corrupt: tensor `{name}` ({ty}, {dims:?}) needs bytes {}..{} but the file has {file_len}",
                        data_offset.saturating_add(offset),
                        data_offset.saturating_add(offset).saturating_add(size)
                    )))
                }
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(cur.err(format!("duplicate tensor name `{name}`")));
            }
            tensors.push(TensorInfo {
                name,
                ty,
                dims,
                offset: (data_offset + offset) as usize,
                part: 0,
                size_bytes: size as usize,
                layout: WeightLayout::Native,
            });
        }
        Ok(GgufFile {
            path: path.clone(),
            parts: vec![Part {
                path,
                backing,
                data_offset: data_offset as usize,
                n_tensors,
            }],
            version,
            alignment,
            metadata,
            meta_index,
            tensors,
            tensor_index,
        })
    }

    /// Add the tensors of part `index` of a split model (parsed on its own as `part`); its
    /// metadata is dropped, as llama.cpp reads only the first part's. A tensor name that an
    /// earlier part holds too is an error naming both files.
    pub(super) fn absorb_part(&mut self, part: GgufFile, index: usize) -> Result<(), GgufError> {
        debug_assert_eq!(index, self.parts.len());
        for mut t in part.tensors {
            if let Some(&i) = self.tensor_index.get(&t.name) {
                return Err(SplitError::DuplicateTensor {
                    path: part.path.display().to_string(),
                    name: t.name,
                    other: self.parts[self.tensors[i].part].path.display().to_string(),
                }
                .into());
            }
            t.part = index;
            self.tensor_index.insert(t.name.clone(), self.tensors.len());
            self.tensors.push(t);
        }
        self.parts.extend(part.parts);
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn version(&self) -> u32 {
        self.version
    }
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Where the first part's tensor data starts.
    pub fn data_offset(&self) -> usize {
        self.parts[0].data_offset
    }
    /// Bytes of all parts together.
    pub fn file_size(&self) -> usize {
        self.parts.iter().map(|p| p.backing.bytes().len()).sum()
    }
    /// The files of the model, first part first: one for a file that is not split.
    pub fn parts(&self) -> impl ExactSizeIterator<Item = PartInfo<'_>> {
        self.parts.iter().map(|p| PartInfo {
            path: &p.path,
            size_bytes: p.backing.bytes().len(),
            n_tensors: p.n_tensors,
        })
    }

    /// Metadata in file order.
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (bounds were checked at open).
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.parts[info.part].backing.bytes()[info.offset..info.offset + info.size_bytes]
    }

    /// The raw bytes of a tensor, as a `'static`-free borrow of the whole map; errors name it.
    pub fn require_tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensor(name).ok_or_else(|| GgufError::Format {
            path: self.path.display().to_string(),
            msg: format!("missing tensor `{name}`"),
        })
    }

    fn key_err(&self, key: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Key {
            path: self.path.display().to_string(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| self.key_err(key, "missing"))
    }

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            self.key_err(
                key,
                format!("expected a non-negative integer, found {}", v.type_name()),
            )
        })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64()
            .ok_or_else(|| self.key_err(key, format!("expected a number, found {}", v.type_name())))
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| self.key_err(key, format!("expected a string, found {}", v.type_name())))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool()
            .ok_or_else(|| self.key_err(key, format!("expected a bool, found {}", v.type_name())))
    }

    /// Optional typed getters: missing is `Ok(None)`, present with the wrong type is an error.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.get(key).map(|_| self.get_u64(key)).transpose()
    }
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key).map(|_| self.get_f64(key)).transpose()
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key).map(|_| self.get_bool(key)).transpose()
    }
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key).map(|_| self.get_str(key)).transpose()
    }

    /// An array of strings (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        let arr = self.get_array(key)?;
        arr.values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    self.key_err(
                        key,
                        format!("element {i} is {}, expected string", v.type_name()),
                    )
                })
            })
            .collect()
    }

    /// An array of integers (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        let arr = self.get_array(key)?;
        arr.values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().ok_or_else(|| {
                    self.key_err(
                        key,
                        format!("element {i} is {}, expected integer", v.type_name()),
                    )
                })
            })
            .collect()
    }

    /// An array of floats (e.g. `tokenizer.ggml.scores`).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        let arr = self.get_array(key)?;
        arr.values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    self.key_err(
                        key,
                        format!("element {i} is {}, expected number", v.type_name()),
                    )
                })
            })
            .collect()
    }

    pub fn get_array(&self, key: &str) -> Result<&GgufArray, GgufError> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| self.key_err(key, format!("expected an array, found {}", v.type_name())))
    }
}
