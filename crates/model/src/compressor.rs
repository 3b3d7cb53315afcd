//! The KV compressor: every `ratio` tokens it pools their projections into one compressed
//! row, weighting each dimension by a softmax over the tokens' scores (gate logits plus a
//! learned per-position bias).
//!
//! Ratio 4 overlaps windows: each token projects two lanes, lane A for the *next* window and
//! lane B for its own, so a row pools 8 candidates per dimension (the previous window's lane A
//! and the current window's lane B). Other ratios pool their own window only.

use crate::state::Frontier;

/// Adds one token's projections at absolute position `pos` (`kv`, `score`: `width` values;
/// `score` already includes the position bias). Returns the pooled row, `width / lanes` wide,
/// when this token completes a window, and leaves the frontier in canonical form (slots that
/// will be overwritten before they are read are reset) so saved states compare equal.
pub fn push(f: &mut Frontier, pos: u64, kv: &[f32], score: &[f32]) -> Option<Vec<f32>> {
    let (r, w) = (f.ratio, f.width);
    let pm = (pos % r as u64) as usize;
    let overlapping = f.kv.len() == 2 * r * w;
    let slot = if overlapping { r + pm } else { pm };
    f.kv[slot * w..(slot + 1) * w].copy_from_slice(kv);
    f.score[slot * w..(slot + 1) * w].copy_from_slice(score);
    if pm != r - 1 {
        return None;
    }
    let row = if overlapping {
        let d = w / 2;
        let cands = |j: usize| {
            let prev = (0..r).map(move |s| s * w + j);
            let cur = (r..2 * r).map(move |s| s * w + d + j);
            prev.chain(cur)
        };
        let row = (0..d).map(|j| pool(f, cands(j))).collect();
        // The current window becomes the previous one.
        f.kv.copy_within(r * w..2 * r * w, 0);
        f.score.copy_within(r * w..2 * r * w, 0);
        f.kv[r * w..].fill(0.0);
        f.score[r * w..].fill(f32::NEG_INFINITY);
        row
    } else {
        let row = (0..w).map(|j| pool(f, (0..r).map(move |s| s * w + j))).collect();
        f.kv.fill(0.0);
        f.score.fill(f32::NEG_INFINITY);
        row
    };
    Some(row)
}

/// Softmax-weighted sum over candidate indices; 0 when every candidate is absent (-inf).
fn pool(f: &Frontier, idx: impl Iterator<Item = usize> + Clone) -> f32 {
    let m = idx.clone().map(|i| f.score[i]).fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return 0.0;
    }
    let (mut num, mut den) = (0f32, 0f32);
    for i in idx {
        let e = (f.score[i] - m).exp();
        num += e * f.kv[i];
        den += e;
    }
    num / den
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LayerKind;

    #[test]
    fn non_overlapping_pools_each_window_once() {
        let mut f = Frontier::new(LayerKind::Hca { ratio: 3 }, 2);
        let mut rows = Vec::new();
        for p in 0..7u64 {
            // Equal scores: the row is the mean of the window's values.
            if let Some(r) = push(&mut f, p, &[p as f32, 10.0 * p as f32], &[0.5, 0.5]) {
                rows.push(r);
            }
        }
        assert_eq!(rows, vec![vec![1.0, 10.0], vec![4.0, 40.0]]);
    }

    #[test]
    fn ratio_four_mixes_previous_lane_a_with_current_lane_b() {
        let mut f = Frontier::new(LayerKind::Csa, 1);
        let mut rows = Vec::new();
        for p in 0..8u64 {
            // Lane A carries 100 + p, lane B carries p; equal scores.
            if let Some(r) = push(&mut f, p, &[100.0 + p as f32, p as f32], &[0.0, 0.0]) {
                rows.push(r[0]);
            }
        }
        // First window: no previous window, so only lane B of tokens 0..3 (mean 1.5).
        // Second: lane A of 0..3 (mean 101.5) and lane B of 4..7 (mean 5.5), equally weighted.
        assert_eq!(rows, vec![1.5, (101.5 + 5.5) / 2.0]);
    }
}
