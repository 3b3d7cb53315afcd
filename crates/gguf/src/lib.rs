//! The GGUF v3 container: zero-copy reading of a memory-mapped file and streamed writing.
//!
//! Reading: [`GgufFile::open`] maps a file and parses its header, metadata and tensor
//! directory; [`GgufFile::tensor_data`] borrows a tensor's bytes from the mapping. Every
//! malformed input is a [`GgufError`] naming the problem and where it is; nothing panics or
//! reads out of bounds, and no count from the file is trusted before it is checked against the
//! bytes that remain.
//!
//! Writing: [`GgufWriter`] collects metadata and tensor shapes, then [`GgufWriter::begin`]
//! writes the header and returns a [`TensorStream`] through which the tensor bytes are
//! streamed in declaration order, so files far larger than memory can be written. The byte
//! layout is the one gguf-py 0.19.0 produces for the same content.
//!
//! Where the format leaves room, the reader decides:
//! - only version 3 is read;
//! - a tensor has 1 to [`MAX_DIMS`] (8) dimensions, as ds4 accepts, none of them zero;
//! - arrays nest at most [`MAX_ARRAY_DEPTH`] (8) deep;
//! - duplicate keys and duplicate tensor names are errors (ggml refuses both);
//! - tensors may not overlap, and must lie wholly inside the file;
//! - `general.alignment` counts only as a nonzero UINT32 (as in ds4), and must then be a
//!   power of two;
//! - a misaligned tensor offset or a tensor name over 63 bytes loads, with a
//!   [`GgufWarning`];
//! - a BOOL byte other than 0 reads as true.

mod error;
mod reader;
mod tensor;
mod types;
mod value;
mod writer;

pub use error::{GgufError, GgufWarning, Result};
pub use reader::GgufFile;
pub use tensor::TensorInfo;
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::{GgufWriter, TensorStream};

/// The first four bytes of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The only format version read or written.
pub const VERSION: u32 = 3;
/// The data alignment when `general.alignment` is absent, zero or not a UINT32.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// The most dimensions a tensor may have (ds4 accepts 1 to 8; ggml itself stops at 4).
pub const MAX_DIMS: usize = 8;
/// The most levels of nested arrays in a metadata value (ds4 skips up to 8).
pub const MAX_ARRAY_DEPTH: usize = 8;
/// The longest tensor name ggml accepts, in bytes (64 with its NUL). The writer refuses longer
/// names; the reader accepts them with a warning.
pub const MAX_NAME_LEN: usize = 63;
