//! Parsing a GGUF v3 file that is wholly in memory (mapped or owned).
//!
//! Every count read from the file is checked against the bytes left after it before anything
//! is read or reserved for it, and reservations are capped, so memory stays a small multiple
//! of the bytes the header really occupies whatever the counts claim.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{GgufError, GgufWarning, Result};
use crate::tensor::{tensor_size, TensorInfo};
use crate::value::{Array, Value, ValueType};
use crate::{
    GgmlType, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS, MAX_NAME_LEN,
    VERSION,
};

/// Smallest KV record: empty key (u64 length), type id, one-byte value.
const MIN_KV_LEN: u64 = 8 + 4 + 1;
/// Smallest tensor-info record: empty name, n_dims, one dimension, type id, offset.
const MIN_TENSOR_INFO_LEN: u64 = 8 + 4 + 8 + 4 + 8;
/// Initial reservation cap: enough for every table of a real file to need few regrowths, small
/// enough that a lying count costs nothing.
const RESERVE_CAP: usize = 1 << 16;

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// A parsed GGUF v3 file. Tensor data is not copied: [`tensor_data`](Self::tensor_data)
/// borrows it from the mapping (or the owned buffer).
pub struct GgufFile {
    backing: Backing,
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    warnings: Vec<GgufWarning>,
}

impl GgufFile {
    /// Memory-maps the file at `path` and parses its header, KV table and tensor directory.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let open_err = |source| GgufError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let backing = if len == 0 {
            // Mapping zero bytes is an error on some platforms; an empty buffer parses to the
            // same "truncated" error a mapping would.
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only. If another process truncates or rewrites the
            // file while it is mapped, reads may fault or see changed bytes; like ds4 and
            // llama.cpp we accept that for model files, which are not modified in place.
            Backing::Mapped(unsafe { Mmap::map(&file) }.map_err(open_err)?)
        };
        Self::from_backing(backing)
    }

    /// Parses a file held in memory; the same parser as [`open`](Self::open).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<GgufFile> {
        let bytes = match &backing {
            Backing::Mapped(m) => &m[..],
            Backing::Owned(v) => &v[..],
        };
        let h = parse(bytes)?;
        Ok(GgufFile {
            backing,
            version: h.version,
            alignment: h.alignment,
            data_start: h.data_start,
            metadata: h.metadata,
            key_index: h.key_index,
            tensors: h.tensors,
            tensor_index: h.tensor_index,
            warnings: h.warnings,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// The header, metadata and tensor directory: every byte before the tensor data.
    pub fn header_bytes(&self) -> &[u8] {
        let b = self.bytes();
        &b[..(self.data_start as usize).min(b.len())]
    }

    /// The format version; always 3, the only one accepted.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment: `general.alignment` when it is a nonzero UINT32, else 32.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the tensor data blob: the end of the tensor directory rounded up to
    /// the alignment. It may exceed [`file_size`](Self::file_size) only in a file without
    /// tensors.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// All KV pairs, in file order. Keys are unique (a duplicate is a parse error).
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensor-info records, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The `info.n_bytes()` bytes of a tensor's data, borrowed from the file.
    ///
    /// `info` should come from this file, whose parser checked that the range lies inside it.
    /// A record from another file whose range does not fit here yields an empty slice.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(info.n_bytes));
        match (start, end) {
            (Some(s), Some(e)) => usize::try_from(s)
                .ok()
                .zip(usize::try_from(e).ok())
                .and_then(|(s, e)| self.bytes().get(s..e))
                .unwrap_or(&[]),
            _ => &[],
        }
    }

    /// Reads the tensor data into memory now (one byte per page, in steps of 64 MiB), calling
    /// `progress(done, total)` after each step; returns the bytes covered.
    ///
    /// A mapping is read lazily: without this, an 80 GB model's first prefill stalls on page
    /// faults with nothing to show. Loading it up front gives a progress bar and a first
    /// answer at full speed. It only reads; the pages stay evictable like any file cache.
    pub fn prefault(&self, progress: &mut dyn FnMut(u64, u64)) -> u64 {
        const PAGE: usize = 4096;
        const STEP: usize = 64 << 20;
        let bytes = self.bytes();
        let start = (self.data_start as usize).min(bytes.len());
        let data = &bytes[start..];
        let total = data.len() as u64;
        let mut sum = 0u8;
        for (i, chunk) in data.chunks(STEP).enumerate() {
            for page in chunk.chunks(PAGE) {
                sum ^= page[0];
            }
            progress((i * STEP + chunk.len()) as u64, total);
        }
        // Keeps the reads from being optimised away.
        std::hint::black_box(sum);
        total
    }

    /// Oddities that did not stop the file from loading (misaligned tensors, an ignored
    /// `general.alignment`, over-long tensor names).
    pub fn warnings(&self) -> &[GgufWarning] {
        &self.warnings
    }
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("file_size", &self.file_size())
            .field("alignment", &self.alignment)
            .field("data_start", &self.data_start)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

/// Everything parsed from the bytes, before they are attached to their backing.
struct Header {
    version: u32,
    alignment: u64,
    data_start: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    warnings: Vec<GgufWarning>,
}

/// The alignment a reader derives from the metadata, and a warning if the key was ignored.
pub(crate) fn effective_alignment(
    metadata: &[(String, Value)],
) -> Result<(u64, Option<GgufWarning>)> {
    let Some((_, value)) = metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok((DEFAULT_ALIGNMENT, None));
    };
    let ignored = |reason: String| {
        Ok((
            DEFAULT_ALIGNMENT,
            Some(GgufWarning::AlignmentIgnored { reason }),
        ))
    };
    match *value {
        Value::U32(0) => ignored("it is zero".into()),
        Value::U32(a) if a.is_power_of_two() => Ok((a.into(), None)),
        Value::U32(a) => Err(GgufError::BadAlignment {
            alignment: a.into(),
        }),
        ref other => ignored(format!("its type is {}, not U32", other.value_type())),
    }
}

fn parse(buf: &[u8]) -> Result<Header> {
    let mut p = Parser {
        buf,
        pos: 0,
        context: "magic".into(),
    };
    let magic = p.take(4)?;
    if magic != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    p.context = "header".into();
    let version = p.u32()?;
    if version != VERSION {
        return Err(GgufError::UnsupportedVersion { found: version });
    }
    p.context = "tensor count".into();
    let n_tensors = p.count(MIN_TENSOR_INFO_LEN)?;
    p.context = "KV count".into();
    let n_kv = p.count(MIN_KV_LEN)?;

    let mut metadata = Vec::with_capacity(n_kv.min(RESERVE_CAP));
    let mut key_index = HashMap::with_capacity(n_kv.min(RESERVE_CAP));
    for i in 0..n_kv {
        p.context = format!("key of KV #{i}");
        let key = p.string()?;
        p.context = format!("value of key {key:?}");
        let ty = p.value_type()?;
        let value = p.value(ty, 0)?;
        if key_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.push((key, value));
    }
    let (alignment, alignment_warning) = effective_alignment(&metadata)?;
    let mut warnings: Vec<GgufWarning> = alignment_warning.into_iter().collect();

    let mut tensors = Vec::with_capacity(n_tensors.min(RESERVE_CAP));
    let mut tensor_index = HashMap::with_capacity(n_tensors.min(RESERVE_CAP));
    for i in 0..n_tensors {
        p.context = format!("name of tensor info #{i}");
        let name = p.string()?;
        p.context = format!("tensor info #{i} ({name:?})");
        let n_dims = p.u32()?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                tensor: name,
                n_dims: n_dims.into(),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(p.u64()?);
        }
        let ty_offset = p.pos as u64;
        let ty_id = p.u32()?;
        let ty = GgmlType::from_id(ty_id).ok_or_else(|| GgufError::UnknownGgmlType {
            offset: ty_offset,
            id: ty_id,
            tensor: name.clone(),
        })?;
        let offset = p.u64()?;
        let (n_elements, n_bytes) = tensor_size(&name, &dims, ty)?;
        if tensor_index.insert(name.clone(), tensors.len()).is_some() {
            return Err(GgufError::DuplicateTensor { name });
        }
        if name.len() > MAX_NAME_LEN {
            warnings.push(GgufWarning::LongTensorName {
                tensor: name.clone(),
                len: name.len(),
            });
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
            n_elements,
            n_bytes,
        });
    }

    // Cannot overflow: the position is at most the buffer length and the alignment at most 2^31.
    let data_start = (p.pos as u64).next_multiple_of(alignment);
    let file_size = buf.len() as u64;
    for t in &tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|e| e > file_size) {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                n_bytes: t.n_bytes,
                data_start,
                file_size,
            });
        }
        if !t.offset.is_multiple_of(alignment) {
            warnings.push(GgufWarning::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
    }
    check_overlap(&tensors)?;

    Ok(Header {
        version,
        alignment,
        data_start,
        metadata,
        key_index,
        tensors,
        tensor_index,
        warnings,
    })
}

/// Sorting by offset makes overlap a property of neighbours. Sizes are nonzero (zero dims are
/// refused), so equal offsets always overlap.
fn check_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_unstable_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Both ranges were bounds-checked, so the end cannot overflow.
        if pair[0].offset + pair[0].n_bytes > pair[1].offset {
            return Err(GgufError::OverlappingTensors {
                first: pair[0].name.clone(),
                second: pair[1].name.clone(),
            });
        }
    }
    Ok(())
}

struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    /// What is being read, for error messages; set per KV and per tensor, not per field.
    context: String,
}

impl<'a> Parser<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.pos as u64,
                context: self.context.clone(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining, which is a usize.
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A u64 count of items each at least `min_len` bytes long, checked to fit in what is left.
    fn count(&mut self, min_len: u64) -> Result<usize> {
        let offset = self.pos as u64;
        let count = self.u64()?;
        let available = self.remaining();
        if count > available / min_len {
            return Err(GgufError::CountTooLarge {
                offset,
                context: self.context.clone(),
                count,
                available,
            });
        }
        // count <= available, which came from a usize.
        Ok(count as usize)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let offset = self.pos as u64;
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(GgufError::InvalidUtf8 {
                offset,
                context: self.context.clone(),
            }),
        }
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let offset = self.pos as u64;
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| GgufError::UnknownValueType {
            offset,
            id,
            context: self.context.clone(),
        })
    }

    /// A value of type `ty`; `depth` is the number of arrays it is inside.
    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>()?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ValueType::String => Value::String(self.string()?),
            ValueType::Array => Value::Array(self.array_value(depth + 1)?),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array()?)),
        })
    }

    /// An array at nesting level `depth` (1 for a top-level array).
    fn array_value(&mut self, depth: usize) -> Result<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufError::NestingTooDeep {
                offset: self.pos as u64,
                context: self.context.clone(),
            });
        }
        let elem = self.value_type()?;
        let n = self.count(elem.min_encoded_len())?;
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(n as u64)?.to_vec()),
            ValueType::I8 => Array::I8(self.fixed(n, i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.fixed(n, u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.fixed(n, i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.fixed(n, u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.fixed(n, i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.fixed(n, f32::from_le_bytes)?),
            ValueType::Bool => Array::Bool(self.take(n as u64)?.iter().map(|&b| b != 0).collect()),
            ValueType::U64 => Array::U64(self.fixed(n, u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.fixed(n, i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.fixed(n, f64::from_le_bytes)?),
            ValueType::String => {
                let mut v = Vec::with_capacity(n.min(RESERVE_CAP));
                for _ in 0..n {
                    v.push(self.string()?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::with_capacity(n.min(RESERVE_CAP));
                for _ in 0..n {
                    v.push(self.array_value(depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }

    /// `n` fixed-size little-endian elements. `count` has already bounded `n * N` by the bytes
    /// left, so the product cannot overflow.
    fn fixed<const N: usize, T>(&mut self, n: usize, decode: fn([u8; N]) -> T) -> Result<Vec<T>> {
        let bytes = self.take((n * N) as u64)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                decode(a)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_file_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<GgufFile>();
    }
}
