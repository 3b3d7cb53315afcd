//! The GGUF v3 container: zero-copy reading of a memory-mapped file and writing.

mod types;

pub use types::GgmlType;
