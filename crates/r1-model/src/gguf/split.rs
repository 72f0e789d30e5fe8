//! Split GGUF models, as llama.cpp's `llama-gguf-split --split` writes them:
//! `PREFIX-00001-of-0000N.gguf` … `PREFIX-0000N-of-0000N.gguf`.
//!
//! Each part is a complete GGUF file with its own header, tensor infos and aligned data. Every
//! part carries `split.no` (u16, 0-based), `split.count` (u16) and `split.tensors.count` (i32,
//! the total over all parts); the model's metadata is in the first part only. Like llama.cpp
//! (`llama_model_loader`), a model is opened through its first part, the other parts are found
//! by name next to it, and their metadata other than the split keys is ignored.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::reader::{GgufError, GgufFile, TensorInfo};
use super::value::GgufValue;
use super::writer::GgufWriter;

pub const KEY_NO: &str = "split.no";
pub const KEY_COUNT: &str = "split.count";
pub const KEY_TENSORS_COUNT: &str = "split.tensors.count";

/// Why the parts of a split model do not make one model. Every variant names a file.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("{path}: this is part {no} of {count} of a split model; open the first part, {first}")]
    NotFirstPart {
        path: String,
        no: u16,
        count: u16,
        first: String,
    },
    #[error(
        "{path}: first part of a split model of {count} parts, but the file name does not end \
         in -00001-of-{count:05}.gguf, so the other parts cannot be found (keep gguf-split's names)"
    )]
    BadName { path: String, count: u16 },
    #[error("{path}: part {no} of {count} of the split model {first} is missing")]
    MissingPart {
        path: String,
        first: String,
        no: u16,
        count: u16,
    },
    /// A part that cannot be read or parsed (truncated, corrupt, unreadable); `cause` names it.
    #[error("part {no} of {count} of the split model {first}: {cause}")]
    Part {
        first: String,
        no: u16,
        count: u16,
        cause: Box<GgufError>,
    },
    #[error(
        "{path}: {key} is {found}, but part {no} of the split model {first} must have {expected}; \
         the file belongs to another split"
    )]
    Mismatch {
        path: String,
        first: String,
        no: u16,
        key: &'static str,
        found: String,
        expected: String,
    },
    #[error(
        "{path}: split.tensors.count is {expected}, but its {count} parts hold {found} tensors"
    )]
    TensorCount {
        path: String,
        expected: u64,
        found: usize,
        count: u16,
    },
    #[error("{path}: tensor `{name}` is also in {other}")]
    DuplicateTensor {
        path: String,
        name: String,
        other: String,
    },
    #[error("{path}: part {no} of {count} of a split model cannot be opened from memory")]
    InMemory { path: String, no: u16, count: u16 },
}

/// A split part's file name, `PREFIX-00002-of-00005.gguf`: the prefix, the part number
/// (1-based, as in the name) and the part count. `None` for any other name.
pub fn parse_split_name(name: &str) -> Option<(&str, u16, u16)> {
    // "-NNNNN-of-NNNNN.gguf": `%05d` of a u16 is always 5 digits.
    const TAIL: usize = "-00001-of-00001.gguf".len();
    let cut = name.len().checked_sub(TAIL)?;
    if cut == 0 || !name.is_char_boundary(cut) {
        return None;
    }
    let (prefix, tail) = name.split_at(cut);
    if !tail.is_ascii() {
        return None;
    }
    let b = tail.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u16> {
        let s = &tail[r];
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    if b[0] != b'-' || &tail[6..10] != "-of-" || &tail[15..] != ".gguf" {
        return None;
    }
    let (no, count) = (digits(1..6)?, digits(10..15)?);
    (1..=count).contains(&no).then_some((prefix, no, count))
}

/// The file name of part `no` (1-based) of `count`, as llama.cpp's `llama_split_path` makes it.
pub fn split_file_name(prefix: &str, no: u16, count: u16) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

/// The path of part `no0` (0-based) next to `prefix` (a path without the part suffix).
fn part_path(prefix: &Path, no0: u16, count: u16) -> PathBuf {
    let mut s = OsString::from(prefix.as_os_str());
    s.push(format!("-{:05}-of-{count:05}.gguf", no0 + 1));
    PathBuf::from(s)
}

/// `path` without its part suffix, if its name is that of part `no0` (0-based) of `count`
/// (llama.cpp's `llama_split_prefix`).
fn prefix_of(path: &Path, no0: u16, count: u16) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (prefix, no, n) = parse_split_name(name)?;
    (no == no0 + 1 && n == count).then(|| path.with_file_name(prefix))
}

/// The split keys of one file; `None` when it has no `split.count` (not split).
struct Keys {
    no: u16,
    count: u16,
    tensors: u64,
}

fn read_keys(f: &GgufFile) -> Result<Option<Keys>, GgufError> {
    let Some(count) = f.opt_u64(KEY_COUNT)? else {
        return Ok(None);
    };
    let u16_of = |key: &str, v: u64| {
        u16::try_from(v).map_err(|_| GgufError::Key {
            path: f.path().display().to_string(),
            key: key.to_string(),
            msg: format!("{v} does not fit in a u16"),
        })
    };
    let count = u16_of(KEY_COUNT, count)?;
    if count <= 1 {
        // llama.cpp treats 0 (a merged file) and 1 like a file that is not split.
        return Ok(Some(Keys {
            no: 0,
            count,
            tensors: f.tensors().len() as u64,
        }));
    }
    Ok(Some(Keys {
        no: u16_of(KEY_NO, f.get_u64(KEY_NO)?)?,
        count,
        tensors: f.get_u64(KEY_TENSORS_COUNT)?,
    }))
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Turn a freshly opened first file into the whole model: map its other parts (`open` parses
/// one file) and check that they belong together. A file that is not split comes back as it is.
pub(super) fn resolve(
    mut first: GgufFile,
    open: impl Fn(&Path) -> Result<GgufFile, GgufError>,
) -> Result<GgufFile, GgufError> {
    let keys = match read_keys(&first)? {
        Some(k) if k.count > 1 => k,
        _ => return Ok(first),
    };
    let (count, path) = (keys.count, first.path().to_path_buf());
    if keys.no != 0 {
        let first_path = match prefix_of(&path, keys.no, count) {
            Some(prefix) => shown(&part_path(&prefix, 0, count)),
            None => format!("the file named …-00001-of-{count:05}.gguf"),
        };
        return Err(SplitError::NotFirstPart {
            path: shown(&path),
            no: keys.no.saturating_add(1),
            count,
            first: first_path,
        }
        .into());
    }
    let Some(prefix) = prefix_of(&path, 0, count) else {
        return Err(SplitError::BadName {
            path: shown(&path),
            count,
        }
        .into());
    };
    for no0 in 1..count {
        let p = part_path(&prefix, no0, count);
        let part = match open(&p) {
            Ok(part) => part,
            Err(GgufError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(SplitError::MissingPart {
                    path: shown(&p),
                    first: shown(&path),
                    no: no0 + 1,
                    count,
                }
                .into())
            }
            Err(e) => {
                return Err(SplitError::Part {
                    first: shown(&path),
                    no: no0 + 1,
                    count,
                    cause: Box::new(e),
                }
                .into())
            }
        };
        check_part(&part, &path, &keys, no0)?;
        first.absorb_part(part, usize::from(no0))?;
    }
    let found = first.tensors().len();
    if found as u64 != keys.tensors {
        return Err(SplitError::TensorCount {
            path: shown(&path),
            expected: keys.tensors,
            found,
            count,
        }
        .into());
    }
    tracing::debug!(
        "{}: split model, {count} parts, {found} tensors",
        path.display()
    );
    Ok(first)
}

/// Part `no0` must say so, and agree with the first part on the count and the tensor total.
fn check_part(part: &GgufFile, first: &Path, want: &Keys, no0: u16) -> Result<(), GgufError> {
    let mismatch = |key: &'static str, found: String, expected: String| SplitError::Mismatch {
        path: shown(part.path()),
        first: shown(first),
        no: no0 + 1,
        key,
        found,
        expected,
    };
    let Some(got) = read_keys(part)? else {
        return Err(mismatch(KEY_COUNT, "absent".into(), want.count.to_string()).into());
    };
    if got.count != want.count {
        return Err(mismatch(KEY_COUNT, got.count.to_string(), want.count.to_string()).into());
    }
    if got.no != no0 {
        return Err(mismatch(KEY_NO, got.no.to_string(), no0.to_string()).into());
    }
    if got.tensors != want.tensors {
        return Err(mismatch(
            KEY_TENSORS_COUNT,
            got.tensors.to_string(),
            want.tensors.to_string(),
        )
        .into());
    }
    Ok(())
}

/// Bytes in memory cannot name their other parts: refuse a part of a model split in several.
pub(super) fn refuse_in_memory(f: &GgufFile) -> Result<(), GgufError> {
    match read_keys(f)? {
        Some(k) if k.count > 1 => Err(SplitError::InMemory {
            path: shown(f.path()),
            no: k.no.saturating_add(1),
            count: k.count,
        }
        .into()),
        _ => Ok(()),
    }
}

/// ggml pads every tensor's data to 32 bytes when gguf-split writes a part, the last one too.
const GGUF_DEFAULT_ALIGNMENT: usize = 32;

/// Write one part the way gguf-split does: with `metadata`, all of `src`'s metadata (the first
/// part), else none; then `split.no` = `no` (0-based), `split.tensors.count` and `split.count`,
/// in that order (ggml's `gguf_set_val_*` removes a key and appends it, and gguf-split sets
/// the count last, once it is known); then `tensors`' data from `src`. Holds the part in
/// memory: for tests and small models.
pub fn write_part(
    path: &Path,
    src: &GgufFile,
    tensors: &[&TensorInfo],
    metadata: bool,
    (no, count, total): (u16, u16, i32),
) -> std::io::Result<()> {
    let mut kv: Vec<(String, GgufValue)> = Vec::new();
    if metadata {
        kv.extend(src.metadata().map(|(k, v)| (k.to_string(), v.clone())));
    }
    for (k, v) in [
        (KEY_NO, GgufValue::U16(no)),
        (KEY_TENSORS_COUNT, GgufValue::I32(total)),
        (KEY_COUNT, GgufValue::U16(count)),
    ] {
        kv.retain(|(key, _)| key != k);
        kv.push((k.to_string(), v));
    }
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w.set(&k, v);
    }
    for t in tensors {
        w.tensor(&t.name, t.ty, &t.dims, src.tensor_data(t).to_vec());
    }
    let mut bytes = w.to_bytes();
    bytes.resize(
        bytes.len().div_ceil(GGUF_DEFAULT_ALIGNMENT) * GGUF_DEFAULT_ALIGNMENT,
        0,
    );
    let mut tmp = OsString::from(path.as_os_str());
    tmp.push(".part");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// How `llama-gguf-split --split --split-max-tensors max` spreads tensors: a new part before
/// tensor `i` whenever `i > 0 && i % max == 0`; with `empty_first`
/// (`--no-tensor-first-split`) the first part holds metadata only.
pub fn spread(src: &GgufFile, max: usize, empty_first: bool) -> Vec<Vec<&TensorInfo>> {
    let max = max.max(1);
    let mut parts: Vec<Vec<&TensorInfo>> = vec![Vec::new()];
    if empty_first {
        parts.push(Vec::new());
    }
    for (i, t) in src.tensors().iter().enumerate() {
        if i > 0 && i % max == 0 {
            parts.push(Vec::new());
        }
        parts.last_mut().expect("one part at least").push(t);
    }
    parts
}

/// Split `src` into `dir/NAME-0000i-of-0000N.gguf` as `llama-gguf-split --split
/// --split-max-tensors max [--no-tensor-first-split]` does; returns the part paths, first
/// first. Used by tests to make split models from whole ones.
pub fn write_split(
    src: &GgufFile,
    dir: &Path,
    name: &str,
    max: usize,
    empty_first: bool,
) -> std::io::Result<Vec<PathBuf>> {
    let parts = spread(src, max, empty_first);
    let too_many = || std::io::Error::other("more than 65535 parts or 2^31 tensors");
    let count = u16::try_from(parts.len()).map_err(|_| too_many())?;
    let total = i32::try_from(src.tensors().len()).map_err(|_| too_many())?;
    let mut paths = Vec::with_capacity(parts.len());
    for (no0, tensors) in (0u16..).zip(&parts) {
        let p = dir.join(split_file_name(name, no0 + 1, count));
        write_part(&p, src, tensors, no0 == 0, (no0, count, total))?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            parse_split_name("DeepSeek-R1-Q4_K_M-00002-of-00009.gguf"),
            Some(("DeepSeek-R1-Q4_K_M", 2, 9))
        );
        assert_eq!(
            parse_split_name("dir/x-00001-of-00001.gguf"),
            Some(("dir/x", 1, 1))
        );
        for bad in [
            "-00001-of-00002.gguf",
            "x-00003-of-00002.gguf",
            "x-00000-of-00002.gguf",
            "x-0001-of-00002.gguf",
            "x-00001-of-00002.bin",
            "x-0000a-of-00002.gguf",
            "x-00001_of-00002.gguf",
            "x-0000é-of-0002.gguf",
            "x-99999-of-99999.gguf",
            "model.gguf",
            "",
        ] {
            assert_eq!(parse_split_name(bad), None, "{bad}");
        }
        assert_eq!(split_file_name("m", 3, 12), "m-00003-of-00012.gguf");
        let p = Path::new("/m/x-00001-of-00003.gguf");
        let prefix = prefix_of(p, 0, 3).unwrap();
        assert_eq!(prefix, Path::new("/m/x"));
        assert_eq!(
            part_path(&prefix, 2, 3),
            Path::new("/m/x-00003-of-00003.gguf")
        );
        assert_eq!(prefix_of(p, 1, 3), None);
        assert_eq!(prefix_of(p, 0, 4), None);
    }
}
