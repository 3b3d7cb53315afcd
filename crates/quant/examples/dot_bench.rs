//! Single-thread row-dot throughput per type (GB/s of weight bytes), for a 4096-wide row.
//! `cargo run --release -p dsv4-quant --example dot_bench`. Not a test: numbers only.

use std::hint::black_box;
use std::time::Instant;

use dsv4_quant::{dot_f32, dot_q, GgmlType, QuantizedActs};

const COLS: usize = 4096;

fn main() {
    // Random bytes are valid blocks once the f16 scale fields are finite; 0x3c00 = 1.0.
    let types = [
        GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
        GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS,
    ];
    let x: Vec<f32> = (0..COLS).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    println!("{:<8} {:>12} {:>12}", "type", "f32 GB/s", "quant GB/s");
    let only = std::env::args().nth(1);
    for ty in types {
        if only.as_deref().is_some_and(|o| o != ty.to_string()) {
            continue;
        }
        let row_bytes = COLS / ty.block_elems() * ty.block_bytes();
        // Enough distinct rows to exceed L2 is not the point here: one hot row measures the
        // kernel itself (the brief asks for compute throughput).
        let mut row: Vec<u8> = (0..row_bytes).map(|i| (i * 131 % 251) as u8).collect();
        fix_scales(ty, &mut row);
        let acts = QuantizedActs::for_weight(ty, &x).unwrap();
        let f = measure(|| dot_f32(ty, black_box(&row), black_box(&x)).unwrap());
        let q = measure(|| dot_q(ty, black_box(&row), black_box(&acts)).unwrap());
        let gbs = |secs: f64| row_bytes as f64 / secs / 1e9;
        println!("{:<8} {:>12.2} {:>12.2}", ty.to_string(), gbs(f), gbs(q));
    }
}

fn fix_scales(ty: GgmlType, row: &mut [u8]) {
    let offsets: &[usize] = match ty {
        GgmlType::Q8_0 | GgmlType::IQ2_XXS => &[0],
        GgmlType::Q4_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::F16 => return row.chunks_exact_mut(2).for_each(|c| c[1] &= 0x3b),
        GgmlType::BF16 => return row.chunks_exact_mut(2).for_each(|c| c[1] &= 0x3f),
        GgmlType::F32 => return row.chunks_exact_mut(4).for_each(|c| c[3] &= 0x3f),
        _ => return,
    };
    for blk in row.chunks_exact_mut(ty.block_bytes()) {
        for &o in offsets {
            blk[o..o + 2].copy_from_slice(&[0x00, 0x3c]);
        }
    }
}

/// Best seconds per call over many short timed batches: on a shared machine the minimum is
/// the batch that ran without being descheduled.
fn measure(mut f: impl FnMut() -> f32) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..60 {
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best
}
