//! Activation quantizer corner cases (FORMATS §3.2, §3.3) and the weight-type -> format map.

use dsv4_quant::{ActFormat, BlockQ8K, BlockQ8_0Act, GgmlType, QuantError, QuantizedActs};

fn q8k(x: &[f32; 256]) -> BlockQ8K {
    BlockQ8K::quantize(x)
}

#[test]
fn q8k_all_zeros_gives_zero_scale_and_codes() {
    let b = q8k(&[0.0; 256]);
    assert_eq!(b.d.to_bits(), 0);
    assert!(b.qs.iter().all(|&q| q == 0));
    assert!(b.bsums.iter().all(|&s| s == 0));
    // -0.0 counts as zero too.
    let b = q8k(&[-0.0; 256]);
    assert_eq!(b.d, 0.0);
}

#[test]
fn q8k_positive_max_gives_negative_scale_and_flipped_codes() {
    let mut x = [0.0f32; 256];
    x[5] = 2.0;
    x[6] = -1.0;
    x[7] = 1.0;
    let b = q8k(&x);
    // iscale = -127/2 = -63.5; d = 1/iscale.
    assert_eq!(b.d.to_bits(), (1.0f32 / (-127.0f32 / 2.0)).to_bits());
    assert!(b.d < 0.0);
    assert_eq!(b.qs[5], -127);
    assert_eq!(b.qs[6], 64); // 63.5 -> 64 (even)
    assert_eq!(b.qs[7], -64); // -63.5 -> -64 (even)
    assert_eq!(b.bsums[0], -127);
    // Dequantized codes reproduce the sign of x.
    assert!(b.d * b.qs[5] as f32 > 0.0);
}

#[test]
fn q8k_negative_max_gives_positive_scale() {
    let mut x = [0.5f32; 256];
    x[100] = -4.0;
    let b = q8k(&x);
    assert!(b.d > 0.0);
    assert_eq!(b.qs[100], -127);
    // iscale = 31.75; 0.5 * 31.75 = 15.875 -> 16
    assert_eq!(b.qs[0], 16);
    assert_eq!(b.bsums[6], 15 * 16 - 127);
}

#[test]
fn q8k_first_of_equal_magnitudes_sets_the_sign() {
    let mut x = [0.0f32; 256];
    x[3] = 2.0;
    x[10] = -2.0;
    let first_positive = q8k(&x);
    assert!(first_positive.d < 0.0);
    assert_eq!((first_positive.qs[3], first_positive.qs[10]), (-127, 127));
    x[3] = -2.0;
    x[10] = 2.0;
    let first_negative = q8k(&x);
    assert!(first_negative.d > 0.0);
    assert_eq!((first_negative.qs[3], first_negative.qs[10]), (-127, 127));
}

#[test]
fn q8k_rounds_exact_halves_to_even() {
    // max = -127 makes iscale exactly 1, so codes are round_half_even(x).
    let mut x = [0.0f32; 256];
    x[0] = -127.0;
    let halves = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5];
    let want: [i8; 8] = [0, 2, 2, 0, -2, -2, 126, -126];
    x[1..9].copy_from_slice(&halves);
    let b = q8k(&x);
    assert_eq!(b.d, 1.0);
    assert_eq!(&b.qs[1..9], &want);
    assert_eq!(b.bsums[0] as i32, -127 + want.iter().map(|&q| q as i32).sum::<i32>());
}

#[test]
fn q8k_bsums_are_sums_of_sixteen() {
    let x: [f32; 256] = std::array::from_fn(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0);
    let b = q8k(&x);
    for j in 0..16 {
        assert_eq!(b.bsums[j] as i32, b.qs[16 * j..16 * j + 16].iter().map(|&q| q as i32).sum::<i32>());
    }
}

#[test]
fn q8_0_act_keeps_an_f32_scale_and_rounds_half_even() {
    let mut x = [0.0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.5;
    let b = BlockQ8_0Act::quantize(&x);
    assert_eq!(b.d, 1.0);
    assert_eq!(&b.qs[..4], &[127, 2, -4, 0]);

    // amax / 127 stays f32 (an f16 scale would round 0.1/127 differently).
    let mut x = [0.0f32; 32];
    x[9] = -0.1;
    let b = BlockQ8_0Act::quantize(&x);
    assert_eq!(b.d.to_bits(), (0.1f32 / 127.0).to_bits());
    assert_ne!(b.d, half::f16::from_f32(b.d).to_f32());
    assert_eq!(b.qs[9], -127);

    let z = BlockQ8_0Act::quantize(&[0.0; 32]);
    assert_eq!((z.d, z.qs), (0.0, [0; 32]));
}

#[test]
fn weight_types_pick_their_activation_format() {
    use GgmlType::*;
    for (ty, f) in [(F32, ActFormat::F32), (F16, ActFormat::F32), (BF16, ActFormat::F32), (Q8_0, ActFormat::Q8_0),
        (Q2_K, ActFormat::Q8K), (Q4_K, ActFormat::Q8K), (IQ2_XXS, ActFormat::Q8K)]
    {
        assert_eq!(ActFormat::for_weight(ty), Ok(f));
        let acts = QuantizedActs::for_weight(ty, &[1.0; 512]).unwrap();
        assert_eq!(acts.format(), f);
        assert_eq!(acts.len(), 512);
    }
    assert_eq!(ActFormat::for_weight(Q4_0), Err(QuantError::Unsupported(Q4_0)));
    assert_eq!(ActFormat::for_weight(I32), Err(QuantError::Unsupported(I32)));
}

#[test]
fn partial_activation_blocks_are_errors() {
    assert!(matches!(
        QuantizedActs::for_weight(GgmlType::Q2_K, &[1.0; 300]),
        Err(QuantError::PartialActBlock { format: ActFormat::Q8K, elems: 300, block: 256 })
    ));
    assert!(matches!(
        QuantizedActs::for_weight(GgmlType::Q8_0, &[1.0; 33]),
        Err(QuantError::PartialActBlock { format: ActFormat::Q8_0, .. })
    ));
    assert_eq!(QuantizedActs::for_weight(GgmlType::F16, &[1.0; 33]).unwrap().len(), 33);
}
