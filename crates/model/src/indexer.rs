//! The lightning indexer of ratio-4 layers: once a layer has more compressed rows than
//! `top_k`, it scores every visible row cheaply and the attention sees only the best `top_k`.
//! `score[c] = Σ_h w[h] · relu(q_h · k_c)` with per-token head weights `w`.

use crate::ops::dot;

/// Indices (ascending) of the `top_k` highest-scoring rows among `n_rows`; ties go to the
/// lower index. `q` is `heads × dim`, `keys` is `n_rows × dim`.
pub fn select(q: &[f32], w: &[f32], keys: &[f32], n_rows: usize, top_k: usize) -> Vec<usize> {
    let dim = q.len() / w.len();
    let scores: Vec<f32> = (0..n_rows)
        .map(|c| {
            let k = &keys[c * dim..(c + 1) * dim];
            q.chunks_exact(dim).zip(w).map(|(qh, wh)| wh * dot(qh, k).max(0.0)).sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..n_rows).collect();
    // Stable sort by descending score keeps the lower index first among equals.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut chosen = order[..top_k.min(n_rows)].to_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_best_rows_and_breaks_ties_low() {
        // One head of width 1: score = w * relu(q * k).
        let keys = [1.0, 3.0, -5.0, 3.0, 2.0];
        assert_eq!(select(&[1.0], &[1.0], &keys, 5, 2), vec![1, 3]);
        assert_eq!(select(&[1.0], &[1.0], &keys, 5, 3), vec![1, 3, 4]);
        // relu: the negative dot is worth 0, tying with nothing else here.
        assert_eq!(select(&[-1.0], &[1.0], &keys, 5, 1), vec![2]);
    }
}
