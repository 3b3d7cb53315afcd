//! FP8 E4M3FN (1 sign, 4 exponent, 3 mantissa bits, bias 7, no infinities) and the E8M0
//! power-of-two scale byte: the formats of DeepSeek's official numerics (FORMATS §3.10, §4.2).
//!
//! E4M3FN codes: exponent 0 is subnormal (`m * 2^-9`), otherwise `(1 + m/8) * 2^(e-7)`;
//! `0x7f`/`0xff` are NaN; the largest finite magnitude is 448 (`0x7e`).
//!
//! Special values (our choice, documented because the formats leave it open):
//! * `e4m3_round` saturates: every |x| above 448, infinities included, gives ±448. This is
//!   ds4's rule (nearest of the finite codes 0..126) and what the KV round trip needs after
//!   its clamp. `ml_dtypes` agrees for |x| <= 464 (the tie between 448 and the NaN code, which
//!   goes to the even code 448) and gives NaN above it.
//! * NaN stays NaN: `e4m3_round(NaN)` is NaN, `e4m3_encode(NaN)` is `0x7f` (`0xff` with the
//!   sign bit set), as `ml_dtypes` does.
//! * The sign of zero is kept: a tiny negative value rounds to `-0.0` (code `0x80`).

const MAX: f32 = 448.0;
/// Smallest normal magnitude, 2^-6; below it the spacing is 2^-9.
const MIN_NORMAL: f32 = 1.0 / 64.0;

/// Nearest E4M3FN value to `x` (ties to the even code), saturating at ±448.
pub fn e4m3_round(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a >= MAX {
        MAX
    } else if a < MIN_NORMAL {
        // Subnormal range: a fixed grid of 2^-9; scaling by 512 is exact.
        (a * 512.0).round_ties_even() * (1.0 / 512.0)
    } else {
        // Round the 23-bit f32 mantissa to 3 bits, ties to even; a carry moves to the next
        // binade, which is correct. Below 448 nothing can round past 448.
        let b = a.to_bits();
        let lsb = (b >> 20) & 1;
        f32::from_bits((b + 0x7_ffff + lsb) & !0xf_ffff)
    };
    r.copysign(x)
}

/// The E4M3FN code of `e4m3_round(x)` (NaN -> `0x7f` with the sign bit of `x`).
pub fn e4m3_encode(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    if x.is_nan() {
        return sign | 0x7f;
    }
    let r = e4m3_round(x).abs();
    let mag = if r < MIN_NORMAL {
        // 0..=7 subnormal codes; 8/512 = 2^-6 lands on code 8, the first normal, as it should.
        (r * 512.0) as u8
    } else {
        let b = r.to_bits();
        let e = (b >> 23) as i32 - 127 + 7;
        ((e as u8) << 3) | ((b >> 20) & 7) as u8
    };
    sign | mag
}

/// The value of an E4M3FN code (`0x7f`/`0xff` -> NaN).
pub fn e4m3_decode(c: u8) -> f32 {
    let (e, m) = (((c >> 3) & 15) as u32, (c & 7) as u32);
    let mag = if e == 15 && m == 7 {
        f32::NAN
    } else if e == 0 {
        m as f32 * (1.0 / 512.0)
    } else {
        f32::from_bits(((e + 127 - 7) << 23) | (m << 20))
    };
    if c & 0x80 != 0 { -mag } else { mag }
}

/// E8M0 scale byte: `2^(e - 127)`. `e = 0` gives 2^-127 (an f32 subnormal, bits `0x00400000`);
/// `e = 255` is NaN as in the OCP MX spec and `ml_dtypes` (ds4 makes it +inf; it never occurs
/// in the files).
pub fn e8m0_decode(e: u8) -> f32 {
    match e {
        0 => f32::from_bits(0x0040_0000),
        255 => f32::NAN,
        _ => f32::from_bits((e as u32) << 23),
    }
}
