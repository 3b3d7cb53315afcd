//! Batched products on the CPU's whole pool, in milliseconds per call: `matmul` of one matrix
//! against 1, 2, 4, 8 and 64 vectors (official numerics), for the tiny model's output head
//! (129,280 × 256 Q8_0, the largest product of its decode step) or a shape given on the
//! command line (`F16 24 1024`: its HC projections). Numbers only, not a test.
//! `cargo run --release -p dsv4-quant --example batch_bench [TYPE ROWS COLS]`.

use std::hint::black_box;
use std::time::Instant;

use dsv4_quant::{matmul, quantize_matrix, GgmlType, Numerics};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ty, rows, cols) = match args.as_slice() {
        [t, r, c] => (GgmlType::from_name(t).expect("a type name, e.g. Q8_0"), r.parse().expect("rows"), c.parse().expect("cols")),
        _ => (GgmlType::Q8_0, 129_280usize, 256usize),
    };
    let src: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
    let w = match ty {
        GgmlType::F32 => src.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => src.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect(),
        _ => quantize_matrix(ty, rows, cols, &src, None).expect("quantizable shape"),
    };
    println!("{ty} {rows}x{cols} ({:.1} MB), {} threads", w.len() as f64 / 1e6, rayon::current_num_threads());
    for n in [1usize, 2, 4, 8, 64] {
        let xs: Vec<f32> = (0..n * cols).map(|i| ((i * 31) % 997) as f32 / 500.0 - 1.0).collect();
        let mut out = vec![0f32; n * rows];
        let mut best = f64::MAX;
        for _ in 0..20 {
            let t = Instant::now();
            matmul(ty, black_box(&w), rows, cols, black_box(&xs), n, &mut out, Numerics::Official).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("n {n}: {:.3} ms ({:.1} GB/s of weights)", best * 1e3, w.len() as f64 / best / 1e9);
    }
}
