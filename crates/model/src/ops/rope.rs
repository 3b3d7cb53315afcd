//! Rotary embedding on the *last* `rope_dim` dims of a vector, with adjacent (interleaved)
//! pairs. Window-only layers use the plain base; compressed layers use YaRN on their own base
//! for every rotation they do (queries, KV, compressed rows, indexer). YaRN's magnitude factor
//! is not applied: the official code and transformers both leave cos/sin at unit length.

use crate::config::{LayerKind, ModelConfig};

#[derive(Clone, Debug)]
pub struct Rope {
    /// One frequency per pair.
    freqs: Vec<f32>,
}

impl Rope {
    pub fn plain(base: f32, rope_dim: usize) -> Rope {
        Rope { freqs: base_freqs(base, rope_dim) }
    }

    pub fn yarn(base: f32, rope_dim: usize, factor: f32, orig_ctx: u64, beta_fast: f32, beta_slow: f32) -> Rope {
        let extrap = base_freqs(base, rope_dim);
        let dim = rope_dim as f64;
        // The pair index at which a frequency completes `turns` rotations over the original
        // context: below `low` frequencies are kept, above `high` they are divided by `factor`.
        let corr = |turns: f32| {
            dim * (orig_ctx as f64 / (turns as f64 * 2.0 * std::f64::consts::PI)).ln() / (2.0 * (base as f64).ln())
        };
        let low = corr(beta_fast).floor().max(0.0);
        let high = corr(beta_slow).ceil().min(dim - 1.0);
        let span = (high - low).max(0.001);
        let freqs = extrap
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let keep = 1.0 - ((i as f64 - low) / span).clamp(0.0, 1.0) as f32;
                (f / factor) * (1.0 - keep) + f * keep
            })
            .collect();
        Rope { freqs }
    }

    /// The rotation a layer of this kind uses.
    pub fn for_layer(cfg: &ModelConfig, kind: LayerKind) -> Rope {
        match kind {
            LayerKind::Window => Rope::plain(cfg.rope_freq_base, cfg.rope_dim),
            _ => Rope::yarn(
                cfg.compress_rope_freq_base,
                cfg.rope_dim,
                cfg.yarn_factor,
                cfg.yarn_orig_ctx,
                cfg.yarn_beta_fast,
                cfg.yarn_beta_slow,
            ),
        }
    }

    /// One frequency per rotated pair (what a GPU kernel needs to rotate the same way).
    pub fn freqs(&self) -> &[f32] {
        &self.freqs
    }

    pub fn rope_dim(&self) -> usize {
        2 * self.freqs.len()
    }

    /// Rotates the tail of `v` to position `pos` (or back from it when `inverse`).
    pub fn apply(&self, v: &mut [f32], pos: u64, inverse: bool) {
        let n = v.len();
        let tail = &mut v[n - self.rope_dim()..];
        let p = pos as f32;
        for (i, f) in self.freqs.iter().enumerate() {
            // The angle is formed in f32 as the reference implementations do; at long
            // positions this rounding is part of the model's behaviour.
            let angle = (p * f) as f64;
            let (s, c) = (angle.sin() as f32, angle.cos() as f32);
            let s = if inverse { -s } else { s };
            let (a, b) = (tail[2 * i], tail[2 * i + 1]);
            tail[2 * i] = a * c - b * s;
            tail[2 * i + 1] = a * s + b * c;
        }
    }
}

fn base_freqs(base: f32, rope_dim: usize) -> Vec<f32> {
    (0..rope_dim / 2).map(|i| (base as f64).powf(-(2.0 * i as f64) / rope_dim as f64) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_yarn_ramp() {
        let r = Rope::yarn(160000.0, 64, 16.0, 65536, 32.0, 1.0);
        let e = base_freqs(160000.0, 64);
        for (i, (&f, &b)) in r.freqs.iter().zip(&e).enumerate() {
            if i <= 15 {
                assert_eq!(f, b, "pair {i} unscaled");
            } else if i >= 25 {
                assert!((f - b / 16.0).abs() <= b * 1e-6, "pair {i} interpolated");
            }
        }
        assert_eq!(r.freqs.len(), 32);
        // Pair 20 blends with weight 0.5 (low 15, high 25).
        let want = e[20] / 16.0 * 0.5 + e[20] * 0.5;
        assert!((r.freqs[20] - want).abs() <= want * 1e-6);
    }

    #[test]
    fn inverse_undoes_rotation_and_head_is_untouched() {
        let r = Rope::plain(10000.0, 8);
        let orig: Vec<f32> = (0..16).map(|i| i as f32 * 0.37 - 2.0).collect();
        let mut v = orig.clone();
        r.apply(&mut v, 1234, false);
        assert_eq!(&v[..8], &orig[..8]);
        assert!(v[8..].iter().zip(&orig[8..]).any(|(a, b)| (a - b).abs() > 1e-3));
        r.apply(&mut v, 1234, true);
        for (a, b) in v.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
