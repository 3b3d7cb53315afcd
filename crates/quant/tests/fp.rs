//! FP8 E4M3FN, FP4 E2M1 and E8M0 against ml_dtypes 0.6.0 (tests/data/fp.bin.gz, made by
//! tools/reference/gen_quant_golden.py).
//!
//! Rounding is compared on every probe with |x| <= 464 for E4M3FN: up to there ml_dtypes and
//! our saturating rule agree (464 is the tie between 448 and the NaN code and goes to 448);
//! above it ml_dtypes gives NaN and we give ±448, which is asserted separately. E2M1 saturates
//! the same way in both, so every non-NaN probe is compared.

mod common;

use common::{golden, Cursor};
use dsv4_quant::fp4::{e2m1_decode, e2m1_encode, e2m1_round};
use dsv4_quant::fp8::{e4m3_decode, e4m3_encode, e4m3_round, e8m0_decode};

struct Golden {
    e4_x: Vec<f32>,
    e4_code: Vec<u8>,
    e2_x: Vec<f32>,
    e2_code: Vec<u8>,
    e4_dec: Vec<f32>,
    e2_dec: Vec<f32>,
    e8_dec: Vec<f32>,
}

fn load() -> Golden {
    let data = golden("fp.bin.gz");
    let mut c = Cursor(&data);
    let n = c.u32() as usize;
    let e4_x = c.f32s(n);
    let e4_code = c.take(n).to_vec();
    let m = c.u32() as usize;
    let e2_x = c.f32s(m);
    let e2_code = c.take(m).to_vec();
    let (e4_dec, e2_dec, e8_dec) = (c.f32s(256), c.f32s(16), c.f32s(256));
    assert!(c.0.is_empty());
    Golden { e4_x, e4_code, e2_x, e2_code, e4_dec, e2_dec, e8_dec }
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

#[test]
fn e4m3_decode_matches_all_256_codes() {
    let g = load();
    for c in 0..=255u8 {
        assert!(same(e4m3_decode(c), g.e4_dec[c as usize]), "code {c:#04x}");
    }
    assert_eq!(e4m3_decode(0x7e), 448.0);
    assert!(e4m3_decode(0x7f).is_nan() && e4m3_decode(0xff).is_nan());
}

#[test]
fn e2m1_decode_matches_all_16_codes() {
    let g = load();
    for c in 0..16u8 {
        assert!(same(e2m1_decode(c), g.e2_dec[c as usize]), "code {c}");
    }
}

#[test]
fn e8m0_decode_matches_all_256_codes() {
    let g = load();
    for e in 0..=255u8 {
        assert!(same(e8m0_decode(e), g.e8_dec[e as usize]), "e {e}");
    }
    assert_eq!(e8m0_decode(0).to_bits(), 0x0040_0000);
    assert_eq!(e8m0_decode(127), 1.0);
}

#[test]
fn e4m3_rounding_matches_ml_dtypes_up_to_464() {
    let g = load();
    let mut compared = 0;
    let mut ties = 0;
    for (&x, &code) in g.e4_x.iter().zip(&g.e4_code) {
        if x.abs() > 464.0 {
            continue;
        }
        compared += 1;
        assert_eq!(e4m3_encode(x), code, "x = {x:e}");
        assert!(same(e4m3_round(x), e4m3_decode(code)), "x = {x:e}");
        // Count exact midpoints to be sure the probes include ties.
        let r = e4m3_round(x);
        let other = e4m3_decode(if code & 0x7f == 0 { code } else { code - 1 });
        if (x - r).abs() == (x - other).abs() && r != other {
            ties += 1;
        }
    }
    assert!(compared > 3000, "only {compared} probes");
    assert!(ties > 100, "only {ties} ties");
}

#[test]
fn e4m3_saturates_where_ml_dtypes_gives_nan() {
    let g = load();
    let mut seen = 0;
    for (&x, &code) in g.e4_x.iter().zip(&g.e4_code) {
        if x.abs() > 464.0 {
            seen += 1;
            assert_eq!(code & 0x7f, 0x7f, "ml_dtypes NaN for {x}");
            assert_eq!(e4m3_round(x), 448.0f32.copysign(x));
            assert_eq!(e4m3_encode(x), if x < 0.0 { 0xfe } else { 0x7e });
        }
    }
    assert!(seen > 10);
    assert_eq!(e4m3_round(f32::INFINITY), 448.0);
    assert_eq!(e4m3_round(f32::NEG_INFINITY), -448.0);
    assert!(e4m3_round(f32::NAN).is_nan());
    assert_eq!(e4m3_encode(f32::NAN), 0x7f);
    assert_eq!(e4m3_encode(-f32::NAN), 0xff);
}

#[test]
fn e4m3_spot_values() {
    assert_eq!(e4m3_round(464.0), 448.0); // tie -> even code 0x7e
    assert_eq!(e4m3_round(2f32.powi(-10)), 0.0); // half the smallest subnormal, tie -> 0
    assert_eq!(e4m3_round(3.0 * 2f32.powi(-10)), 2f32.powi(-8)); // 1.5 * 2^-9 -> 2 * 2^-9
    assert_eq!(e4m3_round(-1e-9).to_bits(), (-0.0f32).to_bits());
    assert_eq!(e4m3_round(1.0625), 1.0); // tie between 1 and 1.125 -> even mantissa
    assert_eq!(e4m3_round(1.1875), 1.25);
    assert_eq!(e4m3_encode(2f32.powi(-6)), 0x08);
}

#[test]
fn e2m1_rounding_matches_ml_dtypes() {
    let g = load();
    for (&x, &code) in g.e2_x.iter().zip(&g.e2_code) {
        assert_eq!(e2m1_encode(x), code, "x = {x:e}");
        assert!(same(e2m1_round(x), e2m1_decode(code)), "x = {x:e}");
    }
    assert!(g.e2_x.len() > 1000);
    // Ties to the even index, saturation, NaN.
    let pairs = [(0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0), (7.0, 6.0)];
    for (x, want) in pairs {
        assert_eq!(e2m1_round(x), want, "{x}");
        assert_eq!(e2m1_round(-x), -want, "{x}");
    }
    assert_eq!(e2m1_round(f32::INFINITY), 6.0);
    assert!(e2m1_round(f32::NAN).is_nan());
    assert_eq!(e2m1_encode(f32::NAN), 0);
}
