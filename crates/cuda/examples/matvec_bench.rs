//! Times the matvec kernels on a GPU and compares their weight bandwidth with a measured
//! device-to-device copy.
//!
//! `matvec_bench [--gpu N] [--reps N] [--batch N,N..] [--types q8_0,iq2_xxs,..] [--shapes ..]`
//!
//! Shapes: the Flash projections for every type, the 4096->129280 output head (Q8_0), and the
//! routed-expert launches of a decode step: 6 slots over a stack of 256 experts, the expert
//! ids read on the device (`run_experts_raw`), gate/up (4096->2048, one shared input) and
//! down (2048->4096, one input per slot), for the q2 types (IQ2_XXS gate/up, Q2_K down) and
//! the q4 type (Q4_K). Each line gives GB/s of weight bytes and its share of the copy rate.
//! The same source builds against older versions of the crate (it uses only the public API
//! they share), so one run can time old and new kernels side by side.
//!
//! Method: each matrix is stored in enough copies to exceed 4x the L2 cache, and consecutive
//! launches cycle through the copies, so every launch streams its weights from DRAM, as in
//! decode. A spin kernel holds the GPU while a batch of launches is queued behind it, so they
//! run back to back and the time between the CUDA events around the batch is GPU time only
//! (no host launch latency; the ~1 us gap between consecutive kernels stays in, as it would
//! in a CUDA graph). Reported: the median over `--reps` batches of batch time / launches. GB/s counts weight bytes only (activations are L1/L2
//! resident). The copy figure counts bytes read plus bytes written, the usual convention for
//! "achievable DRAM bandwidth"; a matvec that reaches it moves weights as fast as the memory
//! system moves anything.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::DevicePtr;
use dsv4_cuda::quant::matvec::Variant;
use dsv4_cuda::quant::ExpertSlots;
use dsv4_cuda::util::Util;
use dsv4_cuda::{DeviceBuffer, DeviceMatrix, Gpu, Matvec};
use dsv4_quant::GgmlType;

/// `(cols, rows)` of the Flash projections (see tests/matvec.rs).
const SHAPES: [(usize, usize, &str); 7] = [
    (4096, 1024, "attn_q_a"),
    (1024, 32768, "attn_q_b"),
    (4096, 512, "attn_kv"),
    (8192, 4096, "attn_out_b"),
    (4096, 2048, "expert_up"),
    (2048, 4096, "expert_down"),
    (4096, 129280, "head"),
];

/// The output head is Q8_0 in both published files; other types skip it.
fn shape_applies(ty: GgmlType, label: &str) -> bool {
    label != "head" || ty == GgmlType::Q8_0
}

/// Routed experts per layer, and the picks per token.
const N_EXPERT: usize = 256;
const USED: usize = 6;
/// `(type, cols, rows, label, shared input)`: the expert-slot launches of the q2 and q4 mixes.
const SLOT_SHAPES: [(GgmlType, usize, usize, &str, bool); 4] = [
    (GgmlType::IQ2_XXS, 4096, 2048, "x6_up", true),
    (GgmlType::Q2_K, 2048, 4096, "x6_down", false),
    (GgmlType::Q4_K, 4096, 2048, "x6_up", true),
    (GgmlType::Q4_K, 2048, 4096, "x6_down", false),
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
    /// Tensor labels to run (all when empty), e.g. `attn_out_b`.
    shapes: Vec<String>,
    /// One-token quantized products: also time forced CTA counts (1, 2, 4 per SM) for both
    /// group sizes, for tuning.
    sweep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        gpu: 0,
        reps: 30,
        batches: vec![1, 4, 16],
        types: TYPES.iter().map(|t| t.0).collect(),
        shapes: Vec::new(),
        sweep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--gpu" => a.gpu = val()?.parse().map_err(|e| format!("--gpu: {e}"))?,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--batch" => {
                a.batches = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--batch: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--types" => {
                a.types = val()?
                    .split(',')
                    .map(|s| {
                        TYPES
                            .iter()
                            .find(|t| t.1 == s)
                            .map(|t| t.0)
                            .ok_or(format!("unknown type {s}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--shapes" => a.shapes = val()?.split(',').map(str::to_string).collect(),
            "--sweep" => a.sweep = true,
            "-h" | "--help" => {
                println!(
                    "matvec_bench [--gpu N] [--reps N] [--batch 1,4,16] [--types q8_0,iq2_xxs,q2_k,q4_k,f16,f32] \
                     [--shapes attn_q_a,attn_q_b,attn_kv,attn_out_b,expert_up,expert_down,head,x6_up,x6_down] [--sweep]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Launches queued per timed batch: host enqueue of a batch (a few us per launch) must stay
/// well inside the spin kernel's ~2 ms.
const BATCH: usize = 50;
/// SM clocks the spin kernel waits (~2 ms at H100/H200 clocks).
const SPIN_CYCLES: i64 = 4_000_000;

/// Median GPU time of one call of `f` (milliseconds), `f(i)` being the i-th call.
fn time_ms(gpu: &Gpu, util: &Util, reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..BATCH {
        f(i);
    }
    gpu.synchronize().unwrap();
    let s = gpu.stream();
    let mut times = Vec::with_capacity(reps);
    for rep in 0..reps {
        util.spin(gpu, SPIN_CYCLES).unwrap();
        let start = s
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        for i in 0..BATCH {
            f(rep * BATCH + i);
        }
        let end = s
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .unwrap();
        end.synchronize().unwrap();
        times.push(start.elapsed_ms(&end).unwrap() as f64 / BATCH as f64);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Device-to-device copy bandwidth (read + write bytes per second).
fn copy_bandwidth(gpu: &Gpu, util: &Util) -> f64 {
    let bytes = 1usize << 30;
    let src: DeviceBuffer<u8> = gpu.alloc_zeros(bytes).unwrap();
    let mut dst: DeviceBuffer<u8> = gpu.alloc_zeros(bytes).unwrap();
    let ms = time_ms(gpu, util, 3, |_| {
        gpu.stream()
            .memcpy_dtod(&src.view(), &mut dst.view_mut())
            .unwrap();
    });
    2.0 * bytes as f64 / (ms * 1e-3)
}

/// `r<rows per warp>n<tokens>` (float kernels) or `g<rows per group>n<tokens>` (quantized).
fn variant_name(ty: GgmlType, v: Variant) -> String {
    let kind = if matches!(ty, GgmlType::F32 | GgmlType::F16) {
        'r'
    } else {
        'g'
    };
    if v.ctas > 0 {
        format!("{kind}{}c{}", v.rows, v.ctas)
    } else {
        format!("{kind}{}n{}", v.rows, v.tokens)
    }
}

/// Random bytes (scales included: the kernels have no value-dependent branches and GPU float
/// units run NaN/Inf at full speed, so timing does not depend on values).
fn fill_random(rng: &mut u64, host: &mut [u8]) {
    for b in host.chunks_mut(8) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        b.copy_from_slice(&rng.to_le_bytes()[..b.len()]);
    }
}

#[allow(clippy::too_many_arguments)]
fn print_line(ty: GgmlType, label: &str, cols: usize, rows: usize, bytes: usize, n: usize, name: &str, ms: f64, copy: f64) {
    let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
    println!(
        "{:<8} {:<12} {:>12} {:>9.2} {:>3} {:>8} {:>10.2} {:>9.0} {:>6.0}%",
        format!("{ty}"),
        label,
        format!("{cols}->{rows}"),
        bytes as f64 / (1 << 20) as f64,
        n,
        name,
        ms * 1e3,
        gbs,
        100.0 * gbs * 1e9 / copy
    );
}

/// The expert-slot launches: 6 slots over 256 stacked experts, each launch with another
/// random choice of 6 distinct experts (so the weights come from DRAM, as in decode), plain
/// (f32 input) and official (quantized input) numerics. MiB counts the 6 experts read.
fn bench_slots(gpu: &Gpu, mv: &Matvec, util: &Util, args: &Args, copy: f64, rng: &mut u64) {
    for &(ty, cols, rows, label, shared) in &SLOT_SHAPES {
        if !args.types.contains(&ty) || (!args.shapes.is_empty() && !args.shapes.iter().any(|s| s == label)) {
            continue;
        }
        let per = dsv4_cuda::quant::matvec::row_bytes(ty, cols).unwrap() * rows;
        let mut host = vec![0u8; per * N_EXPERT];
        fill_random(rng, &mut host);
        let buf = Arc::new(gpu.upload(&host).unwrap());
        let experts: Vec<DeviceMatrix> = (0..N_EXPERT)
            .map(|e| DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap())
            .collect();
        // 64 choices of 6 distinct experts.
        const CHOICES: usize = 64;
        let mut ids = Vec::with_capacity(CHOICES * USED);
        for _ in 0..CHOICES {
            let mut pick: Vec<i32> = Vec::new();
            while pick.len() < USED {
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                let e = (*rng % N_EXPERT as u64) as i32;
                if !pick.contains(&e) {
                    pick.push(e);
                }
            }
            ids.extend(pick);
        }
        let idd: DeviceBuffer<i32> = gpu.upload(&ids).unwrap();
        let ids0 = dev_addr(gpu, &idd);
        let inputs = if shared { 1 } else { USED };
        let x_div = if shared { USED } else { 1 };
        let xf: DeviceBuffer<f32> = gpu.upload(&vec![0.5f32; inputs * cols]).unwrap();
        let act = dsv4_cuda::quant::matvec::act_bytes(ty, cols).unwrap().next_multiple_of(16);
        let xq: DeviceBuffer<u8> = gpu.upload(&vec![1u8; inputs * act]).unwrap();
        let y: DeviceBuffer<f32> = gpu.alloc_zeros(USED * rows).unwrap();
        let (xfp, xqp, yp) = (dev_addr(gpu, &xf), dev_addr(gpu, &xq), dev_addr(gpu, &y));
        for (official, name) in [(false, "slots"), (true, "q8slots")] {
            let ms = time_ms(gpu, util, args.reps, |i| {
                let s = ExpertSlots {
                    ids: ids0 + ((i % CHOICES) * USED * 4) as u64,
                    n: USED,
                    x_div,
                    y_mod: 1,
                    y_mul: 0,
                    per_token: 0,
                };
                let (x, xb) = if official { (xqp, act) } else { (xfp, cols * 4) };
                // SAFETY: ids, inputs and outputs are live buffers sized for the 6 slots.
                unsafe { mv.run_experts_raw(mv.queue(), &experts, s, x, xb, official, yp, rows).unwrap() }
            });
            print_line(ty, label, cols, rows, USED * per, 1, name, ms, copy);
        }
    }
}

/// The device address of a buffer (the raw entry points take addresses).
fn dev_addr<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, b: &DeviceBuffer<T>) -> u64 {
    let (p, _guard) = b.cuda_slice().device_ptr(gpu.stream());
    p
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
    let util = Util::new(&gpu).unwrap_or_else(|e| {
        eprintln!("matvec_bench: {e}");
        std::process::exit(1)
    });
    let copy = copy_bandwidth(&gpu, &util);
    println!(
        "device-to-device copy: {:.0} GB/s (read + write)",
        copy / 1e9
    );
    println!();
    println!(
        "{:<8} {:<12} {:>12} {:>9} {:>3} {:>8} {:>10} {:>9} {:>7}",
        "type", "tensor", "cols->rows", "MiB", "n", "variant", "us", "GB/s", "% copy"
    );

    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for &ty in &args.types {
        for &(cols, rows, label) in &SHAPES {
            if !args.shapes.is_empty() && !args.shapes.iter().any(|s| s == label) {
                continue;
            }
            if !shape_applies(ty, label) {
                continue;
            }
            let one = dsv4_cuda::quant::matvec::row_bytes(ty, cols).unwrap() * rows;
            // Enough copies to exceed 4x L2, so launches stream from DRAM.
            let copies = (4 * gpu.l2_bytes().max(1 << 20)).div_ceil(one).max(2);
            let mut host = vec![0u8; one];
            fill_random(&mut rng, &mut host);
            let mut staging = gpu.alloc_zeros::<u8>(one * copies).unwrap();
            for c in 0..copies {
                let mut v = staging.cuda_slice_mut().slice_mut(c * one..(c + 1) * one);
                gpu.stream().memcpy_htod(&host, &mut v).unwrap();
            }
            let buf = Arc::new(staging);
            let mats: Vec<DeviceMatrix> = (0..copies)
                .map(|c| DeviceMatrix::view(buf.clone(), c * one, ty, rows, cols).unwrap())
                .collect();
            for &n in &args.batches {
                if n == 0 || n > dsv4_cuda::MAX_STEP_BATCH {
                    continue;
                }
                let x: DeviceBuffer<f32> = gpu.upload(&vec![0.5f32; n * cols]).unwrap();
                let mut y: DeviceBuffer<f32> = gpu.alloc_zeros(n * rows).unwrap();
                let v: Variant = mv.variant(&mats[0], n);
                // Past MAX_BATCH tokens only the several-token official products below.
                let mut tried = if n <= dsv4_cuda::MAX_BATCH { vec![v] } else { Vec::new() };
                // Single token, quantized: both group sizes, for tuning.
                if n == 1 && !matches!(ty, GgmlType::F32 | GgmlType::F16) {
                    for rows in [2, 4] {
                        let g = Variant { rows, tokens: 1, split: 0, ctas: 0 };
                        if g != v {
                            tried.push(g);
                        }
                        if args.sweep {
                            for per_sm in [1, 2, 4] {
                                let ctas = per_sm * gpu.sm_count();
                                tried.push(Variant { rows, tokens: 1, split: 0, ctas });
                            }
                        }
                    }
                }
                let print = |name: String, ms: f64| print_line(ty, label, cols, rows, one, n, &name, ms, copy);
                for v in tried {
                    let ms = time_ms(&gpu, &util, args.reps, |i| {
                        mv.run_variant(&mats[i % copies], &x, n, &mut y, v).unwrap()
                    });
                    print(variant_name(ty, v), ms);
                }
                // Several tokens of official Q8_0 (quantized activations, the decode step's
                // split): the CUDA-core kernels against the tensor-core one.
                if n > 1 && ty == GgmlType::Q8_0 {
                    let stride = dsv4_cuda::quant::matvec::act_bytes(ty, cols).unwrap().next_multiple_of(16);
                    let mut host = vec![0u8; n * stride];
                    fill_random(&mut rng, &mut host);
                    let acts: DeviceBuffer<u8> = gpu.upload(&host).unwrap();
                    let (xa, ya) = (dev_addr(&gpu, &acts), dev_addr(&gpu, &y));
                    let split = mv.slot_split(&mats[0], true, 1).unwrap();
                    for tensor in [false, true] {
                        let ms = time_ms(&gpu, &util, args.reps, |i| {
                            let w = &mats[i % copies];
                            // SAFETY: n activation rows of `stride` bytes and n output rows of
                            // `rows` floats, inside live buffers.
                            unsafe {
                                if tensor {
                                    mv.run_mmq_raw(mv.queue(), w, xa, stride, n, ya, rows, split).unwrap()
                                } else {
                                    mv.run_batch_split_raw(mv.queue(), w, xa, stride, true, n, ya, rows, split).unwrap()
                                }
                            }
                        });
                        print(format!("{}/{split}", if tensor { "mmq" } else { "cores" }), ms);
                    }
                }
                // The official numerics (quantized activations, dp4a), one token.
                if n == 1 && !matches!(ty, GgmlType::F32 | GgmlType::F16) {
                    let bytes = dsv4_cuda::quant::matvec::act_bytes(ty, cols).unwrap();
                    let acts: DeviceBuffer<u8> = gpu.upload(&vec![1u8; bytes]).unwrap();
                    let ms = time_ms(&gpu, &util, args.reps, |i| {
                        mv.run_q(&mats[i % copies], &acts, &mut y).unwrap()
                    });
                    print("q8act".to_string(), ms);
                }
            }
        }
    }
    bench_slots(&gpu, &mv, &util, &args, copy, &mut rng);
}
