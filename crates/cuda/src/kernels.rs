//! Every CUDA source of the crate, embedded at build time. The device code is compiled at
//! start-up by NVRTC ([`crate::nvrtc`]); the compile-check test walks [`ALL_SOURCES`], so a
//! `.cu` file added here is checked in CI without a GPU.

/// One `.cu` file: `path` (relative to `crates/cuda/src`, for messages and as NVRTC's program
/// name) and its text.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    pub path: &'static str,
    pub code: &'static str,
}

/// The header every source may `#include`, handed to NVRTC in memory (no include path needed).
pub const COMMON_HEADER_NAME: &str = "dsv4_common.cuh";
pub const COMMON_HEADER: &str = include_str!("common.cuh");

pub const MATVEC: KernelSource = KernelSource {
    path: "quant/matvec.cu",
    code: include_str!("quant/matvec.cu"),
};

pub const MATMUL: KernelSource = KernelSource {
    path: "quant/matmul.cu",
    code: include_str!("quant/matmul.cu"),
};

pub const MMQ: KernelSource = KernelSource {
    path: "quant/mmq.cu",
    code: include_str!("quant/mmq.cu"),
};

pub const UTIL: KernelSource = KernelSource {
    path: "util.cu",
    code: include_str!("util.cu"),
};

pub const MODEL_OPS: KernelSource = KernelSource {
    path: "model/ops.cu",
    code: include_str!("model/ops.cu"),
};

pub const MODEL_ATTENTION: KernelSource = KernelSource {
    path: "model/attention.cu",
    code: include_str!("model/attention.cu"),
};

pub const MODEL_COMPRESSOR: KernelSource = KernelSource {
    path: "model/compressor.cu",
    code: include_str!("model/compressor.cu"),
};

pub const MODEL_CHUNK: KernelSource = KernelSource {
    path: "model/chunk.cu",
    code: include_str!("model/chunk.cu"),
};

pub const MODEL_MOE: KernelSource = KernelSource {
    path: "model/moe.cu",
    code: include_str!("model/moe.cu"),
};

pub const MODEL_PICK: KernelSource = KernelSource {
    path: "model/pick.cu",
    code: include_str!("model/pick.cu"),
};

pub const MODEL_NUMERICS: KernelSource = KernelSource {
    path: "model/numerics.cu",
    code: include_str!("model/numerics.cu"),
};

/// The model runner's sources and the kernels the host launches from each.
pub const MODEL_KERNELS: &[(KernelSource, &[&str])] = &[
    (
        MODEL_OPS,
        &[
            "embed", "hc_pre", "hc_proj", "hc_mix_step", "hc_out_step", "hc_norm_step", "hc_post", "norm_rope", "rope_qkv_step", "swiglu", "swiglu_step", "sum_parts", "sum_post",
            "gather_rows", "scatter_rows",
        ],
    ),
    (MODEL_ATTENTION, &["attend", "attend_split_step", "attend_merge_step", "index_scores", "index_scores_step", "topk_mask", "topk_mask_step"]),
    (MODEL_COMPRESSOR, &["comp_push", "comp_push_step"]),
    (MODEL_CHUNK, &["comp_chunk", "comp_frontier", "copy_f32", "ring_push", "attend_chunk", "attend_chunk_mma", "index_scores_chunk", "topk_mask_chunk"]),
    (MODEL_MOE, &["route", "group_picks"]),
    (MODEL_PICK, &["reduce_logits"]),
    (MODEL_NUMERICS, &["quant_q8_0", "quant_q8_k", "kv_round", "kv_round_step", "index_round", "index_round_step"]),
];

pub const ALL_SOURCES: &[KernelSource] = &[
    MATVEC,
    MATMUL,
    MMQ,
    UTIL,
    MODEL_OPS,
    MODEL_ATTENTION,
    MODEL_COMPRESSOR,
    MODEL_CHUNK,
    MODEL_MOE,
    MODEL_PICK,
    MODEL_NUMERICS,
];

/// Development aid: with `DSV4_KERNEL_DIR=<dir>` (a copy of `crates/cuda/src`), kernels and
/// the common header are read from `<dir>/<path>` at run time instead of the embedded text,
/// so a kernel can be edited and re-run on a GPU machine without rebuilding the binaries.
/// Files missing there fall back to the embedded text.
pub const KERNEL_DIR_ENV: &str = "DSV4_KERNEL_DIR";

fn override_text(path: &str) -> Option<&'static str> {
    let dir = std::env::var_os(KERNEL_DIR_ENV).filter(|d| !d.is_empty())?;
    let text = std::fs::read_to_string(std::path::Path::new(&dir).join(path)).ok()?;
    // Leaked once per load: a development path, a few kilobytes.
    Some(Box::leak(text.into_boxed_str()))
}

impl KernelSource {
    /// This source as it will be compiled: the embedded text, or its override (see
    /// [`KERNEL_DIR_ENV`]).
    pub fn resolved(&self) -> KernelSource {
        match override_text(self.path) {
            Some(code) => KernelSource {
                path: self.path,
                code,
            },
            None => *self,
        }
    }
}

/// The common header as it will be compiled (embedded, or its override).
pub fn common_header() -> &'static str {
    static HEADER: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    HEADER.get_or_init(|| override_text("common.cuh").unwrap_or(COMMON_HEADER))
}
