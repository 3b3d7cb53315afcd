//! Binds a GGUF's tensors to the model's named weights.
//!
//! Matrices stay in the file's (memory-mapped) quantized layout and are read in place; small
//! vectors (norms, HC parameters, biases) are dequantized to f32 once at load time. Every
//! tensor's dims are checked against the layout the metadata implies; types are free within
//! what the kernels support, so the oracle's all-F32 file and antirez's q2/q4 files all load.

use crate::config::{LayerKind, ModelConfig};
use crate::layout::{self, ExpertMix, Role, TensorSpec};
use crate::mtp::MtpWeights;
use crate::numerics::Numerics;
use dsv4_gguf::{GgmlType, GgufFile};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("tensor {0} is missing")]
    Missing(String),
    #[error("tensor {name}: dims {found:?}, expected {expected:?}")]
    Dims { name: String, expected: Vec<u64>, found: Vec<u64> },
    #[error("tensor {name}: type {ty} is not supported here")]
    Type { name: String, ty: GgmlType },
    #[error("tensor {name}: {why}")]
    Invalid { name: String, why: String },
}

/// A row-major matrix view (`rows` outputs of `cols` inputs) into a mapped GGUF.
#[derive(Clone)]
pub struct Mat {
    file: Arc<GgufFile>,
    tensor: usize,
    start: usize,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

impl Mat {
    pub fn bytes(&self) -> &[u8] {
        let data = self.file.tensor_data(&self.file.tensors()[self.tensor]);
        &data[self.start..self.start + self.rows * self.row_bytes()]
    }

    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// Rows `first .. first + n` (an expert of a stacked tensor, an output group's slice).
    pub fn rows(&self, first: usize, n: usize) -> Mat {
        assert!(first + n <= self.rows, "row range {first}+{n} outside {} rows", self.rows);
        Mat { start: self.start + first * self.row_bytes(), rows: n, ..self.clone() }
    }

    /// `out = W x`.
    pub fn matvec(&self, x: &[f32], out: &mut [f32], numerics: Numerics) {
        debug_assert_eq!(x.len(), self.cols);
        debug_assert_eq!(out.len(), self.rows);
        let mode = numerics.dot_mode();
        dsv4_quant::matvec(self.ty, self.bytes(), self.rows, self.cols, x, out, mode)
            .expect("matrix shape and type were validated when the weights were bound");
    }

    /// `outs[t] = W xs[t]` for `outs.len()` vectors at once (`xs`: that many × cols), each
    /// output bit-identical to [`matvec`](Self::matvec) on that vector.
    pub fn matmul_into(&self, xs: &[f32], outs: &mut [&mut [f32]], numerics: Numerics) {
        let mode = numerics.dot_mode();
        dsv4_quant::matmul_into(self.ty, self.bytes(), self.rows, self.cols, xs, outs, mode)
            .expect("matrix shape and type were validated when the weights were bound");
    }

    /// Row `r` dequantized (embedding lookups).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let b = &self.bytes()[r * rb..(r + 1) * rb];
        dsv4_quant::dequantize_row(self.ty, b, out).expect("validated at bind time");
    }
}

pub struct HcWeights {
    pub proj: Mat,
    pub scale: Vec<f32>,
    pub base: Vec<f32>,
}

pub struct CompressorWeights {
    /// Position bias, `ratio` rows of `lanes × dim`.
    pub ape: Vec<f32>,
    pub kv: Mat,
    pub gate: Mat,
    pub norm: Vec<f32>,
}

pub struct IndexerWeights {
    pub q_b: Mat,
    pub proj: Mat,
    pub compressor: CompressorWeights,
}

pub enum Router {
    /// `tid2eid`: token id → its experts, `n_expert_used` per token.
    Hash(Vec<u32>),
    /// Score routing; the bias only affects which experts are selected.
    Scored { bias: Vec<f32> },
}

pub struct LayerWeights {
    pub kind: LayerKind,
    pub hc_attn: HcWeights,
    pub hc_ffn: HcWeights,
    pub attn_norm: Vec<f32>,
    pub q_a: Mat,
    pub q_a_norm: Vec<f32>,
    pub q_b: Mat,
    pub kv: Mat,
    pub kv_norm: Vec<f32>,
    pub sinks: Vec<f32>,
    pub out_a: Mat,
    pub out_b: Mat,
    pub compressor: Option<CompressorWeights>,
    pub indexer: Option<IndexerWeights>,
    pub ffn_norm: Vec<f32>,
    pub gate_inp: Mat,
    pub router: Router,
    pub gate_exps: Mat,
    pub up_exps: Mat,
    pub down_exps: Mat,
    pub gate_sh: Mat,
    pub up_sh: Mat,
    pub down_sh: Mat,
}

pub struct Weights {
    pub embd: Mat,
    pub out_hc: HcWeights,
    pub out_norm: Vec<f32>,
    pub output: Mat,
    pub layers: Vec<LayerWeights>,
}

const MATRIX_TYPES: [GgmlType; 7] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q4_K,
    GgmlType::IQ2_XXS,
];

struct Binder<'a> {
    file: &'a Arc<GgufFile>,
    index: HashMap<&'a str, usize>,
    specs: HashMap<String, TensorSpec>,
}

impl<'a> Binder<'a> {
    fn new(file: &'a Arc<GgufFile>, specs: Vec<TensorSpec>) -> Binder<'a> {
        let index = file.tensors().iter().enumerate().map(|(i, t)| (t.name(), i)).collect();
        Binder { file, index, specs: specs.into_iter().map(|s| (s.name.clone(), s)).collect() }
    }

    fn find(&self, name: &str) -> Result<usize, WeightsError> {
        let i = *self.index.get(name).ok_or_else(|| WeightsError::Missing(name.into()))?;
        let spec = &self.specs[name];
        let found = self.file.tensors()[i].dims();
        if found != spec.dims.as_slice() {
            return Err(WeightsError::Dims { name: name.into(), expected: spec.dims.clone(), found: found.to_vec() });
        }
        Ok(i)
    }

    /// A matrix, or a stack of them (experts) viewed as one tall matrix.
    fn mat(&self, name: &str) -> Result<Mat, WeightsError> {
        let i = self.find(name)?;
        let t = &self.file.tensors()[i];
        if !MATRIX_TYPES.contains(&t.ty()) {
            return Err(WeightsError::Type { name: name.into(), ty: t.ty() });
        }
        let dims = t.dims();
        let rows = dims[1..].iter().product::<u64>() as usize;
        Ok(Mat { file: self.file.clone(), tensor: i, start: 0, ty: t.ty(), rows, cols: dims[0] as usize })
    }

    fn vec(&self, name: &str) -> Result<Vec<f32>, WeightsError> {
        let m = self.mat(name)?;
        let mut out = vec![0f32; m.rows * m.cols];
        dsv4_quant::dequantize_row(m.ty, m.bytes(), &mut out)
            .map_err(|e| WeightsError::Invalid { name: name.into(), why: e.to_string() })?;
        if let Some(bad) = out.iter().position(|v| !v.is_finite()) {
            return Err(WeightsError::Invalid { name: name.into(), why: format!("element {bad} is not finite") });
        }
        Ok(out)
    }

    fn hash_table(&self, name: &str, n_expert: usize) -> Result<Vec<u32>, WeightsError> {
        let i = self.find(name)?;
        let t = &self.file.tensors()[i];
        if t.ty() != GgmlType::I32 {
            return Err(WeightsError::Type { name: name.into(), ty: t.ty() });
        }
        self.file
            .tensor_data(t)
            .chunks_exact(4)
            .map(|c| {
                let e = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                u32::try_from(e).ok().filter(|&e| (e as usize) < n_expert).ok_or_else(|| WeightsError::Invalid {
                    name: name.into(),
                    why: format!("expert id {e} outside 0..{n_expert}"),
                })
            })
            .collect()
    }

    fn hc(&self, prefix: &str) -> Result<HcWeights, WeightsError> {
        Ok(HcWeights {
            proj: self.mat(&format!("{prefix}_fn.weight"))?,
            scale: self.vec(&format!("{prefix}_scale.weight"))?,
            base: self.vec(&format!("{prefix}_base.weight"))?,
        })
    }

    fn compressor(&self, prefix: &str) -> Result<CompressorWeights, WeightsError> {
        Ok(CompressorWeights {
            ape: self.vec(&format!("{prefix}_ape.weight"))?,
            kv: self.mat(&format!("{prefix}_kv.weight"))?,
            gate: self.mat(&format!("{prefix}_gate.weight"))?,
            norm: self.vec(&format!("{prefix}_norm.weight"))?,
        })
    }
}

impl<'a> Binder<'a> {
    /// One decoder layer under `prefix`.
    fn layer(&self, cfg: &ModelConfig, prefix: &str, kind: LayerKind, hash: bool) -> Result<LayerWeights, WeightsError> {
        let p = |s: &str| format!("{prefix}{s}");
        Ok(LayerWeights {
            kind,
            hc_attn: self.hc(&p("hc_attn"))?,
            hc_ffn: self.hc(&p("hc_ffn"))?,
            attn_norm: self.vec(&p("attn_norm.weight"))?,
            q_a: self.mat(&p("attn_q_a.weight"))?,
            q_a_norm: self.vec(&p("attn_q_a_norm.weight"))?,
            q_b: self.mat(&p("attn_q_b.weight"))?,
            kv: self.mat(&p("attn_kv.weight"))?,
            kv_norm: self.vec(&p("attn_kv_a_norm.weight"))?,
            sinks: self.vec(&p("attn_sinks.weight"))?,
            out_a: self.mat(&p("attn_output_a.weight"))?,
            out_b: self.mat(&p("attn_output_b.weight"))?,
            compressor: match kind {
                LayerKind::Window => None,
                _ => Some(self.compressor(&p("attn_compressor"))?),
            },
            indexer: match kind {
                LayerKind::Csa => Some(IndexerWeights {
                    q_b: self.mat(&p("indexer.attn_q_b.weight"))?,
                    proj: self.mat(&p("indexer.proj.weight"))?,
                    compressor: self.compressor(&p("indexer_compressor"))?,
                }),
                _ => None,
            },
            ffn_norm: self.vec(&p("ffn_norm.weight"))?,
            gate_inp: self.mat(&p("ffn_gate_inp.weight"))?,
            router: if hash {
                Router::Hash(self.hash_table(&p("ffn_gate_tid2eid.weight"), cfg.n_expert)?)
            } else {
                Router::Scored { bias: self.vec(&p("exp_probs_b.bias"))? }
            },
            gate_exps: self.mat(&p("ffn_gate_exps.weight"))?,
            up_exps: self.mat(&p("ffn_up_exps.weight"))?,
            down_exps: self.mat(&p("ffn_down_exps.weight"))?,
            gate_sh: self.mat(&p("ffn_gate_shexp.weight"))?,
            up_sh: self.mat(&p("ffn_up_shexp.weight"))?,
            down_sh: self.mat(&p("ffn_down_shexp.weight"))?,
        })
    }

    fn check_matrices(&self) -> Result<(), WeightsError> {
        for spec in self.specs.values().filter(|s| s.role == Role::Matrix) {
            let m = self.mat(&spec.name)?;
            if m.cols % m.ty.block_elems() != 0 {
                return Err(WeightsError::Invalid { name: spec.name.clone(), why: "rows are not whole blocks".into() });
            }
        }
        Ok(())
    }
}

/// Binds the separate MTP file's `mtp.0.*` tensors; the block shares the main model's
/// embedding and LM head, so its geometry is the main model's.
pub fn bind_mtp(file: &Arc<GgufFile>, cfg: &ModelConfig) -> Result<MtpWeights, WeightsError> {
    let b = Binder::new(file, layout::mtp_tensors(cfg, ExpertMix::Q2));
    b.check_matrices()?;
    Ok(MtpWeights {
        e_proj: b.mat("mtp.0.e_proj.weight")?,
        h_proj: b.mat("mtp.0.h_proj.weight")?,
        enorm: b.vec("mtp.0.enorm.weight")?,
        hnorm: b.vec("mtp.0.hnorm.weight")?,
        norm: b.vec("mtp.0.norm.weight")?,
        head: HcWeights {
            proj: b.mat("mtp.0.hc_head_fn.weight")?,
            scale: b.vec("mtp.0.hc_head_scale.weight")?,
            base: b.vec("mtp.0.hc_head_base.weight")?,
        },
        layer: b.layer(cfg, "mtp.0.", LayerKind::Window, false)?,
    })
}

impl Weights {
    /// Binds every tensor of the main model file.
    pub fn bind(file: &Arc<GgufFile>, cfg: &ModelConfig) -> Result<Weights, WeightsError> {
        // Dims do not depend on the expert mix; types are checked per tensor above.
        let b = Binder::new(file, layout::main_tensors(cfg, ExpertMix::Q2));
        b.check_matrices()?;
        let layers = (0..cfg.n_layer)
            .map(|il| b.layer(cfg, &format!("blk.{il}."), cfg.layer_kind(il), cfg.is_hash_layer(il)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Weights {
            embd: b.mat("token_embd.weight")?,
            out_hc: HcWeights {
                proj: b.mat("output_hc_fn.weight")?,
                scale: b.vec("output_hc_scale.weight")?,
                base: b.vec("output_hc_base.weight")?,
            },
            out_norm: b.vec("output_norm.weight")?,
            output: b.mat("output.weight")?,
            layers,
        })
    }
}
