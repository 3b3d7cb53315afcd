//! FP4 E2M1 (1 sign bit, then a 3-bit index into the magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}):
//! the indexer's QAT format in DeepSeek's official numerics and the routed experts' format in
//! the HF checkpoint (FORMATS §3.10, §4.2).
//!
//! Special values (our choice): `e2m1_round` saturates every |x| above 6, infinities
//! included, to ±6 (as `ml_dtypes` does); NaN stays NaN in `e2m1_round`, and `e2m1_encode`
//! maps NaN to code 0 because E2M1 has no NaN (`ml_dtypes` 0.6.0 gives `-0`, code 8). The
//! sign of zero is kept.

/// Magnitude of index 0..8.
pub const E2M1_VALUES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// Index (0..8) of the magnitude nearest to `a >= 0`; a tie goes to the even index.
fn index(a: f32) -> u8 {
    let mut i = 0;
    for k in 0..7 {
        // Midpoints of neighbours are exact in f32.
        let mid = (E2M1_VALUES[k] + E2M1_VALUES[k + 1]) * 0.5;
        if a > mid || (a == mid && (k + 1) % 2 == 0) {
            i = k + 1;
        }
    }
    i as u8
}

/// Nearest E2M1 value to `x` (ties to the even index), saturating at ±6.
pub fn e2m1_round(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    E2M1_VALUES[index(x.abs()) as usize].copysign(x)
}

/// The 4-bit code (in the low nibble) of `e2m1_round(x)`; NaN gives 0.
pub fn e2m1_encode(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    let sign = if x.is_sign_negative() { 8 } else { 0 };
    sign | index(x.abs())
}

/// The value of the code in the low nibble of `c` (the high nibble is ignored).
pub fn e2m1_decode(c: u8) -> f32 {
    let mag = E2M1_VALUES[(c & 7) as usize];
    if c & 8 != 0 { -mag } else { mag }
}
