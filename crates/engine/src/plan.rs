//! The memory a model needs at a given context, computed before anything is loaded, so a
//! configuration that cannot fit is refused with numbers instead of failing half-way.

use crate::generate::MAX_CHECKPOINTS;
use dsv4_model::{LayerKind, ModelConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    pub ctx: usize,
    /// Weight bytes (the GGUF's tensor data).
    pub weights: u64,
    /// Session state at a full context: raw windows, compressed and indexer rows, frontiers.
    pub kv: u64,
    /// Rewind checkpoints a session keeps.
    pub checkpoints: u64,
    /// Activations of one prefill chunk.
    pub buffers: u64,
}

impl MemoryPlan {
    /// The CPU backend's plan: state is f32, weights are read in place from the mapped file.
    pub fn cpu(cfg: &ModelConfig, weights: u64, ctx: usize, prefill_chunk: usize) -> MemoryPlan {
        let (d, id, f) = (cfg.head_dim as u64, cfg.indexer_head_dim as u64, 4u64);
        let ctx64 = ctx as u64;
        let raw = cfg.sliding_window as u64 * d * f;
        let mut kv = 0;
        let mut frontier = 0;
        for kind in &cfg.layer_kinds {
            kv += raw;
            match *kind {
                LayerKind::Window => {}
                LayerKind::Csa => {
                    kv += ctx64.div_ceil(4) * (d + id) * f;
                    frontier += 2 * 8 * (2 * d + 2 * id) * f;
                }
                LayerKind::Hca { ratio } => {
                    kv += ctx64.div_ceil(ratio as u64) * d * f;
                    frontier += 2 * ratio as u64 * d * f;
                }
            }
        }
        let checkpoints = MAX_CHECKPOINTS as u64 * (cfg.n_layer as u64 * raw + frontier);
        let width = (4 * cfg.hc_count * cfg.n_embd + 3 * cfg.n_head * cfg.head_dim) as u64;
        let buffers = prefill_chunk as u64 * width * f + cfg.vocab_size as u64 * f * 2;
        MemoryPlan { ctx, weights, kv: kv + frontier, checkpoints, buffers }
    }

    /// The CUDA backend's plan, in device memory: the weights uploaded whole, one full-context
    /// state per resident session (f32 rows, allocated up front, with one token's attention
    /// scores over every row of the longest layer and its indexer scores and mask), once the
    /// prefill chunk's scratch (`PREFILL_CHUNK` tokens' activations and logits, each chunk
    /// token's indexer scores and mask over every row; the model holds one for all sessions),
    /// and once the decode step's scratch for `MAX_STEP_BATCH` sessions. Rewind checkpoints
    /// live in host memory.
    pub fn gpu(cfg: &ModelConfig, weights: u64, ctx: usize, sessions: usize) -> MemoryPlan {
        let chunk = dsv4_cuda::PREFILL_CHUNK;
        let one = MemoryPlan::cpu(cfg, weights, ctx, chunk);
        let rows = cfg.layer_kinds.iter().map(|k| (ctx as u64).checked_div(k.ratio() as u64).unwrap_or(0)).max().unwrap_or(0);
        let att = dsv4_cuda::state_scratch_bytes(cfg, ctx as u64);
        // Every token of a chunk has its logits row (all-position logits; 530 MB on Flash).
        let logits = (chunk * cfg.vocab_size * 4) as u64;
        // The chunk's indexer scores (f32) and masks (u8): a row per token over every row.
        let scores = chunk as u64 * rows * 5;
        // The partial sums of the F16 products' column splits.
        let part = (dsv4_cuda::quant::matmul::FLOAT_PART_FLOATS * 4) as u64;
        let prefill = one.buffers + logits + scores + part;
        let step = dsv4_cuda::step_batch_bytes(cfg);
        let n = sessions.max(1) as u64;
        MemoryPlan { ctx, weights, kv: one.kv * n, checkpoints: 0, buffers: att * n + prefill + step }
    }

    /// Refuses a GPU plan that does not fit `free` bytes of device memory.
    pub fn check_gpu(&self, free: u64, sessions: usize) -> Result<(), String> {
        let need = self.weights + self.kv + self.buffers;
        if need <= free {
            return Ok(());
        }
        Err(format!(
            "the GPU has {} free but this needs {} (weights {}, KV {} for {} session(s) at a {}-token context, buffers {}); \
             use a smaller --ctx, fewer --sessions, a GPU with more memory, or --backend cpu",
            gib(free),
            gib(need),
            gib(self.weights),
            gib(self.kv),
            sessions.max(1),
            self.ctx,
            gib(self.buffers)
        ))
    }

    /// The same plan for `n` resident sessions, each with its own state and checkpoints.
    pub fn with_sessions(mut self, n: usize) -> MemoryPlan {
        self.kv *= n.max(1) as u64;
        self.checkpoints *= n.max(1) as u64;
        self
    }

    /// Memory the plan must hold beyond the mapped weights.
    pub fn working_set(&self) -> u64 {
        self.kv + self.checkpoints + self.buffers
    }

    /// Refuses a plan whose working set exceeds `available` bytes of memory.
    pub fn check(&self, available: Option<u64>) -> Result<(), String> {
        match available {
            Some(avail) if self.working_set() > avail => Err(format!(
                "a {}-token context needs {} of session memory ({} KV, {} checkpoints, {} buffers) but only {} is available; \
                 use a smaller --ctx",
                self.ctx,
                gib(self.working_set()),
                gib(self.kv),
                gib(self.checkpoints),
                gib(self.buffers),
                gib(avail)
            )),
            _ => Ok(()),
        }
    }

    pub fn gpu_summary(&self) -> String {
        format!(
            "GPU memory plan at ctx {}: weights {}, KV {}, buffers {}",
            self.ctx,
            gib(self.weights),
            gib(self.kv),
            gib(self.buffers)
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "memory plan at ctx {}: weights {} (mapped), KV {}, checkpoints {}, buffers {}",
            self.ctx,
            gib(self.weights),
            gib(self.kv),
            gib(self.checkpoints),
            gib(self.buffers)
        )
    }
}

pub fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// `MemAvailable` from /proc/meminfo, where there is one.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_at_one_million_tokens_matches_the_spec_arithmetic() {
        // ARCH.md §5: compressed rows 21·262,146·512·4 + 20·8,194·512·4 ≈ 11.61 GB and indexer
        // rows 21·262,146·128·4 ≈ 2.82 GB (with two spare rows per layer there).
        let p = MemoryPlan::cpu(&ModelConfig::flash(43), 0, 1 << 20, 512);
        let rows = 21 * 262_144 * 512 * 4 + 20 * 8_192 * 512 * 4 + 21 * 262_144 * 128 * 4u64;
        let raw = 43 * 128 * 512 * 4u64;
        assert!(p.kv >= rows + raw && p.kv < rows + raw + 20_000_000, "{}", p.kv);
        assert!(p.check(Some(1 << 30)).unwrap_err().contains("use a smaller --ctx"));
        assert!(p.check(Some(1 << 40)).is_ok());
        assert!(p.check(None).is_ok());
    }

    #[test]
    fn gpu_plan_counts_weights_and_every_session() {
        let cfg = ModelConfig::flash(43);
        let weights = 86_714_775_900;
        let one = MemoryPlan::gpu(&cfg, weights, 32768, 1);
        let four = MemoryPlan::gpu(&cfg, weights, 32768, 4);
        assert_eq!(four.kv, 4 * one.kv);
        // The prefill scratch is the model's, once: a session adds only its own decode
        // scores (≈ 2 MB at 32K), while the one scratch holds a chunk's logits (530 MB).
        let extra = (four.buffers - one.buffers) / 3;
        assert!(extra > 1_000_000 && extra < 10_000_000, "{extra}");
        assert!(one.buffers > 530_000_000, "{}", one.buffers);
        // 32K context: compressed + indexer rows ≈ 0.45 GB a session.
        assert!(one.kv > 400_000_000 && one.kv < 500_000_000, "{}", one.kv);
        // An H200 (≈139 GiB free) holds the q2 model with four 32K sessions, an H100 does not.
        assert!(four.check_gpu(139 << 30, 4).is_ok());
        let err = four.check_gpu(78 << 30, 4).unwrap_err();
        assert!(err.contains("--backend cpu") && err.contains("4 session"), "{err}");
        // At 1M tokens each session's rows are ~14.4 GB: four fit an H200 beside the weights
        // (≈134 GiB), eight do not.
        assert!(MemoryPlan::gpu(&cfg, weights, 1 << 20, 4).check_gpu(139 << 30, 4).is_ok());
        assert!(MemoryPlan::gpu(&cfg, weights, 1 << 20, 8).check_gpu(139 << 30, 8).is_err());
    }
}
