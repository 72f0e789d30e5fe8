//! Bounds-checked little-endian reads over a GGUF buffer: every length and count is checked
//! against the bytes left before anything is allocated or sliced.

use super::reader::GgufError;
use super::value::{GgufArray, GgufValue};

/// Nesting depth for arrays of arrays; real files use at most 1.
const MAX_ARRAY_DEPTH: u32 = 8;

pub(super) fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Minimum encoded size of one value of a GGUF value type, used to bound array counts.
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8,  // string: u64 length
        9 => 12, // array: u32 type + u64 count
        _ => return None,
    })
}

pub(super) struct Cursor<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a str,
}

impl<'a> Cursor<'a> {
    pub(super) fn err(&self, msg: String) -> GgufError {
        GgufError::Format {
            path: self.path.to_string(),
            msg,
        }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "file is truncated: reading {what} needs {n} bytes at offset {} but only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reject a count that cannot fit in the rest of the file before allocating for it.
    pub(super) fn check_count(
        &self,
        count: u64,
        min_each: u64,
        what: &str,
    ) -> Result<(), GgufError> {
        if count.saturating_mul(min_each) > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what} = {count} cannot fit in the {} bytes left at offset {} (corrupt or truncated file)",
                self.remaining(),
                self.pos
            )));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N, what)?.try_into().expect("length checked"))
    }
    pub(super) fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub(super) fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub(super) fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(&format!("{what} (length)"))?;
        if len > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what}: string length {len} at offset {} exceeds the {} bytes left (corrupt or truncated file)",
                self.pos - 8,
                self.remaining()
            )));
        }
        let at = self.pos;
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err(format!("{what}: string at offset {at} is not valid UTF-8")))
    }

    pub(super) fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<GgufValue, GgufError> {
        let w = || format!("value of `{key}`");
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(&w())?[0]),
            1 => GgufValue::I8(self.array::<1>(&w())?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(&w())?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(&w())?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(&w())?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(&w())?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(&w())?)),
            7 => match self.array::<1>(&w())?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("`{key}`: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(&w())?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("`{key}`: arrays nested too deeply")));
                }
                let elem_type = self.u32(&format!("array type of `{key}`"))?;
                let min = min_value_size(elem_type).ok_or_else(|| {
                    self.err(format!("`{key}`: unknown array element type {elem_type}"))
                })?;
                let count = self.u64(&format!("array length of `{key}`"))?;
                self.check_count(count, min, &format!("array length of `{key}`"))?;
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(elem_type, key, depth + 1)?);
                }
                GgufValue::Array(GgufArray { elem_type, values })
            }
            10 => GgufValue::U64(u64::from_le_bytes(self.array(&w())?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(&w())?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(&w())?)),
            other => return Err(self.err(format!("`{key}`: unknown value type {other}"))),
        })
    }
}
