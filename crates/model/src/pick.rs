//! What a draw of the next token needs from a logits row, and the reference reduction to it.
//!
//! A sampler rarely needs the whole vocabulary row (129,280 floats on Flash): greedy decoding
//! needs its argmax, min-p sampling only the tokens whose probability is at least `min_p`
//! times the best one's. A backend may hand back such a reduction instead of the row (the
//! GPU computes it where the logits are, so a batched step moves a few kilobytes per session
//! instead of half a megabyte); every backend must give exactly what [`Reduced::of`] gives
//! for the same row, so that a draw does not depend on where the reduction ran.

/// What the next draw of one session needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Want {
    /// The whole row (top-k, or min-p off: every token can be drawn).
    Row,
    /// The argmax alone (greedy).
    Argmax,
    /// The argmax, the maximum, and every token with `(l − max) · inv_t >= floor`, with its
    /// logit, in token order (temperature `1 / inv_t`, `floor = ln(min_p)`).
    Kept { inv_t: f32, floor: f32 },
}

/// A logits row reduced for one [`Want`] (never [`Want::Row`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Reduced {
    pub want: Want,
    /// [`argmax`] of the row.
    pub argmax: u32,
    /// [`max_logit`] of the row.
    pub max: f32,
    /// For [`Want::Kept`]: (token, logit) of the kept tokens, in token order; otherwise empty.
    pub kept: Vec<(u32, f32)>,
}

/// The logits after a session's last token, whole or reduced.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    Logits(Vec<f32>),
    Reduced(Reduced),
}

impl Next {
    /// The row reduced for `want` on the host (the whole row for [`Want::Row`]).
    pub fn of(logits: Vec<f32>, want: Want) -> Next {
        match want {
            Want::Row => Next::Logits(logits),
            w => Next::Reduced(Reduced::of(&logits, w)),
        }
    }

    /// Whether a draw that needs `want` can be made from this: a whole row serves any, a
    /// reduction only the want it was made for.
    pub fn serves(&self, want: Want) -> bool {
        match self {
            Next::Logits(_) => true,
            Next::Reduced(r) => r.want == want,
        }
    }
}

/// Whether logit `l` is kept by [`Want::Kept`] against the row's maximum: the sampler's own
/// test, f32 operations in this order (backends repeat them with exactly rounded operations).
pub fn kept(l: f32, max: f32, inv_t: f32, floor: f32) -> bool {
    (l - max) * inv_t >= floor
}

impl Reduced {
    /// The reference reduction of `logits` for `want` ([`Want::Row`] reduces like
    /// [`Want::Argmax`]: there is nothing to keep).
    pub fn of(logits: &[f32], want: Want) -> Reduced {
        let max = max_logit(logits);
        let kept = match want {
            Want::Kept { inv_t, floor } => (0u32..)
                .zip(logits)
                .filter(|&(_, &l)| kept(l, max, inv_t, floor))
                .map(|(t, &l)| (t, l))
                .collect(),
            Want::Row | Want::Argmax => Vec::new(),
        };
        Reduced { want, argmax: argmax_of(logits, max), max, kept }
    }
}

/// Index of the largest logit; the lowest index among equals (NaNs never win; 0 when every
/// logit is NaN). Two passes, the first a plain maximum the compiler vectorizes: a batched
/// decode step on the host scans every session's 129,280 logits on one thread, and the
/// one-pass compare-and-branch loop cost ~0.1 ms each.
pub fn argmax(logits: &[f32]) -> u32 {
    argmax_of(logits, max_logit(logits))
}

/// The first index holding `max` (0 when none does: every logit NaN).
fn argmax_of(logits: &[f32], max: f32) -> u32 {
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// The largest logit, NaNs passed over (-inf when there is nothing else): eight running
/// maxima, lane by lane, which the compiler vectorizes.
pub fn max_logit(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &l) in lanes.iter_mut().zip(c) {
            *m = if l > *m { l } else { *m };
        }
    }
    lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &l| if l > m { l } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_keep_what_the_test_keeps_in_token_order() {
        let row = [1.0, 3.0, f32::NAN, 3.0, 2.0, f32::NEG_INFINITY, 2.9];
        let r = Reduced::of(&row, Want::Argmax);
        assert_eq!((r.argmax, r.max, r.kept.len()), (1, 3.0, 0));
        // min_p = e^-0.5 at temperature 1: keeps l >= 2.5.
        let k = Want::Kept { inv_t: 1.0, floor: -0.5 };
        let r = Reduced::of(&row, k);
        assert_eq!(r.kept, vec![(1, 3.0), (3, 3.0), (6, 2.9)]);
        // Temperature 0.25 sharpens: l >= 2.875.
        let r = Reduced::of(&row, Want::Kept { inv_t: 4.0, floor: -0.5 });
        assert_eq!(r.kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![1, 3, 6]);
        let r = Reduced::of(&row, Want::Kept { inv_t: 8.0, floor: -0.5 });
        assert_eq!(r.kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![1, 3]);
        // Every logit NaN: argmax 0, max -inf, nothing kept.
        let r = Reduced::of(&[f32::NAN; 3], k);
        assert_eq!((r.argmax, r.max, r.kept.len()), (0, f32::NEG_INFINITY, 0));
    }

    #[test]
    fn a_row_serves_every_draw_a_reduction_only_its_own() {
        let row = vec![0.5, 1.5, -1.0];
        let k = Want::Kept { inv_t: 1.0, floor: -1.0 };
        assert!([Want::Row, Want::Argmax, k].iter().all(|&w| Next::of(row.clone(), Want::Row).serves(w)));
        let reduced = Next::of(row.clone(), k);
        assert!(reduced.serves(k));
        assert!(!reduced.serves(Want::Argmax) && !reduced.serves(Want::Row));
        assert!(!reduced.serves(Want::Kept { inv_t: 1.0, floor: -2.0 }));
        assert!(!Next::of(row, Want::Argmax).serves(k));
    }
}
