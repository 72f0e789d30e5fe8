//! A minimal GGUF v3 writer: metadata and raw tensor bytes. Used to build test files and to
//! convert checkpoints; writes to `PATH.part` and renames, so no half-written file is left.
//! [`GgufStreamWriter`] writes one tensor at a time (`r1serve quantize`), never holding the
//! model in memory.

use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::value::{GgufArray, GgufValue};
use crate::quant::GgmlType;

#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<(String, GgmlType, Vec<u64>, Vec<u8>)>,
    alignment: u64,
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter {
            alignment: 32,
            ..Default::default()
        }
    }

    pub fn set(&mut self, key: &str, value: GgufValue) -> &mut Self {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64() {
                self.alignment = a.max(1);
            }
        }
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Add a tensor; `dims` in GGML order (`dims[0]` contiguous), `data` already encoded.
    pub fn tensor(&mut self, name: &str, ty: GgmlType, dims: &[u64], data: Vec<u8>) -> &mut Self {
        self.tensors
            .push((name.to_string(), ty, dims.to_vec(), data));
        self
    }

    /// Encode the whole file in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let infos: Vec<_> = self
            .tensors
            .iter()
            .map(|(n, ty, dims, data)| (n.as_str(), *ty, dims.as_slice(), data.len()))
            .collect();
        let (mut out, offsets) = header(&self.metadata, &infos, self.alignment);
        let data_start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend_from_slice(data);
        }
        out
    }

    /// Write atomically: `PATH.part` then rename.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let part = path.with_extension("gguf.part");
        {
            let mut f = std::fs::File::create(&part)?;
            f.write_all(&self.to_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&part, path)
    }
}

/// The header (magic, counts, metadata, tensor infos) padded to the alignment, and each
/// tensor's offset in the data section. `tensors`: (name, type, dims, data length in bytes).
fn header(
    metadata: &[(String, GgufValue)],
    tensors: &[(&str, GgmlType, &[u64], usize)],
    alignment: u64,
) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let a = alignment.max(1) as usize;
    let mut offset = 0usize;
    let mut offsets = Vec::with_capacity(tensors.len());
    for (name, ty, dims, len) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&ty.id().to_le_bytes());
        out.extend_from_slice(&(offset as u64).to_le_bytes());
        offsets.push(offset);
        offset = (offset + len).div_ceil(a) * a;
    }
    let data_start = out.len().div_ceil(a) * a;
    out.resize(data_start, 0);
    (out, offsets)
}

/// A tensor to be written by [`GgufStreamWriter`]: its header entry, data to follow.
#[derive(Clone, Debug)]
pub struct StreamTensor {
    pub name: String,
    pub ty: GgmlType,
    /// GGML order (`dims[0]` contiguous).
    pub dims: Vec<u64>,
}

impl StreamTensor {
    /// Bytes of data this tensor takes (`None` if the row length is not whole blocks).
    pub fn n_bytes(&self) -> Option<usize> {
        let row = self.ty.row_bytes(*self.dims.first()? as usize)?;
        let rows: u64 = self.dims[1..].iter().product();
        row.checked_mul(rows as usize)
    }
}

/// Writes a GGUF file tensor by tensor: the header (all tensor types and shapes known up
/// front) goes first, then each tensor's bytes in order through [`Self::append`]. The file
/// is `PATH.part` until [`Self::finish`] renames it; dropped unfinished, the part file is
/// removed.
pub struct GgufStreamWriter {
    out: Option<Sink>,
    part: PathBuf,
    path: PathBuf,
    tensors: Vec<(StreamTensor, usize)>,
    alignment: usize,
    next: usize,
    written: usize,
}

/// Where a [`GgufStreamWriter`] puts the bytes: a file, or memory (quantization at load).
enum Sink {
    File(BufWriter<std::fs::File>),
    Mem(Vec<u8>),
}

impl Sink {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(f) => f.write_all(b),
            Sink::Mem(v) => {
                v.extend_from_slice(b);
                Ok(())
            }
        }
    }
}

impl GgufStreamWriter {
    /// Create `PATH.part` and write the header. The alignment is `general.alignment` when
    /// the metadata has it, else 32.
    pub fn create(
        path: &Path,
        metadata: &[(String, GgufValue)],
        tensors: Vec<StreamTensor>,
    ) -> std::io::Result<Self> {
        Self::start(Some(path), metadata, tensors)
    }

    /// Build the file in memory instead, in one allocation of exactly its size; get it from
    /// [`Self::finish_bytes`].
    pub fn in_memory(
        metadata: &[(String, GgufValue)],
        tensors: Vec<StreamTensor>,
    ) -> std::io::Result<Self> {
        Self::start(None, metadata, tensors)
    }

    fn start(
        path: Option<&Path>,
        metadata: &[(String, GgufValue)],
        tensors: Vec<StreamTensor>,
    ) -> std::io::Result<Self> {
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(32)
            .max(1);
        let mut sized = Vec::with_capacity(tensors.len());
        for t in tensors {
            let n = t.n_bytes().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "tensor {}: dims {:?} are not whole {} blocks",
                        t.name,
                        t.dims,
                        t.ty.name()
                    ),
                )
            })?;
            sized.push((t, n));
        }
        let infos: Vec<_> = sized
            .iter()
            .map(|(t, n)| (t.name.as_str(), t.ty, t.dims.as_slice(), *n))
            .collect();
        let (head, _) = header(metadata, &infos, alignment);
        let (mut out, part) = match path {
            Some(path) => {
                let mut name = path.as_os_str().to_owned();
                name.push(".part");
                let part = PathBuf::from(name);
                let f = BufWriter::with_capacity(1 << 20, std::fs::File::create(&part)?);
                (Sink::File(f), part)
            }
            None => {
                let a = alignment as usize;
                let data: usize = sized.iter().map(|(_, n)| n.div_ceil(a) * a).sum();
                (
                    Sink::Mem(Vec::with_capacity(head.len() + data)),
                    PathBuf::new(),
                )
            }
        };
        out.write_all(&head)?;
        Ok(GgufStreamWriter {
            out: Some(out),
            part,
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            tensors: sized,
            alignment: alignment as usize,
            next: 0,
            written: 0,
        })
    }

    /// The tensor the next [`Self::append`] calls fill, if any is left.
    pub fn current(&self) -> Option<&StreamTensor> {
        self.tensors.get(self.next).map(|(t, _)| t)
    }

    /// Append bytes of the current tensor (in as many pieces as wanted); when it is
    /// complete, the padding is written and the next tensor begins.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some((t, n)) = self.tensors.get(self.next) else {
            return Err(std::io::Error::other("all tensors already written"));
        };
        if self.written + bytes.len() > *n {
            return Err(std::io::Error::other(format!(
                "tensor {}: more than its {n} bytes",
                t.name
            )));
        }
        let n = *n;
        let out = self.out.as_mut().expect("open until finished");
        out.write_all(bytes)?;
        self.written += bytes.len();
        if self.written == n {
            let pad = n.div_ceil(self.alignment) * self.alignment - n;
            out.write_all(&vec![0u8; pad])?;
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    /// Check every tensor was written, sync, and rename `PATH.part` to `PATH`.
    pub fn finish(mut self) -> std::io::Result<()> {
        if let Some((t, _)) = self.tensors.get(self.next) {
            return Err(std::io::Error::other(format!(
                "tensor {} was not written",
                t.name
            )));
        }
        let Some(Sink::File(out)) = self.out.take() else {
            return Err(std::io::Error::other("an in-memory GGUF: use finish_bytes"));
        };
        let mut f = out.into_inner().map_err(|e| e.into_error())?;
        f.seek(SeekFrom::End(0))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.part, &self.path)
    }
}

impl GgufStreamWriter {
    /// Check every tensor was written and return the bytes of an [`Self::in_memory`] file.
    pub fn finish_bytes(mut self) -> std::io::Result<Vec<u8>> {
        if let Some((t, _)) = self.tensors.get(self.next) {
            return Err(std::io::Error::other(format!(
                "tensor {} was not written",
                t.name
            )));
        }
        match self.out.take() {
            Some(Sink::Mem(v)) => Ok(v),
            _ => Err(std::io::Error::other("a GGUF file: use finish")),
        }
    }
}

impl Drop for GgufStreamWriter {
    fn drop(&mut self) {
        if let Some(Sink::File(_)) = self.out.take() {
            let _ = std::fs::remove_file(&self.part);
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(*x as u8),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(GgufArray { elem_type, values }) => {
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(values.len() as u64).to_le_bytes());
            for e in values {
                put_value(out, e);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
