//! Device-to-device copy bandwidth: the memory ceiling that decode speeds are set against.
//!
//! `copy_bench [--gpu N] [--mib 256,2048] [--reps 20] [--mma]`
//!
//! One `cuMemcpyDtoD` of the given size per timed region, between CUDA events, after three
//! untimed warm-up copies; reported is the median over `--reps` (min and max beside it).
//! GB/s counts bytes read plus bytes written (2 x size), the convention of the ds4 baseline and
//! of `matvec_bench`. Sizes well above the L2 (50-60 MB on Hopper) measure DRAM, not the
//! cache. The source holds pseudo-random bytes (not zeros) and the destination starts zeroed
//! and is read back and compared whole, so a copy that did not happen cannot pass as fast.
//!
//! With `--mma`, also the tensor-core ceilings the prefill's FLOP floors are set against: the
//! rate `mma.sync` reaches with int8 (m16n8k32) and BF16 (m16n8k16) operands when every warp
//! of the device issues nothing else (`Util::mma_peak`), median of `--reps` launches.
//!
//! Output: one human line per size, then CSV lines `copy,<card>,<bytes>,<median GB/s>,<min>,<max>`
//! (and `mma_s8` / `mma_bf16` lines in T ops/s, bytes 0).

use std::process::ExitCode;

use cudarc::driver::sys::CUevent_flags;
use dsv4_cuda::util::{MmaKind, Util};
use dsv4_cuda::{CudaError, DeviceBuffer, Gpu};

struct Args {
    gpu: usize,
    mib: Vec<usize>,
    reps: usize,
    mma: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { gpu: 0, mib: vec![256, 2048], reps: 20, mma: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--gpu" => a.gpu = val()?.parse().map_err(|e| format!("--gpu: {e}"))?,
            "--mma" => a.mma = true,
            "--reps" => a.reps = val()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--mib" => {
                a.mib = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--mib: {e}")))
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.reps == 0 || a.mib.is_empty() || a.mib.contains(&0) {
        return Err("--reps and every --mib size must be positive".into());
    }
    Ok(a)
}

/// Pseudo-random words (splitmix64): cheap enough for GiB-sized buffers, and no pattern a
/// memory system could shortcut.
fn random_words(n: usize, mut state: u64) -> Vec<u64> {
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

struct Measured {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

fn measure(gpu: &Gpu, words: usize, reps: usize, seed: u64) -> Result<Measured, String> {
    let host = random_words(words, seed);
    let src: DeviceBuffer<u64> = gpu.upload(&host).map_err(|e| e.to_string())?;
    let mut dst: DeviceBuffer<u64> = gpu.alloc_zeros(words).map_err(|e| e.to_string())?;
    let s = gpu.stream();
    let copy = |dst: &mut DeviceBuffer<u64>| -> Result<(), CudaError> {
        s.memcpy_dtod(&src.view(), &mut dst.view_mut())?;
        Ok(())
    };
    for _ in 0..3 {
        copy(&mut dst).map_err(|e| e.to_string())?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
        let start = s.record_event(flags).map_err(|e| e.to_string())?;
        copy(&mut dst).map_err(|e| e.to_string())?;
        let end = s.record_event(flags).map_err(|e| e.to_string())?;
        end.synchronize().map_err(|e| e.to_string())?;
        times.push(start.elapsed_ms(&end).map_err(|e| e.to_string())? as f64);
    }
    // The whole destination is read back once: at these sizes that is a second or two over
    // PCIe, and it proves every word was written, not just sampled ones.
    let back = gpu.download(&dst).map_err(|e| e.to_string())?;
    if let Some(i) = back.iter().zip(&host).position(|(a, b)| a != b) {
        return Err(format!("copy of {words} words is wrong at word {i}"));
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(Measured { median_ms: times[times.len() / 2], min_ms: times[0], max_ms: times[times.len() - 1] })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("copy_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let gpu = match Gpu::new(args.gpu) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("copy_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let card = gpu.name().replace(',', " ");
    println!("device {}: {card} (sm_{}), {} SMs, L2 {} MiB", gpu.index(), gpu.arch(), gpu.sm_count(), gpu.l2_bytes() >> 20);
    let mut csv = Vec::new();
    for (i, &mib) in args.mib.iter().enumerate() {
        let bytes = mib << 20;
        match measure(&gpu, bytes / 8, args.reps, i as u64 + 1) {
            Ok(m) => {
                let gbs = |ms: f64| 2.0 * bytes as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "device-to-device copy {mib} MiB: {:.0} GB/s (read + write), median of {} ({:.0}..{:.0})",
                    gbs(m.median_ms),
                    args.reps,
                    gbs(m.max_ms),
                    gbs(m.min_ms)
                );
                csv.push(format!("copy,{card},{bytes},{:.1},{:.1},{:.1}", gbs(m.median_ms), gbs(m.max_ms), gbs(m.min_ms)));
            }
            Err(e) => {
                eprintln!("copy_bench: {mib} MiB: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if args.mma {
        let util = match Util::new(&gpu) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("copy_bench: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (kind, name, what) in [(MmaKind::S8, "mma_s8", "int8 m16n8k32"), (MmaKind::Bf16, "mma_bf16", "BF16 m16n8k16")] {
            let mut rates = Vec::with_capacity(args.reps);
            for _ in 0..args.reps {
                match util.mma_peak(&gpu, kind, 4096) {
                    Ok(r) => rates.push(r / 1e12),
                    Err(e) => {
                        eprintln!("copy_bench: {what}: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            rates.sort_by(|a, b| a.total_cmp(b));
            let (lo, med, hi) = (rates[0], rates[rates.len() / 2], rates[rates.len() - 1]);
            println!("mma.sync {what}: {med:.0} T ops/s, median of {} ({lo:.0}..{hi:.0})", args.reps);
            csv.push(format!("{name},{card},0,{med:.1},{lo:.1},{hi:.1}"));
        }
    }
    println!("kind,card,bytes,median_gbs,min_gbs,max_gbs");
    for line in csv {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
