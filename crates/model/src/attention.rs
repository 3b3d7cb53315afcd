//! Attention: 64 query heads (in Flash) over one shared 512-wide head that is both key and
//! value. A token attends to the raw rows of the last `window` positions (itself included)
//! plus the visible compressed rows, in one softmax that also holds a learned per-head sink
//! logit (which takes probability mass but contributes no value).

use crate::ops::dot;

/// Softmax attention of one head over `rows` (each `q.len()` wide), with a sink logit.
/// Writes the weighted sum of rows into `out`.
pub fn attend_head<'a>(q: &[f32], rows: impl Iterator<Item = &'a [f32]> + Clone, sink: f32, out: &mut [f32]) {
    let scale = 1.0 / (q.len() as f32).sqrt();
    let scores: Vec<f32> = rows.clone().map(|k| dot(q, k) * scale).collect();
    let m = scores.iter().copied().fold(sink, f32::max);
    let mut den = (sink - m).exp();
    out.fill(0.0);
    for (s, k) in scores.iter().zip(rows) {
        let e = (s - m).exp();
        den += e;
        for (o, v) in out.iter_mut().zip(k) {
            *o += e * v;
        }
    }
    let inv = 1.0 / den;
    out.iter_mut().for_each(|o| *o *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_takes_mass_without_value() {
        let rows: Vec<Vec<f32>> = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        let q = [0.0, 0.0];
        let mut out = [0.0; 2];
        // All logits 0: three equal shares, the sink's carries no value.
        attend_head(&q, rows.iter().map(|r| r.as_slice()), 0.0, &mut out);
        assert!((out[0] - 1.0 / 3.0).abs() < 1e-6 && (out[1] - 1.0 / 3.0).abs() < 1e-6);
        attend_head(&q, rows.iter().map(|r| r.as_slice()), -1e30, &mut out);
        assert!((out[0] - 0.5).abs() < 1e-6);
    }
}
