//! Where the model runs: on the CPU (the reference) or on one CUDA GPU. Sessions, rewinds,
//! forks and the disk cache work the same on both: checkpoints and saved states use the CPU's
//! types ([`Checkpoint`], [`SessionState`]) and the GPU converts at those boundaries.

use std::sync::Arc;

use crate::plan::MemoryPlan;
use dsv4_model::{Checkpoint, Model, Next, Numerics, SessionState, Want};

/// Prompt tokens per prefill step on the CPU: long enough that each weight chunk is read once
/// for many tokens, short enough that a scheduler step stays a fraction of a second.
pub const CPU_PREFILL_PIECE: usize = 512;

/// Which device to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

/// A model ready to run on its device.
pub struct Runner {
    model: Arc<Model>,
    gpu: Option<Gpu>,
}

struct Gpu {
    device: dsv4_cuda::Gpu,
    model: dsv4_cuda::GpuModel,
    /// Tokens a GPU state holds (its buffers are sized for the context up front).
    capacity: u64,
}

/// One session's model state, on the runner's device.
pub enum State {
    Cpu(SessionState),
    Gpu(Box<dsv4_cuda::GpuState>),
}

impl Runner {
    pub fn cpu(model: Arc<Model>) -> Runner {
        Runner { model, gpu: None }
    }

    /// Uploads the weights to GPU `index`; states hold up to `ctx` tokens. The memory plan
    /// for `sessions` resident sessions is checked against the device's free memory first,
    /// and returned for display.
    pub fn cuda(model: Arc<Model>, index: usize, ctx: usize, sessions: usize) -> Result<(Runner, MemoryPlan), String> {
        let device = dsv4_cuda::Gpu::new(index).map_err(|e| e.to_string())?;
        let weights: u64 = model.file.tensors().iter().map(|t| t.n_bytes()).sum();
        let plan = MemoryPlan::gpu(&model.cfg, weights, ctx, sessions);
        let (free, _) = device.mem_info().map_err(|e| e.to_string())?;
        plan.check_gpu(free as u64, sessions)?;
        let gm = dsv4_cuda::GpuModel::load(&device, &model).map_err(|e| format!("uploading the model to GPU {index}: {e}"))?;
        Ok((Runner { model, gpu: Some(Gpu { device, model: gm, capacity: ctx as u64 }) }, plan))
    }

    /// The CPU model (configuration, file, tokenizer metadata).
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn device(&self) -> Device {
        match &self.gpu {
            Some(g) => Device::Cuda(g.device.index()),
            None => Device::Cpu,
        }
    }

    /// Prompt tokens one prefill step should carry on this device. The GPU takes a whole
    /// chunk of its scratch ([`dsv4_cuda::PREFILL_CHUNK`], 1,024 tokens): a chunk of a MoE
    /// layer decodes every routed expert once, so longer chunks spread that cost over more
    /// tokens. The CPU runs 512 (its scheduler steps stay short).
    pub fn prefill_piece(&self) -> usize {
        match &self.gpu {
            Some(_) => dsv4_cuda::PREFILL_CHUNK,
            None => CPU_PREFILL_PIECE,
        }
    }

    /// A description for banners and bench records ("cpu", "cuda:0 NVIDIA H100 …").
    pub fn describe(&self) -> String {
        match &self.gpu {
            Some(g) => format!("cuda:{} {}", g.device.index(), g.device.name()),
            None => "cpu".to_owned(),
        }
    }

    pub fn new_state(&self) -> Result<State, String> {
        match &self.gpu {
            Some(g) => g.model.new_state(&g.device, g.capacity).map(|s| State::Gpu(Box::new(s))).map_err(|e| e.to_string()),
            None => Ok(State::Cpu(self.model.new_state())),
        }
    }

    /// Feeds `tokens`; returns the logits after the last one.
    pub fn forward(&self, st: &mut State, tokens: &[u32], numerics: Numerics) -> Result<Vec<f32>, String> {
        match (st, &self.gpu) {
            (State::Cpu(s), None) => {
                self.model.forward(s, tokens, false, numerics).map_err(|e| e.to_string())?.pop().ok_or_else(|| "no tokens to run".to_owned())
            }
            (State::Gpu(s), Some(g)) => g.model.forward(s, tokens, numerics).map_err(|e| e.to_string()),
            _ => Err("a session state from another device".to_owned()),
        }
    }

    /// Feeds each state its own tokens in one step (continuous batching); returns what the
    /// next draw of each needs (`wants`) from the logits after its list's last token
    /// (`Next::Logits` of nothing for an empty list). A session's results are those it would
    /// get alone: the CPU batches weight reads across sessions with bit-identical arithmetic
    /// and reduces each row on the host; the GPU decodes every one-token list in one step
    /// (each weight read once for all of them), reduces those rows where they are and moves
    /// only the reductions, and runs prompt chunks session by session.
    pub fn forward_batch(&self, states: &mut [&mut State], tokens: &[&[u32]], wants: &[Want], numerics: Numerics) -> Result<Vec<Next>, String> {
        if states.len() != tokens.len() || wants.len() != tokens.len() {
            return Err(format!("{} states for {} token lists and {} wants", states.len(), tokens.len(), wants.len()));
        }
        match &self.gpu {
            None => {
                let mut cpu = Vec::with_capacity(states.len());
                for st in states.iter_mut() {
                    match &mut **st {
                        State::Cpu(s) => cpu.push(s),
                        State::Gpu(_) => return Err("a GPU state on a CPU runner".to_owned()),
                    }
                }
                let rows = self.model.forward_sessions(&mut cpu, tokens, numerics).map_err(|e| e.to_string())?;
                Ok(rows.into_iter().zip(wants).map(|(row, &w)| Next::of(row, w)).collect())
            }
            Some(g) => {
                // Prompt chunks run session by session (each already reads a matrix once for
                // all its tokens); the one-token calls share one decode step.
                let mut out = vec![Next::Logits(Vec::new()); states.len()];
                let (mut dec, mut dec_toks, mut dec_wants, mut dec_at) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                for (i, (st, t)) in states.iter_mut().zip(tokens).enumerate() {
                    match (&mut **st, t.len()) {
                        (_, 0) => {}
                        (State::Gpu(s), 1) => {
                            dec.push(&mut **s);
                            dec_toks.push(t[0]);
                            dec_wants.push(wants[i]);
                            dec_at.push(i);
                        }
                        (st, _) => out[i] = Next::Logits(self.forward(st, t, numerics)?),
                    }
                }
                if !dec.is_empty() {
                    let picked = g.model.forward_step_picked(&mut dec, &dec_toks, &dec_wants, numerics).map_err(|e| e.to_string())?;
                    for (i, next) in dec_at.into_iter().zip(picked) {
                        out[i] = next;
                    }
                }
                Ok(out)
            }
        }
    }

    pub fn checkpoint(&self, st: &State) -> Result<Checkpoint, String> {
        match (st, &self.gpu) {
            (State::Cpu(s), _) => Ok(s.checkpoint()),
            (State::Gpu(s), Some(g)) => g.model.checkpoint(s).map_err(|e| e.to_string()),
            (State::Gpu(_), None) => Err("a GPU state on a CPU runner".to_owned()),
        }
    }

    pub fn restore(&self, st: &mut State, c: &Checkpoint) -> Result<(), String> {
        match (st, &self.gpu) {
            (State::Cpu(s), _) => s.restore(c).map_err(|e| e.to_string()),
            (State::Gpu(s), Some(g)) => g.model.restore(s, c).map_err(|e| e.to_string()),
            (State::Gpu(_), None) => Err("a GPU state on a CPU runner".to_owned()),
        }
    }

    /// The whole state in host memory (disk saves).
    pub fn to_host(&self, st: &State) -> Result<SessionState, String> {
        match (st, &self.gpu) {
            (State::Cpu(s), _) => Ok(s.clone()),
            (State::Gpu(s), Some(g)) => g.model.to_host(s).map_err(|e| e.to_string()),
            (State::Gpu(_), None) => Err("a GPU state on a CPU runner".to_owned()),
        }
    }

    /// A state on this runner's device from a host state (disk restores).
    pub fn from_host(&self, host: SessionState) -> Result<State, String> {
        match &self.gpu {
            Some(g) => g.model.state_from_host(&g.device, &host, g.capacity).map(|s| State::Gpu(Box::new(s))).map_err(|e| e.to_string()),
            None => Ok(State::Cpu(host)),
        }
    }

    /// An independent copy (forking a session).
    pub fn copy(&self, st: &State) -> Result<State, String> {
        match st {
            State::Cpu(s) => Ok(State::Cpu(s.clone())),
            State::Gpu(_) => self.from_host(self.to_host(st)?),
        }
    }
}

impl State {
    /// Tokens the state has consumed.
    pub fn pos(&self) -> u64 {
        match self {
            State::Cpu(s) => s.pos,
            State::Gpu(s) => s.pos(),
        }
    }
}
