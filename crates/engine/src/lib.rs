//! Turning a model into text: sampling, stop conditions and the generation loop over a live
//! session. The server and the CLI drive generation through this crate and never see tensors.

pub mod batch;
pub mod disk;
pub mod generate;
pub mod loop_guard;
pub mod plan;
pub mod pool;
pub mod runner;
pub mod sampler;
pub mod stop;

pub use batch::{BatchEvent, JobId, Scheduler, Verdict};
pub use disk::{DiskCache, DiskEvent};
pub use generate::{Finish, GenError, Generation, GenerationParams, PrefillStats, Session, Step};
pub use loop_guard::LoopGuard;
pub use plan::MemoryPlan;
pub use pool::{Placement, SessionPool};
pub use runner::{Device, Runner, State, CPU_PREFILL_PIECE};
pub use sampler::{Sampler, SamplingParams};
pub use stop::StopMatcher;
