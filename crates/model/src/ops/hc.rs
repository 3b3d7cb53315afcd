//! Manifold-constrained hyper-connections: the residual stream is `hc` parallel streams
//! (state `S`, `hc × n_embd`, stream-major). Before each sublayer a learned read-out mixes
//! them into one input; after it, the output is written back and the streams are re-mixed by a
//! matrix pushed towards doubly-stochastic by Sinkhorn normalisation.
//!
//! The mixing logits `m` come from a projection of the RMS-normalised flattened state; the
//! caller computes that matvec (it is a weight product like any other) and hands `m` here.

/// The per-token mixing decided at one HC site.
#[derive(Clone, Debug, PartialEq)]
pub struct HcMix {
    /// Read-out weights (not normalised to sum 1).
    pub pre: Vec<f32>,
    /// Write-back gains of the sublayer output, in (0, 2).
    pub post: Vec<f32>,
    /// `comb[a * hc + b]`: weight of old stream `a` in new stream `b`.
    pub comb: Vec<f32>,
}

/// Splits the `(2 + hc) * hc` logits into pre, post and the Sinkhorn-normalised combine matrix.
pub fn mix(m: &[f32], scale: &[f32], base: &[f32], hc: usize, iters: usize, eps: f32) -> HcMix {
    let sig = super::sigmoid;
    let pre = (0..hc).map(|i| sig(m[i] * scale[0] + base[i]) + eps).collect();
    let post = (0..hc).map(|i| 2.0 * sig(m[hc + i] * scale[1] + base[hc + i])).collect();
    let mut c: Vec<f32> = (0..hc * hc).map(|k| m[2 * hc + k] * scale[2] + base[2 * hc + k]).collect();
    // Softmax over destinations (within a row), then alternate column and row normalisation;
    // the sequence starts and ends with a column step: `iters` column steps, `iters - 1` row steps.
    for row in c.chunks_exact_mut(hc) {
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - mx).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v = *v / sum + eps);
    }
    normalise_columns(&mut c, hc, eps);
    for _ in 1..iters {
        for row in c.chunks_exact_mut(hc) {
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum + eps);
        }
        normalise_columns(&mut c, hc, eps);
    }
    HcMix { pre, post, comb: c }
}

fn normalise_columns(c: &mut [f32], hc: usize, eps: f32) {
    for b in 0..hc {
        let sum: f32 = (0..hc).map(|a| c[a * hc + b]).sum();
        (0..hc).for_each(|a| c[a * hc + b] /= sum + eps);
    }
}

/// `x = Σ_h pre[h] · S[h]`.
pub fn read(state: &[f32], pre: &[f32], out: &mut [f32]) {
    let e = out.len();
    out.fill(0.0);
    for (h, w) in pre.iter().enumerate() {
        for (o, s) in out.iter_mut().zip(&state[h * e..(h + 1) * e]) {
            *o += w * s;
        }
    }
}

/// `S_new[b] = post[b] · y + Σ_a comb[a][b] · S_old[a]`, each element as `post · y`, then
/// `+ comb · old` for ascending `a`.
pub fn write(state: &mut [f32], y: &[f32], mix: &HcMix) {
    let (e, hc) = (y.len(), mix.post.len());
    // Element i of every new stream reads element i of the old ones only, so the update runs
    // in place a chunk of columns at a time (the old chunk copied out first); fixed-width
    // chunks keep the arithmetic and the copies in vector registers.
    let mut old = vec![[0f32; HC_CHUNK]; hc];
    let full = e / HC_CHUNK * HC_CHUNK;
    for i0 in (0..full).step_by(HC_CHUNK) {
        write_chunk::<HC_CHUNK>(state, y, mix, &mut old, i0);
    }
    for i0 in full..e {
        write_chunk::<1>(state, y, mix, &mut old, i0);
    }
}

const HC_CHUNK: usize = 8;

/// Columns `i0..i0 + W` of [`write`]; `old` has a row per stream.
#[inline(always)]
fn write_chunk<const W: usize>(state: &mut [f32], y: &[f32], mix: &HcMix, old: &mut [[f32; HC_CHUNK]], i0: usize) {
    let (e, hc) = (y.len(), mix.post.len());
    let cols = |a: usize| a * e + i0..a * e + i0 + W;
    for (a, o) in old.iter_mut().enumerate() {
        let src: &[f32; W] = state[cols(a)].try_into().expect("W columns");
        o[..W].copy_from_slice(src);
    }
    let yc: &[f32; W] = y[i0..i0 + W].try_into().expect("W columns");
    for b in 0..hc {
        let mut acc = [0f32; W];
        for (v, &yi) in acc.iter_mut().zip(yc) {
            *v = mix.post[b] * yi;
        }
        for (a, o) in old.iter().enumerate() {
            let c = mix.comb[a * hc + b];
            for (v, &x) in acc.iter_mut().zip(o) {
                *v += c * x;
            }
        }
        let dst: &mut [f32; W] = (&mut state[cols(b)]).try_into().expect("W columns");
        *dst = acc;
    }
}

/// The final read-out before the LM head: sigmoid weights with a single scale, no Sinkhorn.
pub fn head_weights(m: &[f32], scale: f32, base: &[f32], eps: f32) -> Vec<f32> {
    m.iter().zip(base).map(|(m, b)| super::sigmoid(m * scale + b) + eps).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The in-place chunked update against the formula over a copy, bit for bit (widths that
    /// leave a partial chunk included).
    #[test]
    fn write_in_place_equals_the_formula() {
        for (e, hc) in [(256usize, 4usize), (13, 4), (8, 2), (3, 1)] {
            let state: Vec<f32> = (0..e * hc).map(|i| ((i * 7919) % 101) as f32 * 0.03 - 1.5).collect();
            let y: Vec<f32> = (0..e).map(|i| ((i * 31) % 17) as f32 * 0.1 - 0.8).collect();
            let m: Vec<f32> = (0..(2 + hc) * hc).map(|i| ((i * 13) % 7) as f32 * 0.2 - 0.6).collect();
            let mx = mix(&m, &[0.9; 3], &vec![0.05; (2 + hc) * hc], hc, 20, 1e-6);
            let mut want = state.clone();
            for b in 0..hc {
                for i in 0..e {
                    let mut acc = mx.post[b] * y[i];
                    for a in 0..hc {
                        acc += mx.comb[a * hc + b] * state[a * e + i];
                    }
                    want[b * e + i] = acc;
                }
            }
            let mut got = state.clone();
            write(&mut got, &y, &mx);
            assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "e {e} hc {hc}");
        }
    }

    #[test]
    fn sinkhorn_is_nearly_doubly_stochastic() {
        let hc = 4;
        let m: Vec<f32> = (0..24).map(|i| ((i * 7919) % 13) as f32 * 0.3 - 1.5).collect();
        let mx = mix(&m, &[0.7, 1.1, 1.3], &[0.1; 24], hc, 20, 1e-6);
        for b in 0..hc {
            let col: f32 = (0..hc).map(|a| mx.comb[a * hc + b]).sum();
            assert!((col - 1.0).abs() < 1e-5, "column {b} sums to {col}");
        }
        for a in 0..hc {
            let row: f32 = mx.comb[a * hc..(a + 1) * hc].iter().sum();
            assert!((row - 1.0).abs() < 1e-2, "row {a} sums to {row}");
        }
        assert!(mx.post.iter().all(|p| *p > 0.0 && *p < 2.0));
        assert!(mx.pre.iter().all(|p| *p > 0.0 && *p < 1.0 + 1e-5));
    }

    #[test]
    fn write_moves_streams_from_source_to_destination() {
        // A permutation matrix: old stream a goes to new stream (a + 1) % 2.
        let mx = HcMix { pre: vec![1.0, 0.0], post: vec![0.0, 1.0], comb: vec![0.0, 1.0, 1.0, 0.0] };
        let mut s = vec![1.0, 2.0, 10.0, 20.0];
        write(&mut s, &[100.0, 200.0], &mx);
        assert_eq!(s, vec![10.0, 20.0, 101.0, 202.0]);
    }
}
