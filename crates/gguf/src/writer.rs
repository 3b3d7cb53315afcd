//! Writing GGUF v3 files whose tensor data is streamed, never held in memory.
//!
//! The layout matches gguf-py's `GGUFWriter`: KVs and tensors in the order they were added,
//! each tensor's offset the previous one's end rounded up to the alignment, zero padding after
//! the tensor directory and after every tensor (including the last, so the file length is a
//! multiple of the alignment).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{GgufError, Result};
use crate::reader::effective_alignment;
use crate::tensor::tensor_size;
use crate::value::{Array, Value};
use crate::{GgmlType, ALIGNMENT_KEY, MAGIC, MAX_ARRAY_DEPTH, MAX_NAME_LEN, VERSION};

struct PlannedTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    n_bytes: u64,
}

/// Collects the metadata and the tensor directory of a file to write.
///
/// The alignment is whatever a reader will derive from the metadata: `general.alignment` if
/// the caller adds it as a nonzero UINT32, else 32. The writer adds no keys of its own.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PlannedTensor>,
    names: HashSet<String>,
}

impl GgufWriter {
    /// An empty file: no KVs, no tensors.
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Appends a KV. Refuses a duplicate key, arrays nested deeper than the reader accepts, and
    /// a UINT32 `general.alignment` that is not a power of two.
    pub fn add_kv(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Result<()> {
        let key = key.into();
        let value = value.into();
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        if let Value::Array(a) = &value {
            if a.depth() > MAX_ARRAY_DEPTH {
                return Err(GgufError::ValueTooDeep { key });
            }
        }
        if key == ALIGNMENT_KEY {
            effective_alignment(&[(key.clone(), value.clone())])?;
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares the next tensor; its data will follow the previous tensor's. `dims` is in GGUF
    /// `ne` order. Refuses names over 63 bytes, duplicate names, and the shapes the reader
    /// refuses (0 or more than 8 dims, a zero dim, rows of partial blocks, sizes past u64).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<()> {
        let name = name.into();
        if name.len() > MAX_NAME_LEN {
            let len = name.len();
            return Err(GgufError::NameTooLong { name, len });
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        let (_, n_bytes) = tensor_size(&name, dims, ty)?;
        self.names.insert(name.clone());
        self.tensors.push(PlannedTensor {
            name,
            dims: dims.to_vec(),
            ty,
            n_bytes,
        });
        Ok(())
    }

    /// The data alignment the file will have.
    pub fn alignment(&self) -> u64 {
        // add_kv validated the key, so this cannot fail.
        effective_alignment(&self.metadata).map_or(crate::DEFAULT_ALIGNMENT, |(a, _)| a)
    }

    /// Writes everything before the tensor data (header, KVs, tensor directory, padding) and
    /// returns the stream through which the tensors' bytes must follow, in declaration order.
    pub fn begin<W: Write>(self, mut w: W) -> Result<TensorStream<W>> {
        let alignment = self.alignment();
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = t
                .n_bytes
                .checked_next_multiple_of(alignment)
                .and_then(|padded| offset.checked_add(padded))
                .ok_or_else(|| GgufError::SizeOverflow {
                    tensor: t.name.clone(),
                    dims: t.dims.clone(),
                })?;
        }
        let pad = (out.len() as u64).next_multiple_of(alignment) - out.len() as u64;
        w.write_all(&out)?;
        write_zeros(&mut w, pad)?;
        Ok(TensorStream {
            w,
            alignment,
            tensors: self
                .tensors
                .into_iter()
                .map(|t| (t.name, t.n_bytes))
                .collect(),
            next: 0,
            written: 0,
            poisoned: false,
        })
    }

    /// Writes the whole file with in-memory tensor data, one slice per declared tensor, in
    /// declaration order. Returns the sink.
    pub fn write_all<W: Write>(self, w: W, data: &[&[u8]]) -> Result<W> {
        if data.len() != self.tensors.len() {
            return Err(GgufError::DataCountMismatch {
                expected: self.tensors.len(),
                got: data.len(),
            });
        }
        let mut stream = self.begin(w)?;
        for d in data {
            stream.write_tensor(d)?;
        }
        stream.finish()
    }

    /// [`write_all`](Self::write_all) to a new file at `path`.
    pub fn write_to_path(self, path: impl AsRef<Path>, data: &[&[u8]]) -> Result<()> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| GgufError::Open {
            path: path.to_owned(),
            source,
        })?;
        self.write_all(BufWriter::new(file), data)?
            .into_inner()
            .map_err(|e| GgufError::Io(e.into_error()))?
            .sync_all()?;
        Ok(())
    }
}

/// The data section of a file being written: the tensors' bytes, in declaration order.
///
/// Dropping the stream before [`finish`](Self::finish) leaves a truncated file.
pub struct TensorStream<W: Write> {
    w: W,
    alignment: u64,
    tensors: Vec<(String, u64)>,
    /// Index of the tensor being written.
    next: usize,
    /// Bytes of that tensor written so far.
    written: u64,
    poisoned: bool,
}

impl<W: Write> TensorStream<W> {
    /// The name of the tensor whose bytes are expected next, or `None` when all are written.
    pub fn current_tensor(&self) -> Option<&str> {
        self.tensors.get(self.next).map(|(n, _)| n.as_str())
    }

    /// Appends a chunk of the current tensor's bytes. A chunk that would run past the tensor's
    /// size is refused whole, before anything is written.
    pub fn write_tensor_bytes(&mut self, chunk: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        let Some((name, n_bytes)) = self.tensors.get(self.next) else {
            return Err(GgufError::NoTensorPending {
                got: chunk.len() as u64,
            });
        };
        let got = self.written.saturating_add(chunk.len() as u64);
        if got > *n_bytes {
            return Err(GgufError::WrongByteCount {
                tensor: name.clone(),
                expected: *n_bytes,
                got,
            });
        }
        let r = self.w.write_all(chunk);
        self.io(r)?;
        self.written = got;
        Ok(())
    }

    /// Ends the current tensor: checks that all its bytes were written and pads to the
    /// alignment. On a short count nothing is written and more bytes may still follow.
    pub fn finish_tensor(&mut self) -> Result<()> {
        self.check_poisoned()?;
        let Some((name, n_bytes)) = self.tensors.get(self.next) else {
            return Err(GgufError::NoTensorPending { got: 0 });
        };
        if self.written != *n_bytes {
            return Err(GgufError::WrongByteCount {
                tensor: name.clone(),
                expected: *n_bytes,
                got: self.written,
            });
        }
        let pad = n_bytes.next_multiple_of(self.alignment) - n_bytes;
        let r = write_zeros(&mut self.w, pad);
        self.io(r)?;
        self.next += 1;
        self.written = 0;
        Ok(())
    }

    /// Writes a whole tensor in one call: [`write_tensor_bytes`](Self::write_tensor_bytes)
    /// then [`finish_tensor`](Self::finish_tensor). A wrong length is refused before anything
    /// is written.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        if let Some((name, n_bytes)) = self.tensors.get(self.next) {
            let got = self.written.saturating_add(data.len() as u64);
            if got != *n_bytes {
                return Err(GgufError::WrongByteCount {
                    tensor: name.clone(),
                    expected: *n_bytes,
                    got,
                });
            }
        }
        self.write_tensor_bytes(data)?;
        self.finish_tensor()
    }

    /// Checks that every declared tensor was written, flushes, and returns the sink.
    pub fn finish(mut self) -> Result<W> {
        self.check_poisoned()?;
        if let Some((next, _)) = self.tensors.get(self.next) {
            return Err(GgufError::TensorsMissing {
                next: next.clone(),
                missing: self.tensors.len() - self.next,
            });
        }
        let r = self.w.flush();
        self.io(r)?;
        Ok(self.w)
    }

    fn check_poisoned(&self) -> Result<()> {
        if self.poisoned {
            Err(GgufError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// After a failed write the sink holds an unknown prefix, so every later call is refused.
    fn io(&mut self, r: std::io::Result<()>) -> Result<()> {
        r.map_err(|e| {
            self.poisoned = true;
            GgufError::Io(e)
        })
    }
}

fn write_zeros(w: &mut impl Write, mut n: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::Array(a) => put_array(out, a),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

fn put_array(out: &mut Vec<u8>, a: &Array) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
}
