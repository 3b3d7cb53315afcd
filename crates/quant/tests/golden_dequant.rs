//! Dequantization is bit-identical to gguf-py 0.19.0 `dequantize` on random blocks
//! (tests/data/dequant.bin.gz, made by tools/reference/gen_quant_golden.py), and `dot_f32`
//! multiplies exactly those weights in its documented order.

mod common;

use common::{golden, lane_order_dot, random_x, Cursor};
use dsv4_quant::{dequantize_row, dot_f32, GgmlType};

struct Section {
    ty: GgmlType,
    raw: Vec<u8>,
    want: Vec<f32>,
}

fn sections() -> Vec<Section> {
    let data = golden("dequant.bin.gz");
    let mut c = Cursor(&data);
    let mut out = Vec::new();
    while !c.0.is_empty() {
        let ty = GgmlType::from_id(c.u32()).unwrap();
        let (n, b) = (c.u32() as usize, c.u32() as usize);
        let raw = c.take(b).to_vec();
        out.push(Section { ty, raw, want: c.f32s(n) });
    }
    out
}

#[test]
fn every_type_is_in_the_golden_file() {
    let types: Vec<GgmlType> = sections().iter().map(|s| s.ty).collect();
    use GgmlType::*;
    assert_eq!(types, [Q8_0, Q2_K, Q4_K, IQ2_XXS, F16, BF16]);
}

#[test]
fn dequantize_row_is_bit_identical_to_gguf_py() {
    for s in sections() {
        let mut got = vec![0f32; s.want.len()];
        dequantize_row(s.ty, &s.raw, &mut got).unwrap();
        let mut bad = 0;
        for (i, (g, w)) in got.iter().zip(&s.want).enumerate() {
            if g.to_bits() != w.to_bits() {
                if bad < 5 {
                    eprintln!("{} element {i}: got {g:e} ({:#x}), gguf-py {w:e} ({:#x})", s.ty, g.to_bits(), w.to_bits());
                }
                bad += 1;
            }
        }
        assert_eq!(bad, 0, "{}: {bad} of {} elements differ", s.ty, got.len());
    }
}

#[test]
fn golden_covers_subnormal_negative_and_extreme_scales() {
    // Guards the generator: the interesting f16 scale values must actually be present.
    let s = sections().into_iter().find(|s| s.ty == GgmlType::Q8_0).unwrap();
    let d: Vec<u16> = s.raw.chunks_exact(34).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
    assert!(d.iter().any(|&h| h & 0x7c00 == 0 && h & 0x3ff != 0), "subnormal d");
    assert!(d.iter().any(|&h| h & 0x8000 != 0), "negative d");
    assert!(d.contains(&0x7bff), "largest finite d");
}

#[test]
fn dot_f32_uses_the_gguf_py_weights_in_lane_order() {
    for s in sections() {
        if !s.ty.is_quantized() {
            continue; // the float sections contain infinities and NaNs on purpose
        }
        let n = s.ty.block_elems();
        let row_bytes = s.ty.block_bytes();
        // Rows of 2 blocks (512 or 64 elements) so the lanes wrap across blocks.
        for (r, (raw, want)) in s.raw.chunks_exact(2 * row_bytes).zip(s.want.chunks_exact(2 * n)).enumerate() {
            let x = random_x(2 * n, r as u64);
            let got = dot_f32(s.ty, raw, &x).unwrap();
            let expect = lane_order_dot(want, &x);
            assert_eq!(got.to_bits(), expect.to_bits(), "{} row {r}: {got} vs {expect}", s.ty);
        }
    }
}
