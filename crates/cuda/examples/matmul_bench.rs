//! Times the tensor-core matmul (official numerics) on the Flash shapes against the path it
//! replaces (one quantized-activation matvec per token).
//!
//! `matmul_bench [--gpu N] [--reps N] [--tokens N,N..] [--types q8_0,iq2_xxs,q2_k,q4_k]`
//!
//! Method as in `matvec_bench`: a spin kernel holds the GPU while a batch of launches queues
//! behind it, CUDA events around the batch, median over `--reps` batches. Each matrix is
//! stored in enough copies to exceed 4x the L2 cache and launches cycle through them, so
//! weights come from DRAM. Reported per (type, shape, tokens): µs per product, int8 TOPS
//! (2 · rows · cols · tokens per second), weight GB/s, and the per-token matvec time for the
//! same product (`--tokens` counts up to 64 only, to keep it short).

use cudarc::driver::sys::CUevent_flags;
use dsv4_cuda::quant::matvec::{act_bytes, pack_acts};
use dsv4_cuda::quant::Matmul;
use dsv4_cuda::util::Util;
use dsv4_cuda::{DeviceMatrix, Gpu, Matvec};
use dsv4_quant::{GgmlType, QuantizedActs};

const SHAPES: [(usize, usize, &str); 6] = [
    (4096, 1024, "attn_q_a"),
    (1024, 32768, "attn_q_b"),
    (8192, 4096, "attn_out_b"),
    (4096, 2048, "expert_up"),
    (2048, 4096, "expert_down"),
    (4096, 129280, "output"),
];

const BATCH: usize = 20;
const SPIN_CYCLES: i64 = 4_000_000;

fn time_ms(gpu: &Gpu, util: &Util, reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..BATCH {
        f(i);
    }
    gpu.synchronize().unwrap();
    let s = gpu.stream();
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        util.spin(gpu, SPIN_CYCLES).unwrap();
        let start = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        for i in 0..BATCH {
            f(rep * BATCH + i);
        }
        let end = s.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
        end.synchronize().unwrap();
        times.push(start.elapsed_ms(&end).unwrap() as f64 / BATCH as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn parse_list<T>(v: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    v.split(',').map(|s| f(s).ok_or(format!("bad value {s}"))).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut gpu_i, mut reps) = (0usize, 10usize);
    let mut tokens = vec![64usize, 256, 512];
    let mut types = vec![GgmlType::Q8_0, GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K];
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gpu" => gpu_i = v.parse()?,
            "--reps" => reps = v.parse()?,
            "--tokens" => tokens = parse_list(&v, |s| s.parse().ok())?,
            "--types" => {
                types = parse_list(&v, |s| match s {
                    "q8_0" => Some(GgmlType::Q8_0),
                    "iq2_xxs" => Some(GgmlType::IQ2_XXS),
                    "q2_k" => Some(GgmlType::Q2_K),
                    "q4_k" => Some(GgmlType::Q4_K),
                    _ => None,
                })?
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let gpu = Gpu::new(gpu_i)?;
    let (mm, mv, util) = (Matmul::new(&gpu)?, Matvec::new(&gpu)?, Util::new(&gpu)?);
    println!("{} ({} SMs, L2 {} MB)", gpu.name(), gpu.sm_count(), gpu.l2_bytes() >> 20);
    println!("{:<8} {:<12} {:>6} {:>10} {:>8} {:>8} {:>14}", "type", "tensor", "tokens", "us", "TOPS", "GB/s", "matvec/token us");
    for &ty in &types {
        for &(cols, rows, name) in &SHAPES {
            if rows == 129280 && ty != GgmlType::Q8_0 {
                continue;
            }
            let rb = cols / ty.block_elems() * ty.block_bytes();
            let bytes = rb * rows;
            let copies = ((4 * gpu.l2_bytes()).div_ceil(bytes)).clamp(1, 16);
            // Random codes; scales set to small f16 values so nothing overflows.
            let mut host = vec![0u8; bytes];
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            for b in host.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let f16_at: &[usize] = match ty {
                GgmlType::Q2_K => &[80, 82],
                GgmlType::Q4_K => &[0, 2],
                _ => &[0],
            };
            for blk in host.chunks_exact_mut(ty.block_bytes()) {
                for &o in f16_at {
                    blk[o..o + 2].copy_from_slice(&0x2000u16.to_le_bytes());
                }
            }
            let all: Vec<DeviceMatrix> = (0..copies).map(|_| DeviceMatrix::upload(&gpu, ty, rows, cols, &host)).collect::<Result<_, _>>()?;
            let maxn = *tokens.iter().max().unwrap_or(&1);
            let need = act_bytes(ty, cols)?;
            let stride = need.next_multiple_of(16);
            let x: Vec<f32> = (0..cols).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02).collect();
            let one = pack_acts(&QuantizedActs::for_weight(ty, &x)?);
            let mut acts = vec![0u8; maxn * stride];
            for t in 0..maxn {
                acts[t * stride..t * stride + need].copy_from_slice(&one);
            }
            let da = gpu.upload(&acts)?;
            let d1 = gpu.upload(&one)?;
            let mut dy = gpu.alloc_zeros::<f32>(maxn * rows)?;
            let mut y1 = gpu.alloc_zeros::<f32>(rows)?;
            let t1 = time_ms(&gpu, &util, reps, |i| mv.run_q(&all[i % all.len()], &d1, &mut y1).unwrap());
            for &n in &tokens {
                let ms = time_ms(&gpu, &util, reps, |i| mm.run(&all[i % all.len()], &da, stride, n, &mut dy).unwrap());
                let ops = 2.0 * rows as f64 * cols as f64 * n as f64;
                println!(
                    "{:<8} {:<12} {:>6} {:>10.1} {:>8.1} {:>8.0} {:>14.1}",
                    format!("{ty}"),
                    name,
                    n,
                    ms * 1e3,
                    ops / (ms * 1e-3) / 1e12,
                    bytes as f64 / (ms * 1e-3) / 1e9,
                    t1 * 1e3
                );
            }
        }
    }
    Ok(())
}
