//! The tensor inventory of a DeepSeek V4 GGUF in antirez's layout: every name, its GGUF
//! dims (`ne` order: input size first) and the type the published files use for it.
//!
//! One table serves three users: the synthetic-model writer (what to generate), the
//! inspector (what to compare a file against) and the weight loader (what to bind).

use crate::config::{LayerKind, ModelConfig};
use dsv4_gguf::GgmlType;

/// The routed-expert quantization mix, the only thing that differs between the published
/// main files (everything else is identical in q2 and q4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertMix {
    /// IQ2_XXS gate/up, Q2_K down (the 80.8 GiB file).
    Q2,
    /// Q4_K gate/up/down (the 153.3 GiB file, and the MTP file).
    Q4,
}

impl ExpertMix {
    pub fn gate_up(self) -> GgmlType {
        match self {
            ExpertMix::Q2 => GgmlType::IQ2_XXS,
            ExpertMix::Q4 => GgmlType::Q4_K,
        }
    }

    pub fn down(self) -> GgmlType {
        match self {
            ExpertMix::Q2 => GgmlType::Q2_K,
            ExpertMix::Q4 => GgmlType::Q4_K,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ExpertMix::Q2 => "q2",
            ExpertMix::Q4 => "q4",
        }
    }

    pub fn from_name(s: &str) -> Option<ExpertMix> {
        match s {
            "q2" => Some(ExpertMix::Q2),
            "q4" => Some(ExpertMix::Q4),
            _ => None,
        }
    }
}

/// What a weight is, which decides how a synthetic one is filled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A projection matrix (including stacked experts).
    Matrix,
    /// A norm's learned scale (≈ 1).
    NormScale,
    /// Small free parameters: HC base/scale, sinks, router bias, compressor position bias.
    Small,
    /// The token embedding table.
    Embedding,
    /// `tid2eid`: per token, the ids of its hash-routed experts.
    HashTable,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub role: Role,
}

impl TensorSpec {
    fn new(name: String, dims: &[usize], ty: GgmlType, role: Role) -> TensorSpec {
        TensorSpec { name, dims: dims.iter().map(|&d| d as u64).collect(), ty, role }
    }

    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn n_bytes(&self) -> u64 {
        self.n_elements() / self.ty.block_elems() as u64 * self.ty.block_bytes() as u64
    }
}

use GgmlType::{F16, F32, I32, Q8_0};
use Role::*;

/// The main model file's tensors, in the order antirez's files list them (globals first is
/// not required by readers; this order keeps a layer's tensors together on disk).
pub fn main_tensors(cfg: &ModelConfig, mix: ExpertMix) -> Vec<TensorSpec> {
    let e = cfg.n_embd;
    let hc_flat = cfg.hc_count * e;
    let mut v = vec![
        TensorSpec::new("token_embd.weight".into(), &[e, cfg.vocab_size], F16, Embedding),
        TensorSpec::new("output_hc_base.weight".into(), &[cfg.hc_count], F32, Small),
        TensorSpec::new("output_hc_fn.weight".into(), &[hc_flat, cfg.hc_count], F16, Matrix),
        TensorSpec::new("output_hc_scale.weight".into(), &[1], F32, Small),
        TensorSpec::new("output_norm.weight".into(), &[e], F32, NormScale),
        TensorSpec::new("output.weight".into(), &[e, cfg.vocab_size], Q8_0, Matrix),
    ];
    for il in 0..cfg.n_layer {
        v.extend(layer_tensors(cfg, mix, &format!("blk.{il}."), il));
    }
    v
}

/// One decoder layer's tensors under `prefix` (`blk.N.` or `mtp.0.`).
fn layer_tensors(cfg: &ModelConfig, mix: ExpertMix, prefix: &str, il: usize) -> Vec<TensorSpec> {
    let (e, d, ffn, nx) = (cfg.n_embd, cfg.head_dim, cfg.expert_ffn, cfg.n_expert);
    let n = |s: &str| format!("{prefix}{s}");
    let mut v = Vec::new();
    for site in ["attn", "ffn"] {
        v.push(TensorSpec::new(n(&format!("hc_{site}_fn.weight")), &[cfg.hc_count * e, cfg.hc_mix()], F16, Matrix));
        v.push(TensorSpec::new(n(&format!("hc_{site}_scale.weight")), &[3], F32, Small));
        v.push(TensorSpec::new(n(&format!("hc_{site}_base.weight")), &[cfg.hc_mix()], F32, Small));
    }
    v.extend([
        TensorSpec::new(n("attn_norm.weight"), &[e], F32, NormScale),
        TensorSpec::new(n("attn_q_a.weight"), &[e, cfg.q_lora_rank], Q8_0, Matrix),
        TensorSpec::new(n("attn_q_a_norm.weight"), &[cfg.q_lora_rank], F32, NormScale),
        TensorSpec::new(n("attn_q_b.weight"), &[cfg.q_lora_rank, cfg.n_head * d], Q8_0, Matrix),
        TensorSpec::new(n("attn_kv.weight"), &[e, d], Q8_0, Matrix),
        TensorSpec::new(n("attn_kv_a_norm.weight"), &[d], F32, NormScale),
        TensorSpec::new(n("attn_sinks.weight"), &[cfg.n_head], F32, Small),
        TensorSpec::new(
            n("attn_output_a.weight"),
            &[cfg.heads_per_group() * d, cfg.o_groups * cfg.o_lora_rank],
            Q8_0,
            Matrix,
        ),
        TensorSpec::new(n("attn_output_b.weight"), &[cfg.o_groups * cfg.o_lora_rank, e], Q8_0, Matrix),
    ]);
    let kind = if prefix.starts_with("mtp") { LayerKind::Window } else { cfg.layer_kind(il) };
    if kind != LayerKind::Window {
        let w = kind.compressor_lanes() * d;
        v.extend([
            TensorSpec::new(n("attn_compressor_ape.weight"), &[w, kind.ratio() as usize], F16, Small),
            TensorSpec::new(n("attn_compressor_kv.weight"), &[e, w], F16, Matrix),
            TensorSpec::new(n("attn_compressor_gate.weight"), &[e, w], F16, Matrix),
            TensorSpec::new(n("attn_compressor_norm.weight"), &[d], F32, NormScale),
        ]);
    }
    if kind == LayerKind::Csa {
        let (ih, id) = (cfg.indexer_heads, cfg.indexer_head_dim);
        v.extend([
            TensorSpec::new(n("indexer.attn_q_b.weight"), &[cfg.q_lora_rank, ih * id], F16, Matrix),
            TensorSpec::new(n("indexer.proj.weight"), &[e, ih], F16, Matrix),
            TensorSpec::new(n("indexer_compressor_ape.weight"), &[2 * id, 4], F16, Small),
            TensorSpec::new(n("indexer_compressor_kv.weight"), &[e, 2 * id], F16, Matrix),
            TensorSpec::new(n("indexer_compressor_gate.weight"), &[e, 2 * id], F16, Matrix),
            TensorSpec::new(n("indexer_compressor_norm.weight"), &[id], F32, NormScale),
        ]);
    }
    v.extend([
        TensorSpec::new(n("ffn_norm.weight"), &[e], F32, NormScale),
        TensorSpec::new(n("ffn_gate_inp.weight"), &[e, nx], F16, Matrix),
    ]);
    if prefix.starts_with("mtp") || !cfg.is_hash_layer(il) {
        v.push(TensorSpec::new(n("exp_probs_b.bias"), &[nx], F32, Small));
    } else {
        v.push(TensorSpec::new(n("ffn_gate_tid2eid.weight"), &[cfg.n_expert_used, cfg.vocab_size], I32, HashTable));
    }
    v.extend([
        TensorSpec::new(n("ffn_gate_exps.weight"), &[e, ffn, nx], mix.gate_up(), Matrix),
        TensorSpec::new(n("ffn_up_exps.weight"), &[e, ffn, nx], mix.gate_up(), Matrix),
        TensorSpec::new(n("ffn_down_exps.weight"), &[ffn, e, nx], mix.down(), Matrix),
        TensorSpec::new(n("ffn_gate_shexp.weight"), &[e, ffn], Q8_0, Matrix),
        TensorSpec::new(n("ffn_up_shexp.weight"), &[e, ffn], Q8_0, Matrix),
        TensorSpec::new(n("ffn_down_shexp.weight"), &[ffn, e], Q8_0, Matrix),
    ]);
    v
}

/// The separate MTP file's tensors (`mtp.0.*`): a window-only, score-routed decoder layer plus
/// the projections that join the token embedding with the main model's final HC state.
pub fn mtp_tensors(cfg: &ModelConfig, mix: ExpertMix) -> Vec<TensorSpec> {
    let e = cfg.n_embd;
    let n = |s: &str| format!("mtp.0.{s}");
    let mut v = vec![
        TensorSpec::new(n("e_proj.weight"), &[e, e], Q8_0, Matrix),
        TensorSpec::new(n("h_proj.weight"), &[e, e], Q8_0, Matrix),
        TensorSpec::new(n("enorm.weight"), &[e], F32, NormScale),
        TensorSpec::new(n("hnorm.weight"), &[e], F32, NormScale),
        TensorSpec::new(n("norm.weight"), &[e], F32, NormScale),
        TensorSpec::new(n("hc_head_fn.weight"), &[cfg.hc_count * e, cfg.hc_count], F16, Matrix),
        TensorSpec::new(n("hc_head_base.weight"), &[cfg.hc_count], F32, Small),
        TensorSpec::new(n("hc_head_scale.weight"), &[1], F32, Small),
    ];
    v.extend(layer_tensors(cfg, mix, "mtp.0.", cfg.n_layer));
    v
}

/// One way a file departs from the expected layout.
#[derive(Clone, Debug, PartialEq)]
pub enum LayoutIssue {
    Missing { name: String },
    Unexpected { name: String },
    Dims { name: String, expected: Vec<u64>, found: Vec<u64> },
    Type { name: String, expected: GgmlType, found: GgmlType },
}

impl std::fmt::Display for LayoutIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutIssue::Missing { name } => write!(f, "missing tensor {name}"),
            LayoutIssue::Unexpected { name } => write!(f, "unexpected tensor {name}"),
            LayoutIssue::Dims { name, expected, found } => {
                write!(f, "{name}: dims {found:?}, expected {expected:?}")
            }
            LayoutIssue::Type { name, expected, found } => write!(f, "{name}: type {found}, expected {expected}"),
        }
    }
}

/// Compares a file's tensor directory (name, dims, type) with the expected specs.
pub fn check_layout<'a>(
    expected: &[TensorSpec],
    found: impl IntoIterator<Item = (&'a str, &'a [u64], GgmlType)>,
) -> Vec<LayoutIssue> {
    use std::collections::HashMap;
    let mut want: HashMap<&str, &TensorSpec> = expected.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut issues = Vec::new();
    for (name, dims, ty) in found {
        match want.remove(name) {
            None => issues.push(LayoutIssue::Unexpected { name: name.into() }),
            Some(spec) => {
                if spec.dims != dims {
                    issues.push(LayoutIssue::Dims { name: name.into(), expected: spec.dims.clone(), found: dims.to_vec() });
                }
                if spec.ty != ty {
                    issues.push(LayoutIssue::Type { name: name.into(), expected: spec.ty, found: ty });
                }
            }
        }
    }
    for spec in expected {
        if want.contains_key(spec.name.as_str()) {
            issues.push(LayoutIssue::Missing { name: spec.name.clone() });
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published q2 file: 1328 tensors and 86,714,775,900 bytes of tensor data
    /// (ARCH.md §7, §9.4); tensor data here excludes alignment padding, which the 32-byte
    /// aligned Flash shapes never need.
    #[test]
    fn flash_inventory_matches_the_published_files() {
        let cfg = ModelConfig::flash(43);
        let q2 = main_tensors(&cfg, ExpertMix::Q2);
        assert_eq!(q2.len(), 1328);
        assert_eq!(q2.iter().map(|t| t.n_bytes()).sum::<u64>(), 86_714_775_900);
        let q4 = main_tensors(&cfg, ExpertMix::Q4);
        assert_eq!(q4.iter().map(|t| t.n_bytes()).sum::<u64>(), 164_628_167_004);
        let names: std::collections::HashSet<_> = q2.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), q2.len(), "names are unique");
    }

    #[test]
    fn flash_layer_shapes() {
        let cfg = ModelConfig::flash(43);
        let q2 = main_tensors(&cfg, ExpertMix::Q2);
        let get = |n: &str| q2.iter().find(|t| t.name == n).unwrap();
        assert_eq!(get("blk.0.attn_output_a.weight").dims, vec![4096, 8192]);
        assert_eq!(get("blk.2.attn_compressor_ape.weight").dims, vec![1024, 4]);
        assert_eq!(get("blk.3.attn_compressor_ape.weight").dims, vec![512, 128]);
        assert_eq!(get("blk.2.ffn_gate_tid2eid.weight").dims, vec![6, 129280]);
        assert_eq!(get("blk.3.exp_probs_b.bias").dims, vec![256]);
        assert_eq!(get("blk.42.indexer_compressor_ape.weight").dims, vec![256, 4]);
        assert!(q2.iter().all(|t| !t.name.starts_with("blk.1.attn_compressor")));
        assert!(q2.iter().all(|t| !t.name.starts_with("blk.3.indexer")));
    }

    #[test]
    fn check_layout_reports_each_kind_of_mismatch() {
        let cfg = ModelConfig::flash(2);
        let specs = main_tensors(&cfg, ExpertMix::Q2);
        let mut found: Vec<(String, Vec<u64>, GgmlType)> =
            specs.iter().map(|s| (s.name.clone(), s.dims.clone(), s.ty)).collect();
        assert!(check_layout(&specs, found.iter().map(|(n, d, t)| (n.as_str(), d.as_slice(), *t))).is_empty());
        found.retain(|(n, _, _)| n != "output.weight");
        found.push(("extra.weight".into(), vec![1], F32));
        found[0].1 = vec![1, 2];
        found[1].2 = GgmlType::F16;
        let issues = check_layout(&specs, found.iter().map(|(n, d, t)| (n.as_str(), d.as_slice(), *t)));
        assert_eq!(issues.len(), 4, "{issues:?}");
        assert!(issues.contains(&LayoutIssue::Missing { name: "output.weight".into() }));
        assert!(issues.contains(&LayoutIssue::Unexpected { name: "extra.weight".into() }));
    }
}
