//! Times the matvec kernels on a GPU and compares their weight bandwidth with a measured
//! device-to-device copy.
//!
//! `matvec_bench [--gpu N] [--reps N] [--batch N,N..] [--types q8_0,iq2_xxs,..]`
//!
//! Method: each matrix is stored in enough copies to exceed 4x the L2 cache, and consecutive
//! launches cycle through the copies, so every launch streams its weights from DRAM, as in
//! decode. Each launch is bracketed by CUDA events; after warm-up launches the median of
//! `--reps` launches is reported. GB/s counts weight bytes only (activations are L1/L2
//! resident). The copy figure counts bytes read plus bytes written, the usual convention for
//! "achievable DRAM bandwidth"; a matvec that reaches it moves weights as fast as the memory
//! system moves anything.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use dsv4_cuda::quant::matvec::Variant;
use dsv4_cuda::{DeviceBuffer, DeviceMatrix, Gpu, Matvec};
use dsv4_quant::GgmlType;

/// `(cols, rows)` of the Flash projections (see tests/matvec.rs).
const SHAPES: [(usize, usize, &str); 6] = [
    (4096, 1024, "attn_q_a"),
    (1024, 32768, "attn_q_b"),
    (4096, 512, "attn_kv"),
    (8192, 4096, "attn_out_b"),
    (4096, 2048, "expert up"),
    (2048, 4096, "expert down"),
];

const TYPES: [(GgmlType, &str); 6] = [
    (GgmlType::Q8_0, "q8_0"),
    (GgmlType::IQ2_XXS, "iq2_xxs"),
    (GgmlType::Q2_K, "q2_k"),
    (GgmlType::Q4_K, "q4_k"),
    (GgmlType::F16, "f16"),
    (GgmlType::F32, "f32"),
];

struct Args {
    gpu: usize,
    reps: usize,
    batches: Vec<usize>,
    types: Vec<GgmlType>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { gpu: 0, reps: 200, batches: vec![1, 4, 16], types: TYPES.iter().map(|t| t.0).collect() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--gpu" => a.gpu = val()?.parse().map_err(|e| format!("--gpu: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--batch" => {
                a.batches = val()?.split(',').map(|s| s.parse().map_err(|e| format!("--batch: {e}"))).collect::<Result<_, _>>()?
            }
            "--types" => {
                a.types = val()?
                    .split(',')
                    .map(|s| TYPES.iter().find(|t| t.1 == s).map(|t| t.0).ok_or(format!("unknown type {s}")))
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => {
                println!("matvec_bench [--gpu N] [--reps N] [--batch 1,4,16] [--types q8_0,iq2_xxs,q2_k,q4_k,f16,f32]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Median of event-timed runs of `f` (milliseconds), after `warm` untimed runs.
fn time_ms(gpu: &Gpu, warm: usize, reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..warm {
        f(i);
    }
    let s = gpu.stream();
    let mut times = Vec::with_capacity(reps);
    for i in 0..reps {
        let start = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        f(warm + i);
        let end = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        end.synchronize().unwrap();
        times.push(start.elapsed_ms(&end).unwrap() as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Device-to-device copy bandwidth (read + write bytes per second).
fn copy_bandwidth(gpu: &Gpu) -> f64 {
    let bytes = 1usize << 30;
    let src: DeviceBuffer<u8> = gpu.alloc_zeros(bytes).unwrap();
    let mut dst: DeviceBuffer<u8> = gpu.alloc_zeros(bytes).unwrap();
    let ms = time_ms(gpu, 3, 20, |_| {
        gpu.stream().memcpy_dtod(&src.view(), &mut dst.view_mut()).unwrap();
    });
    2.0 * bytes as f64 / (ms * 1e-3)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("matvec_bench: {e}");
        std::process::exit(2)
    });
    let gpu = Gpu::new(args.gpu).unwrap_or_else(|e| {
        eprintln!("matvec_bench: {e}");
        std::process::exit(1)
    });
    let mv = Matvec::new(&gpu).unwrap_or_else(|e| {
        eprintln!("matvec_bench: {e}");
        std::process::exit(1)
    });
    println!(
        "device {}: {} (sm_{}), {} SMs, L2 {} MiB",
        gpu.index(),
        gpu.name(),
        gpu.arch(),
        gpu.sm_count(),
        gpu.l2_bytes() >> 20
    );
    let copy = copy_bandwidth(&gpu);
    println!("device-to-device copy: {:.0} GB/s (read + write)", copy / 1e9);
    println!();
    println!("{:<8} {:<12} {:>12} {:>9} {:>3} {:>8} {:>10} {:>9} {:>7}", "type", "tensor", "cols->rows", "MiB", "n", "variant", "us", "GB/s", "% copy");

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for &ty in &args.types {
        for &(cols, rows, label) in &SHAPES {
            let one = dsv4_cuda::quant::matvec::row_bytes(ty, cols).unwrap() * rows;
            // Enough copies to exceed 4x L2, so launches stream from DRAM.
            let copies = (4 * gpu.l2_bytes().max(1 << 20)).div_ceil(one).max(2);
            let mut host = vec![0u8; one];
            for b in host.chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
            }
            // Random bytes, scales included: the kernels have no value-dependent branches and
            // GPU float units run NaN/Inf at full speed, so timing does not depend on values.
            let mut staging = gpu.alloc_zeros::<u8>(one * copies).unwrap();
            for c in 0..copies {
                let mut v = staging.cuda_slice_mut().slice_mut(c * one..(c + 1) * one);
                gpu.stream().memcpy_htod(&host, &mut v).unwrap();
            }
            let buf = Arc::new(staging);
            let mats: Vec<DeviceMatrix> =
                (0..copies).map(|c| DeviceMatrix::view(buf.clone(), c * one, ty, rows, cols).unwrap()).collect();
            for &n in &args.batches {
                if n == 0 || n > dsv4_cuda::MAX_BATCH {
                    continue;
                }
                let x: DeviceBuffer<f32> = gpu.upload(&vec![0.5f32; n * cols]).unwrap();
                let mut y: DeviceBuffer<f32> = gpu.alloc_zeros(n * rows).unwrap();
                let v: Variant = mv.variant(rows, n);
                let ms = time_ms(&gpu, 10, args.reps, |i| mv.run_batch(&mats[i % copies], &x, n, &mut y).unwrap());
                let gbs = one as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "{:<8} {:<12} {:>12} {:>9.2} {:>3} {:>8} {:>10.2} {:>9.0} {:>6.0}%",
                    format!("{ty}"),
                    label,
                    format!("{cols}->{rows}"),
                    one as f64 / (1 << 20) as f64,
                    n,
                    format!("r{}n{}", v.rows_per_warp, v.tokens),
                    ms * 1e3,
                    gbs,
                    100.0 * gbs * 1e9 / copy
                );
            }
        }
    }
}
