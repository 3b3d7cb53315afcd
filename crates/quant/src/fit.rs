//! Scale/min fitting helpers shared by the K-quant and IQ2_XXS quantizers (FORMATS §4.4).
//!
//! These are the ggml search procedures as ds4's `quants.c` runs them. The goal is byte
//! parity with ds4's files, so every floating-point expression keeps the C evaluation order
//! (left to right, f32 throughout, no fused multiply-add): reordering a sum or a product here
//! changes which trial wins a search and therefore the stored bytes.
//!
//! Parity was checked byte for byte against ds4's `quants.c` built with gcc (`-std=c11`,
//! which keeps multiply-adds unfused). A build that fuses them (clang's default
//! `-ffp-contract=on`, e.g. on arm64 Macs) rounds some sums differently and can pick a
//! different trial in rare near-ties, so files made that way may differ in a few blocks.

/// Round to nearest, ties to even: ggml's `nearest_int`, evaluated the same way.
///
/// ggml adds 1.5·2^23 and reads the low mantissa bits back. For |v| ≤ 4194303 (the range it
/// asserts) that is exactly ties-to-even rounding. Outside it, release builds of ggml (assert
/// compiled out) return a deterministic wrapped value (NaN gives 0, +inf −4194304), and
/// degenerate fits do reach it: a zero-importance column can make `make_qkx` divide by
/// `max − min = −0`. Reproducing the bit trick keeps those cases byte-identical to ggml
/// release builds; every caller clamps the result, so the output stays a valid code.
#[inline]
/// Quantizes whole blocks of `x` (`elems` values each) into `out` (`bytes` each): `plain` per
/// block without importance, `weighted` with the block's `elems` importance values. The
/// k-quants' quantizers share it; lengths are checked by their callers.
pub(crate) fn quantize_blocks(
    x: &[f32],
    importance: Option<&[f32]>,
    out: &mut [u8],
    (elems, bytes): (usize, usize),
    plain: fn(&[f32], &mut [u8]),
    weighted: fn(&[f32], &[f32], &mut [u8]),
) {
    for (b, (xb, blk)) in x.chunks_exact(elems).zip(out.chunks_exact_mut(bytes)).enumerate() {
        match importance {
            None => plain(xb, blk),
            Some(imp) => weighted(xb, &imp[b * elems..][..elems], blk),
        }
    }
}

pub(crate) fn nearest_int(v: f32) -> i32 {
    let val = v + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Asymmetric fit `x ≈ scale·L + min` with `min ≤ 0` and `L ∈ [0, nmax]`, minimizing the
/// `weights`-weighted squared error (or absolute error with `use_mad`). Returns
/// `(scale, -min)`; `l` receives the codes.
///
/// This is both ggml's `make_qkx2_quants` and `make_qkx3_quants`: with an explicit weight
/// vector they differ only in the degenerate test (`max == min` versus `max <= min`), and
/// because `min` is clamped to at most 0 while `max ≥ x[0] ≥ min`, the two tests agree on
/// every finite input.
///
/// Trials use `iscale = (rmin + rdelta·is + nmax)/(max − min)` for `is = 0..=nstep`, each
/// followed by a closed-form weighted least-squares refit of `(scale, min)`; a trial is kept
/// only if it strictly lowers the error of the best so far, starting from the plain
/// `nmax/(max − min)` rounding.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    debug_assert!(n <= 32 && weights.len() == n && l.len() == n);
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l.fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| if use_mad { diff.abs() } else { diff * diff };
    // `min` is an argument, not captured: an accepted trial replaces `min`, and ggml's later
    // trials then round (and compute `iscale`) against the replaced value.
    let code =
        |iscale: f32, xi: f32, min: f32| nearest_int(iscale * (xi - min)).clamp(0, nmax) as u8;

    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        l[i] = code(iscale, x[i], min);
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let li = code(iscale, x[i], min);
            laux[i] = li;
            let (w, lf) = (weights[i], li as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                // The fit wants a positive offset, which the format cannot store: refit the
                // scale alone through the origin.
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l.copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Scale-only fit `x ≈ scale·L`, `L ∈ [0, nmax]`, for non-negative `x` (sub-block scales and
/// mins, IQ2_XXS magnitudes), minimizing the `w`-weighted squared error: ggml's
/// `make_qp_quants`. Returns the scale; `l` receives the codes.
///
/// A ±0.4 search around `nmax/max` picks the starting rounding, then up to five passes of
/// coordinate descent move single codes while that raises `(Σwlx)²/Σwl²`, which is the
/// error reduction of the least-squares scale. Returns 0 (all codes 0) when `max < 1e-15`,
/// and 0 when every weight is zero (ds4's guard against 0/0).
///
/// One input is not non-negative: IQ2_XXS passes the parity-flipped element of an octet as
/// `−|x|`. The C code then rounds it to a negative code and stores it in a `uint8_t` array,
/// where it wraps (−1 becomes 255), and later steps read the wrapped value back. That changes
/// the returned scale, which seeds IQ2_XXS's search, so it is reproduced here exactly: codes
/// are stored with a wrapping `as u8`, and the places where C uses the unwrapped `int` use it
/// here too. For non-negative `x` none of this has any effect.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], w: &[f32]) -> f32 {
    let n = x.len();
    debug_assert!(w.len() == n && l.len() == n);
    let mut max = 0.0f32;
    for &v in x {
        if v > max {
            max = v;
        }
    }
    if max < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    // Capped above only, as in C; see the note on negative inputs.
    let code = |iscale: f32, xi: f32| nearest_int(iscale * xi).min(nmax);

    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        // Uncapped in C (x ≤ max keeps it ≤ nmax anyway).
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += w[i] * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..n {
            let li = code(iscale_is, x[i]);
            let diff = x[i] - scale_is * li as f32;
            mse += w[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let li = code(iscale, x[i]);
        l[i] = li as u8;
        let lf = li as f32;
        sumlx += w[i] * x[i] * lf;
        suml2 += w[i] * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let wi = w[i];
            let li = l[i] as f32;
            let mut slx = sumlx - wi * x[i] * li;
            let mut sl2 = suml2 - wi * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += wi * x[i] * nl;
                    sl2 += wi * nl * nl;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Below this a group's largest magnitude counts as zero (ggml's `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// f32 → f16 bits, round to nearest even (the conversion ggml and ds4 use).
#[inline]
pub(crate) fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// The value a stored f16 scale decodes to; the K-quants recompute codes against it.
#[inline]
pub(crate) fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_is_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4999998), -2);
        assert_eq!(nearest_int(4194303.0), 4194303);
        // Inside the valid range it is ties-to-even rounding.
        let mut v = -5000.0f32;
        while v < 5000.0 {
            assert_eq!(nearest_int(v), v.round_ties_even() as i32, "{v}");
            v += 0.125 * 1.37;
        }
        // Outside it, the C release-build values.
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(f32::INFINITY), -4194304);
        assert_eq!(nearest_int(f32::NEG_INFINITY), -4194304);
    }

    #[test]
    fn qkx_fits_an_exact_affine_grid() {
        // x = 0.25·L − 1 for L = 0..15 is representable exactly.
        let x: Vec<f32> = (0..32).map(|i| 0.25 * (i % 16) as f32 - 1.0).collect();
        let w = vec![1.0; 32];
        let mut l = [0u8; 32];
        let (scale, neg_min) = make_qkx(15, &x, &w, &mut l, -1.0, 0.1, 20, false);
        assert!((scale - 0.25).abs() < 1e-6, "{scale}");
        assert!((neg_min - 1.0).abs() < 1e-6, "{neg_min}");
        for (i, &c) in l.iter().enumerate() {
            assert_eq!(c as usize, i % 16);
        }
    }

    #[test]
    fn qkx_degenerate_and_positive_inputs() {
        let mut l = [9u8; 16];
        assert_eq!(
            make_qkx(3, &[0.0; 16], &[1.0; 16], &mut l, -0.5, 0.1, 15, true),
            (0.0, -0.0)
        );
        assert_eq!(l, [0; 16]);
        // Data far from 0 would want a positive offset, which the format cannot store: the
        // offset stays 0 and every element takes the top level. (No trial is accepted: with
        // all codes equal the 2×2 system is singular, so the plain max/nmax scale remains.)
        let x: Vec<f32> = (0..16).map(|i| 10.0 + 0.1 * (i % 4) as f32).collect();
        let (scale, neg_min) = make_qkx(3, &x, &x, &mut l, -0.5, 0.1, 15, true);
        assert_eq!(neg_min, -0.0);
        assert!(l.iter().all(|&c| c == 3), "{l:?}");
        assert_eq!(scale, 1.0 / (3.0 / x[3]));
        // Spread data keeps a negative offset (stored as a positive `-min`).
        let x: Vec<f32> = (0..16).map(|i| -1.0 + 0.5 * (i % 5) as f32).collect();
        let w: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let (scale, neg_min) = make_qkx(3, &x, &w, &mut l, -0.5, 0.1, 15, true);
        assert!(neg_min > 0.9 && neg_min <= 1.0, "{neg_min}");
        let err: f32 = (0..16)
            .map(|i| (scale * l[i] as f32 - neg_min - x[i]).abs())
            .sum();
        assert!(err < 16.0 * 0.2, "{err}");
    }

    #[test]
    fn qp_recovers_exact_multiples_and_handles_zero() {
        let x = [0.0, 0.5, 1.0, 1.5, 2.0, 3.5, 31.5, 20.0];
        let mut l = [0u8; 8];
        let s = make_qp_quants(63, &x, &mut l, &[1.0; 8]);
        assert!((s - 0.5).abs() < 1e-6, "{s}");
        assert_eq!(l, [0, 1, 2, 3, 4, 7, 63, 40]);
        assert_eq!(make_qp_quants(63, &[0.0; 8], &mut l, &[1.0; 8]), 0.0);
        assert_eq!(l, [0; 8]);
        assert_eq!(make_qp_quants(63, &x, &mut l, &[0.0; 8]), 0.0);
    }
}
