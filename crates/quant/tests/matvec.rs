//! `matvec` is the row dots, in parallel, deterministically; bad shapes are errors.

mod common;

use common::{random_matrix, random_x, DOT_TYPES};
use dsv4_quant::{dot_f32, dot_q, matvec, matvec_acts, GgmlType, Numerics, QuantError, QuantizedActs};

fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    cols / ty.block_elems() * ty.block_bytes()
}

#[test]
fn each_output_is_its_row_dot() {
    // 643 rows x 1024 cols is above the parallel threshold for every type but the 2-bit ones
    // (their 170-220 KiB run serially), so both paths are covered; 643 is not a multiple of
    // the eight-row float kernel.
    let (rows, cols) = (643, 1024);
    for ty in DOT_TYPES {
        let m = random_matrix(ty, rows, cols, 0.1, 50 + ty as u64);
        let x = random_x(cols, 60 + ty as u64);
        let acts = QuantizedActs::for_weight(ty, &x).unwrap();
        let rb = row_bytes(ty, cols);
        let mut plain = vec![0f32; rows];
        let mut official = vec![0f32; rows];
        matvec(ty, &m, rows, cols, &x, &mut plain, Numerics::Plain).unwrap();
        matvec(ty, &m, rows, cols, &x, &mut official, Numerics::Official).unwrap();
        for (r, row) in m.chunks_exact(rb).enumerate() {
            assert_eq!(plain[r].to_bits(), dot_f32(ty, row, &x).unwrap().to_bits(), "{ty} row {r}");
            assert_eq!(official[r].to_bits(), dot_q(ty, row, &acts).unwrap().to_bits(), "{ty} row {r}");
        }
        let mut reused = vec![0f32; rows];
        matvec_acts(ty, &m, rows, cols, &acts, &mut reused).unwrap();
        assert_eq!(reused, official);
    }
}

#[test]
fn result_does_not_depend_on_the_thread_count() {
    let (rows, cols) = (2048, 2048); // 1.1 MiB of IQ2_XXS: parallel
    let ty = GgmlType::IQ2_XXS;
    let m = random_matrix(ty, rows, cols, 0.1, 5);
    let x = random_x(cols, 6);
    let run = |threads: usize, numerics| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let mut out = vec![0f32; rows];
        pool.install(|| matvec(ty, &m, rows, cols, &x, &mut out, numerics).unwrap());
        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    for numerics in [Numerics::Official, Numerics::Plain] {
        assert_eq!(run(1, numerics), run(3, numerics));
    }
}

#[test]
fn official_is_the_default() {
    assert_eq!(Numerics::default(), Numerics::Official);
}

#[test]
fn empty_shapes_are_fine() {
    let mut out = vec![1f32; 3];
    matvec(GgmlType::Q8_0, &[], 3, 0, &[], &mut out, Numerics::Official).unwrap();
    assert_eq!(out, [0.0; 3]);
    matvec(GgmlType::F16, &[], 0, 64, &[0.0; 64], &mut [], Numerics::Plain).unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let ty = GgmlType::Q4_K;
    let (rows, cols) = (4, 512);
    let m = vec![0u8; rows * row_bytes(ty, cols)];
    let x = vec![0f32; cols];
    let mut out = vec![0f32; rows];
    let o = Numerics::Official;
    assert!(matches!(matvec(ty, &m[1..], rows, cols, &x, &mut out, o), Err(QuantError::Length { .. })));
    assert!(matches!(matvec(ty, &m, rows, cols, &x[1..], &mut out, o), Err(QuantError::Length { .. })));
    assert!(matches!(matvec(ty, &m, rows, cols, &x, &mut out[1..], o), Err(QuantError::Length { .. })));
    assert!(matches!(matvec(ty, &m, rows, 500, &x[..500], &mut out, o), Err(QuantError::PartialBlock { .. })));
    assert!(matches!(matvec(ty, &m, usize::MAX, cols, &x, &mut out, o), Err(QuantError::Overflow)));
    assert!(matches!(matvec(ty, &m, rows, usize::MAX / 256 * 256, &x, &mut out, o), Err(QuantError::Overflow)));
    assert!(matches!(
        matvec(GgmlType::Q4_0, &[0; 18], 1, 32, &[0.0; 32], &mut [0.0], Numerics::Plain),
        Err(QuantError::Unsupported(GgmlType::Q4_0))
    ));
    let q8_0_acts = QuantizedActs::for_weight(GgmlType::Q8_0, &x).unwrap();
    assert!(matches!(matvec_acts(ty, &m, rows, cols, &q8_0_acts, &mut out), Err(QuantError::ActsMismatch { .. })));
    let short = QuantizedActs::for_weight(ty, &x[..256]).unwrap();
    assert!(matches!(matvec_acts(ty, &m, rows, cols, &short, &mut out), Err(QuantError::Length { .. })));
}
