//! The fixed-order f32 accumulator behind every `dot_f32`.
//!
//! Order (documented so results never depend on the CPU): the product `w[i] * x[i]` of column
//! `i` is added, in ascending `i`, to lane `i % 32`; at the end the lanes are folded in halves
//! (`a[l] += a[l + 16]`, then `+ 8`, `+ 4`, `+ 2`, `+ 1`). The portable code below and the AVX2
//! kernels (`crate::x86`, four 8-wide registers holding lanes `8r..8r+8`) perform exactly
//! these f32 operations; Rust never fuses `a * b + c` into an FMA, so the result is the same
//! bit for bit on every x86-64 CPU.

/// Independent accumulation chains: 32 = four AVX2 registers, enough to hide add latency.
pub(crate) const LANES: usize = 32;

/// Portable accumulator. Four rows of eight: a flat `[f32; 32]` makes the compiler's
/// vectoriser split the lanes into badly shaped pieces.
#[derive(Clone, Copy)]
pub(crate) struct Acc([[f32; 8]; LANES / 8]);

impl Acc {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Acc([[0.0; 8]; LANES / 8])
    }

    /// Adds `w[i] * x[i]` for one `LANES`-wide chunk whose first column is a multiple of
    /// `LANES`.
    #[inline(always)]
    pub(crate) fn add_chunk(&mut self, w: &[f32; LANES], x: &[f32; LANES]) {
        for (r, acc) in self.0.iter_mut().enumerate() {
            for l in 0..8 {
                acc[l] += w[8 * r + l] * x[8 * r + l];
            }
        }
    }

    /// Adds a whole slice starting at a column that is a multiple of `LANES`; a short tail
    /// goes to lanes `0..tail`, which is still lane `i % LANES`.
    #[inline(always)]
    pub(crate) fn add_slice(&mut self, w: &[f32], x: &[f32]) {
        let mut wc = w.chunks_exact(LANES);
        let mut xc = x.chunks_exact(LANES);
        for (a, b) in (&mut wc).zip(&mut xc) {
            self.add_chunk(a.try_into().unwrap(), b.try_into().unwrap());
        }
        for (l, (a, b)) in wc.remainder().iter().zip(xc.remainder()).enumerate() {
            self.0[l / 8][l % 8] += a * b;
        }
    }

    #[inline(always)]
    pub(crate) fn sum(self) -> f32 {
        reduce(std::array::from_fn(|l| self.0[l / 8][l % 8]))
    }
}

/// The halving fold of the 32 lanes.
#[inline(always)]
pub(crate) fn reduce(mut a: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            a[l] += a[l + half];
        }
        half /= 2;
    }
    a[0]
}

/// Exactly dequantized weights · `x` in lane order, block by block: `dequant` turns each
/// `B`-byte block of `row` into its `E` weights (every format's portable `dot_f32`).
#[inline(always)]
pub(crate) fn dequant_dot<const B: usize, const E: usize>(row: &[u8], x: &[f32], dequant: fn(&[u8; B], &mut [f32; E])) -> f32 {
    let mut acc = Acc::new();
    for (blk, xs) in row.chunks_exact(B).zip(x.chunks_exact(E)) {
        let mut w = [0f32; E];
        dequant(blk.try_into().unwrap(), &mut w);
        acc.add_slice(&w, xs);
    }
    acc.sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_lane_then_halving_tree() {
        // Values chosen so that most other summation orders give a different f32.
        let w: Vec<f32> = (0..70).map(|i| if i % 7 == 0 { 1e8 } else { 1.0 + i as f32 * 1e-3 }).collect();
        let x: Vec<f32> = (0..70).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let mut acc = Acc::new();
        acc.add_slice(&w, &x);
        let mut lanes = [0f32; LANES];
        for i in 0..70 {
            lanes[i % LANES] += w[i] * x[i];
        }
        let mut n = LANES;
        while n > 1 {
            n /= 2;
            for l in 0..n {
                lanes[l] += lanes[l + n];
            }
        }
        assert_eq!(acc.sum().to_bits(), lanes[0].to_bits());
        let sequential: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert_ne!(acc.sum().to_bits(), sequential.to_bits(), "test data does not tell orders apart");
    }
}
