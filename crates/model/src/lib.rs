//! DeepSeek V4 Flash: the model's geometry (from GGUF metadata), its tensor layout, and the
//! exact forward pass on the CPU, the reference every other backend is checked against.
//!
//! Where things live: `config` (geometry), `layout` (tensor inventory), `weights` (binding),
//! `numerics` (official vs plain arithmetic), `ops` (norms, RoPE, hyper-connections),
//! `attention`, `compressor`, `indexer`, `moe`, `forward` (the layer loop), `state`
//! (a session's per-layer state), `model` (loading and the public entry point), `pick` (what
//! a draw of the next token needs from the logits).

pub mod attention;
pub mod compressor;
pub mod config;
pub mod forward;
pub mod indexer;
pub mod layout;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod numerics;
pub mod ops;
pub mod pick;
pub mod state;
pub mod weights;

pub use config::{ConfigError, LayerKind, ModelConfig};
pub use layout::{ExpertMix, LayoutIssue, TensorSpec};
pub use model::{ForwardError, LoadError, Model, Mtp};
pub use mtp::MtpState;
pub use numerics::Numerics;
pub use pick::{Next, Reduced, Want};
pub use state::{Checkpoint, SessionState};
