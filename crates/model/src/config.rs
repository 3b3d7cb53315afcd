//! Model geometry, read from the `deepseek4.*` GGUF metadata and validated.
//!
//! Any self-consistent geometry is accepted (tests run on tiny models); the real DeepSeek V4
//! Flash shape is one accepted case, recognised by [`ModelConfig::is_flash`].

use dsv4_gguf::{Array, Value};

/// The attention flavour of one layer, decided by its compression ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Ratio 0: the raw sliding window only.
    Window,
    /// Ratio 4: overlapping two-lane compressor plus the lightning indexer (CSA).
    Csa,
    /// Any other ratio (128 in Flash): non-overlapping compressor, every row visible (HCA).
    Hca { ratio: u32 },
}

impl LayerKind {
    pub fn ratio(self) -> u32 {
        match self {
            LayerKind::Window => 0,
            LayerKind::Csa => 4,
            LayerKind::Hca { ratio } => ratio,
        }
    }

    /// Lanes per compressed dimension: the ratio-4 compressor produces two (one for the next
    /// window, one for its own), so its projections are twice as wide.
    pub fn compressor_lanes(self) -> usize {
        if self == LayerKind::Csa { 2 } else { 1 }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub vocab_size: usize,
    pub n_head: usize,
    /// Width of the single shared K = V head and of every query head.
    pub head_dim: usize,
    /// RoPE is applied to the last `rope_dim` dims of each head (and of each indexer head).
    pub rope_dim: usize,
    pub q_lora_rank: usize,
    pub o_lora_rank: usize,
    pub o_groups: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub expert_ffn: usize,
    pub n_hash_layers: usize,
    pub sliding_window: usize,
    pub indexer_heads: usize,
    pub indexer_head_dim: usize,
    pub indexer_top_k: usize,
    pub hc_count: usize,
    pub sinkhorn_iters: usize,
    pub layer_kinds: Vec<LayerKind>,
    pub swiglu_clamp: Vec<f32>,
    pub rope_freq_base: f32,
    pub compress_rope_freq_base: f32,
    pub yarn_factor: f32,
    pub yarn_orig_ctx: u64,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub expert_weights_scale: f32,
    pub rms_eps: f32,
    pub hc_eps: f32,
    pub context_length: u64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("metadata key `{0}` is missing")]
    Missing(String),
    #[error("metadata key `{key}` has the wrong type: expected {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("metadata key `{key}` = {value} is invalid: {why}")]
    Invalid { key: String, value: String, why: String },
    #[error("model geometry is inconsistent: {0}")]
    Inconsistent(String),
}

const P: &str = "deepseek4.";

struct Meta<'a>(&'a [(String, Value)]);

impl<'a> Meta<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn req(&self, key: &str) -> Result<&'a Value, ConfigError> {
        self.get(key).ok_or_else(|| ConfigError::Missing(key.to_string()))
    }

    /// Integer keys: any integer type is accepted as long as the value fits; ds4 insists on
    /// UINT32 but nothing is gained by refusing an INT32 or UINT64 holding the same number.
    fn usize(&self, key: &str) -> Result<usize, ConfigError> {
        let v = self.req(key)?;
        let n = v.as_u64().ok_or(ConfigError::WrongType { key: key.into(), expected: "unsigned integer" })?;
        usize::try_from(n).ok().filter(|&n| n <= u32::MAX as usize).ok_or_else(|| ConfigError::Invalid {
            key: key.into(),
            value: n.to_string(),
            why: "does not fit in 32 bits".into(),
        })
    }

    fn positive(&self, key: &str) -> Result<usize, ConfigError> {
        let n = self.usize(key)?;
        if n == 0 {
            return Err(ConfigError::Invalid { key: key.into(), value: "0".into(), why: "must be positive".into() });
        }
        Ok(n)
    }

    fn opt_usize(&self, key: &str, default: usize) -> Result<usize, ConfigError> {
        if self.get(key).is_some() { self.usize(key) } else { Ok(default) }
    }

    fn float(&self, key: &str) -> Result<f32, ConfigError> {
        let v = self.req(key)?;
        let x = v.as_f64().ok_or(ConfigError::WrongType { key: key.into(), expected: "number" })?;
        if !x.is_finite() {
            return Err(ConfigError::Invalid { key: key.into(), value: x.to_string(), why: "not finite".into() });
        }
        Ok(x as f32)
    }

    fn float_array(&self, key: &str) -> Result<Vec<f64>, ConfigError> {
        self.req(key)?
            .as_f64_array()
            .ok_or(ConfigError::WrongType { key: key.into(), expected: "array of numbers" })
    }
}

impl ModelConfig {
    /// Reads and validates the geometry from a GGUF's metadata (in file order).
    pub fn from_metadata(kv: &[(String, Value)]) -> Result<ModelConfig, ConfigError> {
        let m = Meta(kv);
        let k = |s: &str| format!("{P}{s}");
        let n_layer = m.positive(&k("block_count"))?;

        let ratios = m.float_array(&k("attention.compress_ratios"))?;
        let layer_kinds = per_layer(&k("attention.compress_ratios"), &ratios, n_layer)?
            .into_iter()
            .map(|r| {
                if r < 0.0 || r.fract() != 0.0 || r == 1.0 || r > 1e6 {
                    return Err(ConfigError::Invalid {
                        key: k("attention.compress_ratios"),
                        value: r.to_string(),
                        why: "a ratio is 0 (no compression) or an integer >= 2".into(),
                    });
                }
                Ok(match r as u32 {
                    0 => LayerKind::Window,
                    4 => LayerKind::Csa,
                    ratio => LayerKind::Hca { ratio },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let clamps = m.float_array(&k("swiglu_clamp_exp"))?;
        let swiglu_clamp: Vec<f32> =
            per_layer(&k("swiglu_clamp_exp"), &clamps, n_layer)?.into_iter().map(|x| x as f32).collect();

        let expert_weights_norm = m
            .req(&k("expert_weights_norm"))?
            .as_bool()
            .ok_or(ConfigError::WrongType { key: k("expert_weights_norm"), expected: "bool" })?;
        if !expert_weights_norm {
            return Err(ConfigError::Invalid {
                key: k("expert_weights_norm"),
                value: "false".into(),
                why: "DeepSeek V4 normalises the selected experts' weights".into(),
            });
        }
        for key in ["expert_group_count", "expert_group_used_count"] {
            let n = m.opt_usize(&k(key), 0)?;
            if n != 0 {
                return Err(ConfigError::Invalid { key: k(key), value: n.to_string(), why: "expert-group limiting is not part of DeepSeek V4".into() });
            }
        }
        if m.positive(&k("attention.head_count_kv"))? != 1 {
            return Err(ConfigError::Inconsistent("DeepSeek V4 has one shared K = V head (head_count_kv must be 1)".into()));
        }
        if m.positive(&k("expert_shared_count"))? != 1 {
            return Err(ConfigError::Inconsistent("exactly one shared expert is supported".into()));
        }
        let head_dim = m.positive(&k("attention.key_length"))?;
        if m.positive(&k("attention.value_length"))? != head_dim {
            return Err(ConfigError::Inconsistent("key_length and value_length differ, but K = V".into()));
        }
        let yarn_orig_ctx = m
            .req(&k("rope.scaling.original_context_length"))?
            .as_u64()
            .ok_or(ConfigError::WrongType { key: k("rope.scaling.original_context_length"), expected: "unsigned integer" })?;
        let context_length = match m.get(&k("context_length")) {
            Some(v) => v.as_u64().ok_or(ConfigError::WrongType { key: k("context_length"), expected: "unsigned integer" })?,
            None => 1 << 20,
        };

        let cfg = ModelConfig {
            n_layer,
            n_embd: m.positive(&k("embedding_length"))?,
            vocab_size: m.positive(&k("vocab_size"))?,
            n_head: m.positive(&k("attention.head_count"))?,
            head_dim,
            rope_dim: m.positive(&k("rope.dimension_count"))?,
            q_lora_rank: m.positive(&k("attention.q_lora_rank"))?,
            o_lora_rank: m.positive(&k("attention.output_lora_rank"))?,
            o_groups: m.positive(&k("attention.output_group_count"))?,
            n_expert: m.positive(&k("expert_count"))?,
            n_expert_used: m.positive(&k("expert_used_count"))?,
            expert_ffn: m.positive(&k("expert_feed_forward_length"))?,
            n_hash_layers: m.usize(&k("hash_layer_count"))?,
            sliding_window: m.positive(&k("attention.sliding_window"))?,
            indexer_heads: m.positive(&k("attention.indexer.head_count"))?,
            indexer_head_dim: m.positive(&k("attention.indexer.key_length"))?,
            indexer_top_k: m.positive(&k("attention.indexer.top_k"))?,
            hc_count: m.positive(&k("hyper_connection.count"))?,
            sinkhorn_iters: m.positive(&k("hyper_connection.sinkhorn_iterations"))?,
            layer_kinds,
            swiglu_clamp,
            rope_freq_base: m.float(&k("rope.freq_base"))?,
            compress_rope_freq_base: m.float(&k("attention.compress_rope_freq_base"))?,
            yarn_factor: m.float(&k("rope.scaling.factor"))?,
            yarn_orig_ctx,
            yarn_beta_fast: m.float(&k("rope.scaling.yarn_beta_fast"))?,
            yarn_beta_slow: m.float(&k("rope.scaling.yarn_beta_slow"))?,
            expert_weights_scale: m.float(&k("expert_weights_scale"))?,
            rms_eps: m.float(&k("attention.layer_norm_rms_epsilon"))?,
            hc_eps: m.float(&k("hyper_connection.epsilon"))?,
            context_length,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks: every shape the forward pass derives must be whole and non-empty.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Inconsistent(s));
        if !self.rope_dim.is_multiple_of(2) || self.rope_dim > self.head_dim || self.rope_dim > self.indexer_head_dim {
            return bad(format!(
                "rope dimension {} must be even and fit both the head ({}) and the indexer head ({})",
                self.rope_dim, self.head_dim, self.indexer_head_dim
            ));
        }
        if !self.n_head.is_multiple_of(self.o_groups) {
            return bad(format!("{} heads do not split into {} output groups", self.n_head, self.o_groups));
        }
        if self.n_expert_used > self.n_expert {
            return bad(format!("{} experts used per token but only {} exist", self.n_expert_used, self.n_expert));
        }
        if self.n_hash_layers > self.n_layer {
            return bad(format!("{} hash-routed layers in a {}-layer model", self.n_hash_layers, self.n_layer));
        }
        if !self.indexer_head_dim.is_power_of_two() && self.layer_kinds.contains(&LayerKind::Csa) {
            return bad(format!("the indexer's Hadamard transform needs a power-of-two head width, got {}", self.indexer_head_dim));
        }
        for (il, c) in self.swiglu_clamp.iter().enumerate() {
            if c.is_nan() || *c <= 0.0 {
                return bad(format!("layer {il}: SwiGLU clamp {c} must be positive"));
            }
        }
        if !(self.rms_eps > 0.0 && self.hc_eps >= 0.0 && self.yarn_factor >= 1.0 && self.rope_freq_base > 1.0 && self.compress_rope_freq_base > 1.0) {
            return bad("norm epsilon, RoPE bases and YaRN factor are out of range".into());
        }
        if self.hc_count < 1 || self.sinkhorn_iters < 1 {
            return bad("hyper-connections need at least one stream and one Sinkhorn iteration".into());
        }
        Ok(())
    }

    pub fn layer_kind(&self, il: usize) -> LayerKind {
        self.layer_kinds[il]
    }

    pub fn is_hash_layer(&self, il: usize) -> bool {
        il < self.n_hash_layers
    }

    /// Mixing logits per HC site: `hc` pre weights, `hc` post weights, `hc × hc` combine.
    pub fn hc_mix(&self) -> usize {
        (2 + self.hc_count) * self.hc_count
    }

    /// Heads per output group: the grouped output projection's input width is this × head_dim.
    pub fn heads_per_group(&self) -> usize {
        self.n_head / self.o_groups
    }

    /// The published DeepSeek V4 Flash geometry (all layers or a prefix of them, as the
    /// synthetic benchmark files use).
    pub fn flash(n_layer: usize) -> ModelConfig {
        ModelConfig {
            n_layer,
            n_embd: 4096,
            vocab_size: 129280,
            n_head: 64,
            head_dim: 512,
            rope_dim: 64,
            q_lora_rank: 1024,
            o_lora_rank: 1024,
            o_groups: 8,
            n_expert: 256,
            n_expert_used: 6,
            expert_ffn: 2048,
            n_hash_layers: 3.min(n_layer),
            sliding_window: 128,
            indexer_heads: 64,
            indexer_head_dim: 128,
            indexer_top_k: 512,
            hc_count: 4,
            sinkhorn_iters: 20,
            layer_kinds: (0..n_layer).map(flash_layer_kind).collect(),
            swiglu_clamp: vec![10.0; n_layer],
            rope_freq_base: 10000.0,
            compress_rope_freq_base: 160000.0,
            yarn_factor: 16.0,
            yarn_orig_ctx: 65536,
            yarn_beta_fast: 32.0,
            yarn_beta_slow: 1.0,
            expert_weights_scale: 1.5,
            rms_eps: 1e-6,
            hc_eps: 1e-6,
            context_length: 1 << 20,
        }
    }

    /// True when this is the published Flash geometry with `n_layer` of its 43 layers.
    pub fn is_flash(&self) -> bool {
        self.n_layer <= 43 && *self == ModelConfig::flash(self.n_layer)
    }

    /// The `deepseek4.*` metadata describing this geometry, with the value types antirez's
    /// files use (UINT32 integers, FLOAT32 floats, a UINT32 ratio array, FLOAT32 clamps).
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let u = |n: usize| Value::U32(n as u32);
        let f = Value::F32;
        let mut kv: Vec<(&str, Value)> = vec![
            ("context_length", Value::U32(self.context_length.min(u32::MAX as u64) as u32)),
            ("embedding_length", u(self.n_embd)),
            ("block_count", u(self.n_layer)),
            ("vocab_size", u(self.vocab_size)),
            ("attention.head_count", u(self.n_head)),
            ("attention.head_count_kv", u(1)),
            ("attention.key_length", u(self.head_dim)),
            ("attention.value_length", u(self.head_dim)),
            ("rope.dimension_count", u(self.rope_dim)),
            ("attention.q_lora_rank", u(self.q_lora_rank)),
            ("attention.output_lora_rank", u(self.o_lora_rank)),
            ("attention.output_group_count", u(self.o_groups)),
            ("expert_count", u(self.n_expert)),
            ("expert_used_count", u(self.n_expert_used)),
            ("expert_feed_forward_length", u(self.expert_ffn)),
            ("expert_shared_count", u(1)),
            ("hash_layer_count", u(self.n_hash_layers)),
            ("expert_gating_func", u(4)),
            ("expert_weights_norm", Value::Bool(true)),
            ("expert_weights_scale", f(self.expert_weights_scale)),
            ("attention.sliding_window", u(self.sliding_window)),
            ("attention.indexer.head_count", u(self.indexer_heads)),
            ("attention.indexer.key_length", u(self.indexer_head_dim)),
            ("attention.indexer.top_k", u(self.indexer_top_k)),
            ("hyper_connection.count", u(self.hc_count)),
            ("hyper_connection.sinkhorn_iterations", u(self.sinkhorn_iters)),
            ("hyper_connection.epsilon", f(self.hc_eps)),
            ("attention.layer_norm_rms_epsilon", f(self.rms_eps)),
            ("rope.freq_base", f(self.rope_freq_base)),
            ("attention.compress_rope_freq_base", f(self.compress_rope_freq_base)),
            ("rope.scaling.type", Value::String("yarn".into())),
            ("rope.scaling.factor", f(self.yarn_factor)),
            ("rope.scaling.original_context_length", Value::U32(self.yarn_orig_ctx as u32)),
            ("rope.scaling.yarn_beta_fast", f(self.yarn_beta_fast)),
            ("rope.scaling.yarn_beta_slow", f(self.yarn_beta_slow)),
            ("nextn_predict_layers", u(1)),
        ];
        kv.push((
            "attention.compress_ratios",
            Value::Array(Array::U32(self.layer_kinds.iter().map(|l| l.ratio()).collect())),
        ));
        kv.push(("swiglu_clamp_exp", Value::Array(Array::F32(self.swiglu_clamp.clone()))));
        kv.into_iter().map(|(k, v)| (format!("{P}{k}"), v)).collect()
    }
}

/// Flash's fixed schedule: layers 0 and 1 window-only, then ratio 4 on even and 128 on odd.
pub fn flash_layer_kind(il: usize) -> LayerKind {
    match il {
        0 | 1 => LayerKind::Window,
        _ if il.is_multiple_of(2) => LayerKind::Csa,
        _ => LayerKind::Hca { ratio: 128 },
    }
}

/// Per-layer arrays may carry extra trailing entries (the published files list the MTP stage
/// too); only the first `n_layer` describe the main layers.
fn per_layer(key: &str, xs: &[f64], n_layer: usize) -> Result<Vec<f64>, ConfigError> {
    if xs.len() < n_layer {
        return Err(ConfigError::Invalid {
            key: key.into(),
            value: format!("{} entries", xs.len()),
            why: format!("needs one entry per layer ({n_layer})"),
        });
    }
    Ok(xs[..n_layer].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(cfg: &ModelConfig) -> Vec<(String, Value)> {
        cfg.to_metadata()
    }

    fn set(kv: &mut [(String, Value)], key: &str, v: Value) {
        kv.iter_mut().find(|(k, _)| k == &format!("{P}{key}")).unwrap().1 = v;
    }

    #[test]
    fn flash_round_trips_and_is_recognised() {
        let cfg = ModelConfig::from_metadata(&meta(&ModelConfig::flash(43))).unwrap();
        assert_eq!(cfg, ModelConfig::flash(43));
        assert!(cfg.is_flash());
        assert_eq!(cfg.layer_kind(2), LayerKind::Csa);
        assert_eq!(cfg.layer_kind(3), LayerKind::Hca { ratio: 128 });
        assert_eq!(cfg.hc_mix(), 24);
        let mut other = ModelConfig::flash(43);
        other.n_embd = 2048;
        assert!(!other.is_flash());
    }

    #[test]
    fn per_layer_arrays_may_be_longer_and_of_other_numeric_types() {
        let mut kv = meta(&ModelConfig::flash(4));
        set(&mut kv, "attention.compress_ratios", Value::Array(Array::I32(vec![0, 0, 4, 128, 0])));
        set(&mut kv, "swiglu_clamp_exp", Value::Array(Array::F64(vec![10.0; 5])));
        assert_eq!(ModelConfig::from_metadata(&kv).unwrap(), ModelConfig::flash(4));
    }

    #[test]
    fn each_bad_value_is_named() {
        let base = meta(&ModelConfig::flash(4));
        type Edit<'a> = &'a dyn Fn(&mut Vec<(String, Value)>);
        let err = |edit: Edit| {
            let mut kv = base.clone();
            edit(&mut kv);
            ModelConfig::from_metadata(&kv).unwrap_err()
        };
        assert_eq!(
            err(&|kv| kv.retain(|(k, _)| k != "deepseek4.vocab_size")),
            ConfigError::Missing("deepseek4.vocab_size".into())
        );
        assert!(matches!(
            err(&|kv| set(kv, "embedding_length", Value::String("4096".into()))),
            ConfigError::WrongType { key, .. } if key == "deepseek4.embedding_length"
        ));
        assert!(matches!(
            err(&|kv| set(kv, "attention.compress_ratios", Value::Array(Array::U32(vec![0, 0, 4])))),
            ConfigError::Invalid { why, .. } if why.contains("one entry per layer")
        ));
        assert!(matches!(
            err(&|kv| set(kv, "attention.compress_ratios", Value::Array(Array::U32(vec![0, 1, 4, 128])))),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(err(&|kv| set(kv, "attention.head_count_kv", Value::U32(2))), ConfigError::Inconsistent(_)));
        assert!(matches!(err(&|kv| set(kv, "attention.output_group_count", Value::U32(7))), ConfigError::Inconsistent(_)));
        assert!(matches!(err(&|kv| set(kv, "rope.dimension_count", Value::U32(1024))), ConfigError::Inconsistent(_)));
        assert!(matches!(err(&|kv| set(kv, "expert_used_count", Value::U32(300))), ConfigError::Inconsistent(_)));
        assert!(matches!(err(&|kv| set(kv, "block_count", Value::U32(0))), ConfigError::Invalid { .. }));
        assert!(matches!(err(&|kv| set(kv, "expert_weights_norm", Value::Bool(false))), ConfigError::Invalid { .. }));
        assert!(matches!(err(&|kv| set(kv, "rope.freq_base", Value::F32(f32::NAN))), ConfigError::Invalid { .. }));
        assert!(matches!(
            err(&|kv| set(kv, "attention.indexer.key_length", Value::U32(96))),
            ConfigError::Inconsistent(why) if why.contains("power-of-two")
        ));
    }
}
