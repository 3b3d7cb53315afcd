//! Errors and warnings of reading and writing.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading or writing a GGUF file.
///
/// Parse errors name the problem and where it is: a byte offset into the file and, where one
/// is known, the key or tensor being read. Offsets are absolute (from the start of the file).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening or mapping a file failed.
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },

    /// The writer's sink failed.
    #[error("write failed: {0}")]
    Io(#[from] io::Error),

    /// The file ends inside a field.
    #[error(
        "file truncated at offset {offset}: {context} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        offset: u64,
        context: String,
        needed: u64,
        available: u64,
    },

    /// The first four bytes are not `GGUF`.
    #[error("bad magic {found:02x?} at offset 0, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },

    /// A version other than 3.
    #[error("GGUF version {found} at offset 4 is not supported (only version 3 is)")]
    UnsupportedVersion { found: u32 },

    /// A metadata value type id outside 0..=12; the rest of the file cannot be located.
    #[error("unknown value type id {id} at offset {offset} ({context})")]
    UnknownValueType {
        offset: u64,
        id: u32,
        context: String,
    },

    /// A tensor type id that ggml does not define.
    #[error("unknown ggml type id {id} at offset {offset} (tensor {tensor:?})")]
    UnknownGgmlType {
        offset: u64,
        id: u32,
        tensor: String,
    },

    /// A tensor, KV or array count that cannot fit in the bytes that follow it.
    #[error(
        "{context} at offset {offset}: count {count} cannot fit in the {available} bytes left"
    )]
    CountTooLarge {
        offset: u64,
        context: String,
        count: u64,
        available: u64,
    },

    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`](crate::MAX_ARRAY_DEPTH).
    #[error("arrays nested deeper than {max} at offset {offset} ({context})", max = crate::MAX_ARRAY_DEPTH)]
    NestingTooDeep { offset: u64, context: String },

    /// A key, string value or tensor name that is not UTF-8.
    #[error("{context} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: u64, context: String },

    /// A tensor with no dimensions or more than [`MAX_DIMS`](crate::MAX_DIMS).
    #[error("tensor {tensor:?} has {n_dims} dimensions; 1 to {max} are accepted", max = crate::MAX_DIMS)]
    BadDimCount { tensor: String, n_dims: u64 },

    /// A tensor with a dimension of size 0.
    #[error("tensor {tensor:?} has a zero dimension: {dims:?}")]
    ZeroDim { tensor: String, dims: Vec<u64> },

    /// A tensor whose element count or byte size does not fit in u64.
    #[error("tensor {tensor:?} with dims {dims:?} has more elements or bytes than fit in u64")]
    SizeOverflow { tensor: String, dims: Vec<u64> },

    /// A row (`ne[0]` elements) that is not a whole number of quantization blocks.
    #[error(
        "tensor {tensor:?}: ne[0] = {ne0} is not a multiple of the {ty} block of {block} elements"
    )]
    PartialBlock {
        tensor: String,
        ty: GgmlType,
        ne0: u64,
        block: u64,
    },

    /// Tensor data that runs past the end of the file.
    #[error(
        "tensor {tensor:?}: {n_bytes} bytes at data offset {offset} (data starts at {data_start}) \
         run past the end of the {file_size}-byte file"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        n_bytes: u64,
        data_start: u64,
        file_size: u64,
    },

    /// Two tensors with the same name.
    #[error("duplicate tensor name {name:?}")]
    DuplicateTensor { name: String },

    /// Two KVs with the same key.
    #[error("duplicate metadata key {key:?}")]
    DuplicateKey { key: String },

    /// Two tensors whose data ranges share bytes.
    #[error("tensors {first:?} and {second:?} overlap")]
    OverlappingTensors { first: String, second: String },

    /// A UINT32 `general.alignment` that is not a power of two.
    #[error("general.alignment = {alignment} is not a power of two")]
    BadAlignment { alignment: u64 },

    /// The writer was given a tensor name longer than ggml accepts.
    #[error("tensor name {name:?} is {len} bytes; ggml allows at most {max}", max = crate::MAX_NAME_LEN)]
    NameTooLong { name: String, len: usize },

    /// The writer was given a metadata array nested deeper than the reader accepts.
    #[error("value of key {key:?} nests arrays deeper than {max}", max = crate::MAX_ARRAY_DEPTH)]
    ValueTooDeep { key: String },

    /// Streamed tensor data did not match the declared size.
    #[error("tensor {tensor:?} is declared as {expected} bytes but {got} were written")]
    WrongByteCount {
        tensor: String,
        expected: u64,
        got: u64,
    },

    /// Bytes written after every declared tensor was finished.
    #[error("{got} bytes written after the last declared tensor was finished")]
    NoTensorPending { got: u64 },

    /// `finish` before every declared tensor was written.
    #[error("{missing} declared tensors were not written, starting with {next:?}")]
    TensorsMissing { next: String, missing: usize },

    /// The number of data slices handed to a one-shot write differs from the tensor count.
    #[error("{got} tensor data slices given for {expected} declared tensors")]
    DataCountMismatch { expected: usize, got: usize },

    /// A previous write failed, so the output is incomplete and no further writes are taken.
    #[error("an earlier write failed; the output is incomplete")]
    Poisoned,
}

/// Something odd about a file that was read anyway.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GgufWarning {
    /// A tensor whose offset is not a multiple of the alignment. ggml requires alignment but
    /// ds4 never checks it, so such a file still loads there.
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    /// `general.alignment` was present but ignored (not UINT32, or zero): the default applies.
    AlignmentIgnored { reason: String },
    /// A tensor name longer than ggml's 63 bytes; ggml would refuse the file.
    LongTensorName { tensor: String, len: usize },
}

impl fmt::Display for GgufWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufWarning::MisalignedTensor {
                tensor,
                offset,
                alignment,
            } => write!(
                f,
                "tensor {tensor:?} at data offset {offset} is not aligned to {alignment} bytes"
            ),
            GgufWarning::AlignmentIgnored { reason } => {
                write!(f, "general.alignment ignored: {reason}")
            }
            GgufWarning::LongTensorName { tensor, len } => write!(
                f,
                "tensor name {tensor:?} is {len} bytes, longer than ggml's {}",
                crate::MAX_NAME_LEN
            ),
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
