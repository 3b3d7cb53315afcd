//! Single-thread throughput per type, in GB/s of weight bytes, for 4096-wide rows:
//! `dot_f32` and `dot_q` on one hot row, and `matvec` (plain and official) over 64 rows in a
//! one-thread pool (the official float path runs eight rows at a time there; the official
//! quantized path includes quantizing `x`, about 3 us, which a 64-row matrix does not
//! amortise).
//! `cargo run --release -p dsv4-quant --example dot_bench [TYPE]`. Numbers only, not a test.
//! `DSV4_QUANT_PORTABLE=1` measures the portable kernels.

use std::hint::black_box;
use std::time::Instant;

use dsv4_quant::{dot_f32, dot_q, matvec, GgmlType, Numerics, QuantizedActs};

const COLS: usize = 4096;
const ROWS: usize = 64;

fn main() {
    let types = [
        GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
        GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS,
    ];
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let x: Vec<f32> = (0..COLS).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    println!("{:<8} {:>10} {:>10} {:>12} {:>12}", "type", "dot_f32", "dot_q", "matvec plain", "matvec off.");
    let only = std::env::args().nth(1);
    for ty in types {
        if only.as_deref().is_some_and(|o| o != ty.to_string()) {
            continue;
        }
        let row_bytes = COLS / ty.block_elems() * ty.block_bytes();
        let mut m: Vec<u8> = (0..ROWS * row_bytes).map(|i| (i * 131 % 251) as u8).collect();
        fix_scales(ty, &mut m);
        let row = &m[..row_bytes];
        let acts = QuantizedActs::for_weight(ty, &x).unwrap();
        let f = measure(200, || dot_f32(ty, black_box(row), black_box(&x)).unwrap());
        let q = measure(200, || dot_q(ty, black_box(row), black_box(&acts)).unwrap());
        let mut out = vec![0f32; ROWS];
        // Timed from inside the one-thread pool, so no cross-thread wake-up is measured.
        let mut mv = |numerics| {
            pool.install(|| {
                measure(4, || {
                    matvec(ty, black_box(&m), ROWS, COLS, black_box(&x), &mut out, numerics).unwrap();
                    out[0]
                })
            })
        };
        let (mp, mo) = (mv(Numerics::Plain), mv(Numerics::Official));
        let gbs = |bytes: usize, secs: f64| bytes as f64 / secs / 1e9;
        println!(
            "{:<8} {:>10.2} {:>10.2} {:>12.2} {:>12.2}",
            ty.to_string(),
            gbs(row_bytes, f),
            gbs(row_bytes, q),
            gbs(m.len(), mp),
            gbs(m.len(), mo)
        );
    }
}

/// Finite scales (1.0) and moderate float elements, so no NaN/inf slows anything down.
fn fix_scales(ty: GgmlType, m: &mut [u8]) {
    let offsets: &[usize] = match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::F16 => return m.chunks_exact_mut(2).for_each(|c| c[1] &= 0x3b),
        GgmlType::BF16 => return m.chunks_exact_mut(2).for_each(|c| c[1] &= 0x3f),
        GgmlType::F32 => return m.chunks_exact_mut(4).for_each(|c| c[3] &= 0x3f),
        _ => return,
    };
    for blk in m.chunks_exact_mut(ty.block_bytes()) {
        for &o in offsets {
            blk[o..o + 2].copy_from_slice(&[0x00, 0x3c]);
        }
    }
}

/// Best seconds per call over many short timed batches of `n` calls: on a shared machine the
/// minimum is the batch that ran without being descheduled.
fn measure(n: usize, mut f: impl FnMut() -> f32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..60 {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}
