//! GPU matvec against the CPU reference (`dsv4_quant::matvec`, plain numerics), for every
//! weight type over the DeepSeek V4 Flash shapes and awkward small ones. Outputs are
//! poisoned with NaN before each launch, so an element the kernel never writes fails.
//! Without a GPU every test prints SKIPPED (DSV4_REQUIRE_GPU=1 makes that a failure).

mod common;

use std::sync::Arc;

use common::{assert_close, gpu_or_skip, random_matrix, random_x, row_magnitudes};
use dsv4_cuda::quant::matvec::{row_bytes, Variant};
use dsv4_cuda::{CudaError, DeviceBuffer, DeviceMatrix, Gpu, Matvec, MmqIo};
use dsv4_quant::{GgmlType, Numerics};

const TYPES: [GgmlType; 6] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q4_K,
    GgmlType::IQ2_XXS,
];

/// `(cols, rows)` = input -> output sizes of the Flash projections: attn_q_a, attn_q_b,
/// attn_kv, attn_output_b, routed/shared expert gate/up, expert down.
const FLASH_SHAPES: [(usize, usize); 6] = [
    (4096, 1024),
    (1024, 32768),
    (4096, 512),
    (8192, 4096),
    (4096, 2048),
    (2048, 4096),
];

/// Weight scale per type, so outputs have similar magnitudes.
fn scale(ty: GgmlType) -> f32 {
    match ty {
        GgmlType::F32 | GgmlType::F16 => 0.05,
        _ => 0.01,
    }
}

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    w: DeviceMatrix,
}

fn case(gpu: &Gpu, ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Case {
    let bytes = random_matrix(ty, rows, cols, scale(ty), seed);
    let w = DeviceMatrix::upload(gpu, ty, rows, cols, &bytes).unwrap();
    Case {
        ty,
        rows,
        cols,
        bytes,
        w,
    }
}

fn cpu(c: &Case, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; c.rows];
    dsv4_quant::matvec(c.ty, &c.bytes, c.rows, c.cols, x, &mut y, Numerics::Plain).unwrap();
    y
}

/// Runs `n` tokens through variant `v` (or the default choice) with NaN-poisoned outputs and
/// checks each token's output against the CPU. Returns the worst relative L2 error.
fn check(gpu: &Gpu, mv: &Matvec, c: &Case, n: usize, v: Option<Variant>, seed: u64) -> f64 {
    let x: Vec<f32> = random_x(n * c.cols, seed);
    let xd = gpu.upload(&x).unwrap();
    let mut yd = gpu.upload(&vec![f32::NAN; n * c.rows]).unwrap();
    match v {
        Some(v) => mv.run_variant(&c.w, &xd, n, &mut yd, v).unwrap(),
        None => mv.run_batch(&c.w, &xd, n, &mut yd).unwrap(),
    }
    let y = gpu.download(&yd).unwrap();
    let mut worst = 0f64;
    for t in 0..n {
        let xt = &x[t * c.cols..(t + 1) * c.cols];
        let want = cpu(c, xt);
        let mags = row_magnitudes(c.ty, &c.bytes, c.rows, c.cols, xt);
        let what = format!("{} {}x{} token {t}/{n} {v:?}", c.ty, c.rows, c.cols);
        worst = worst.max(assert_close(
            &what,
            &y[t * c.rows..(t + 1) * c.rows],
            &want,
            &mags,
        ));
    }
    worst
}

#[test]
fn flash_shapes_match_cpu() {
    let Some(gpu) = gpu_or_skip("flash_shapes_match_cpu") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    for ty in TYPES {
        for (i, &(cols, rows)) in FLASH_SHAPES.iter().enumerate() {
            let c = case(&gpu, ty, rows, cols, 100 + i as u64);
            let rel = check(&gpu, &mv, &c, 1, None, 7 + i as u64);
            eprintln!(
                "{ty} {cols}->{rows}: rel L2 {rel:.2e} ({:?})",
                mv.variant(&c.w, 1)
            );
        }
    }
}

/// Every compiled single-token variant: float kernels with 1, 2, 4 rows per warp; quantized
/// ones with groups of 2 or 4 rows, the automatic plan, a single CTA (every warp walks many
/// rounds and its copy pipeline crosses them), and splits of 2, 4, 8 warps per group over a
/// few CTAs (partials combined in shared memory; clamped where rows are short).
fn single_token_variants(ty: GgmlType) -> Vec<Variant> {
    let v = |rows, split, ctas| Variant {
        rows,
        tokens: 1,
        split,
        ctas,
    };
    if matches!(ty, GgmlType::F32 | GgmlType::F16) {
        vec![v(1, 0, 0), v(2, 0, 0), v(4, 0, 0)]
    } else {
        vec![v(2, 0, 0), v(2, 1, 1), v(2, 4, 3), v(4, 2, 0), v(4, 8, 2)]
    }
}

/// Rows that do not fill the last warp or CTA, single partial steps, rows whose byte length
/// is not a multiple of 16 (so each row starts at a different offset in its 16-byte line),
/// and a row longer than 8192.
#[test]
fn odd_shapes_match_cpu() {
    let Some(gpu) = gpu_or_skip("odd_shapes_match_cpu") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    for ty in TYPES {
        // The smallest column count each type's kernels accept.
        let u = match ty {
            GgmlType::F32 => 4,
            GgmlType::F16 => 8,
            _ => ty.block_elems(),
        };
        let shapes = [
            (1, u),
            (37, 3 * u),
            (129, 5 * u),
            (3, 9 * u),
            (1000, 40 * u),
            (17, 12288),
        ];
        for (i, &(rows, cols)) in shapes.iter().enumerate() {
            let c = case(&gpu, ty, rows, cols, 300 + i as u64);
            for v in single_token_variants(ty) {
                check(&gpu, &mv, &c, 1, Some(v), 11 + i as u64);
            }
        }
    }
}

/// `Y = W X` for 2..16 tokens in every batch variant equals one CPU matvec per token.
#[test]
fn batches_match_cpu() {
    let Some(gpu) = gpu_or_skip("batches_match_cpu") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    for ty in TYPES {
        let c = case(&gpu, ty, 1000, 2048, 500);
        for n in [2, 3, 4, 5, 8, 13, 16] {
            check(&gpu, &mv, &c, n, None, 20 + n as u64);
        }
        // A variant wider than needed: the unused token slots must stay unwritten and harmless.
        let wide = Variant {
            rows: 2,
            tokens: 16,
            split: 0,
            ctas: 0,
        };
        check(&gpu, &mv, &c, 3, Some(wide), 40);
        // Two CTAs, two warps per group: many rounds per warp, for every token capacity.
        if !matches!(ty, GgmlType::F32 | GgmlType::F16) {
            for tokens in [4, 8, 16] {
                let few = Variant {
                    rows: 2,
                    tokens,
                    split: 2,
                    ctas: 2,
                };
                check(&gpu, &mv, &c, tokens - 1, Some(few), 42);
            }
        }
        // Activations beyond the shared-memory room: split into launches of 8 tokens (4096
        // rows), or read from global memory in one launch (a small matrix).
        let big = case(&gpu, ty, 4096, 4096, 501);
        check(&gpu, &mv, &big, 16, None, 41);
        let small = case(&gpu, ty, 512, 4096, 502);
        check(&gpu, &mv, &small, 16, None, 43);
    }
}

/// The same launch twice gives the same bits (no atomics, fixed reduction order).
#[test]
fn results_are_deterministic() {
    let Some(gpu) = gpu_or_skip("results_are_deterministic") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    for ty in TYPES {
        let c = case(&gpu, ty, 2048, 4096, 600);
        let x = gpu.upload(&random_x(4096, 1)).unwrap();
        let mut runs = Vec::new();
        for _ in 0..3 {
            let mut y = gpu.upload(&vec![f32::NAN; 2048]).unwrap();
            mv.run(&c.w, &x, &mut y).unwrap();
            runs.push(
                gpu.download(&y)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
            );
        }
        assert!(
            runs.windows(2).all(|w| w[0] == w[1]),
            "{ty}: results differ between runs"
        );
    }
}

/// One expert of a stacked expert tensor, addressed as a window into the shared buffer,
/// gives the same result as the expert uploaded alone.
#[test]
fn matrix_views_into_a_stacked_buffer() {
    let Some(gpu) = gpu_or_skip("matrix_views_into_a_stacked_buffer") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let (experts, rows, cols) = (4, 256, 1024);
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::Q2_K,
        GgmlType::Q4_K,
        GgmlType::Q8_0,
    ] {
        let per = rows * row_bytes(ty, cols).unwrap();
        let all = random_matrix(ty, experts * rows, cols, 0.01, 700);
        let buf = Arc::new(gpu.upload(&all).unwrap());
        let x = random_x(cols, 3);
        let xd = gpu.upload(&x).unwrap();
        for e in 0..experts {
            let w = DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap();
            let mut yd = gpu.upload(&vec![f32::NAN; rows]).unwrap();
            mv.run(&w, &xd, &mut yd).unwrap();
            let alone =
                DeviceMatrix::upload(&gpu, ty, rows, cols, &all[e * per..(e + 1) * per]).unwrap();
            let mut y2 = gpu.upload(&vec![f32::NAN; rows]).unwrap();
            mv.run(&alone, &xd, &mut y2).unwrap();
            let (a, b) = (gpu.download(&yd).unwrap(), gpu.download(&y2).unwrap());
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{ty} expert {e}"
            );
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_errors") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let c = case(&gpu, GgmlType::Q8_0, 64, 256, 1);
    let x: DeviceBuffer<f32> = gpu.alloc_zeros(255).unwrap();
    let mut y: DeviceBuffer<f32> = gpu.alloc_zeros(64).unwrap();
    assert!(matches!(mv.run(&c.w, &x, &mut y), Err(CudaError::Shape(_))));
    let x: DeviceBuffer<f32> = gpu.alloc_zeros(256 * 17).unwrap();
    let mut y: DeviceBuffer<f32> = gpu.alloc_zeros(64 * 17).unwrap();
    assert!(matches!(
        mv.run_batch(&c.w, &x, 17, &mut y),
        Err(CudaError::Shape(_))
    ));
    let buf = Arc::new(gpu.upload(&vec![0u8; 4096]).unwrap());
    assert!(
        DeviceMatrix::view(buf.clone(), 8, GgmlType::Q8_0, 1, 32).is_err(),
        "unaligned offset"
    );
    assert!(
        DeviceMatrix::view(buf, 0, GgmlType::Q8_0, 200, 32).is_err(),
        "overrun"
    );
    assert!(
        DeviceMatrix::upload(&gpu, GgmlType::Q4_0, 1, 32, &[0; 18]).is_err(),
        "unsupported type"
    );
}

/// Shape rules that need no GPU.
#[test]
fn row_bytes_rules() {
    assert_eq!(row_bytes(GgmlType::Q8_0, 4096).unwrap(), 4352);
    assert_eq!(row_bytes(GgmlType::IQ2_XXS, 4096).unwrap(), 1056);
    assert_eq!(row_bytes(GgmlType::Q2_K, 2048).unwrap(), 672);
    assert_eq!(row_bytes(GgmlType::Q4_K, 2048).unwrap(), 1152);
    assert!(row_bytes(GgmlType::Q2_K, 100).is_err());
    assert!(
        row_bytes(GgmlType::F16, 12).is_err(),
        "F16 rows need 8-column multiples"
    );
    assert!(
        row_bytes(GgmlType::F32, 6).is_err(),
        "F32 rows need 4-column multiples"
    );
    assert!(row_bytes(GgmlType::BF16, 64).is_err());
}

/// The official numerics: activations quantized on the CPU (ds4's Q8_0-like blocks for Q8_0
/// weights, Q8_K for the k-/i-quants), uploaded, and multiplied with dp4a; compared with
/// `dsv4_quant::matvec` (Official), which quantizes the same x the same way. The integer
/// block sums are exact on both sides; only the f32 accumulation order differs, so the
/// tolerances are the plain ones.
#[test]
fn quantized_activations_match_cpu_official() {
    let Some(gpu) = gpu_or_skip("quantized_activations_match_cpu_official") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    for ty in [
        GgmlType::Q8_0,
        GgmlType::IQ2_XXS,
        GgmlType::Q2_K,
        GgmlType::Q4_K,
    ] {
        let b = ty.block_elems();
        let shapes =
            FLASH_SHAPES
                .iter()
                .copied()
                .chain([(b, 1), (3 * b, 37), (5 * b, 129), (12288, 17)]);
        for (i, (cols, rows)) in shapes.enumerate() {
            let c = case(&gpu, ty, rows, cols, 800 + i as u64);
            let x = random_x(cols, 900 + i as u64);
            let acts = dsv4_quant::QuantizedActs::for_weight(ty, &x).unwrap();
            let packed = dsv4_cuda::quant::matvec::pack_acts(&acts);
            assert_eq!(
                packed.len(),
                dsv4_cuda::quant::matvec::act_bytes(ty, cols).unwrap()
            );
            let ad = gpu.upload(&packed).unwrap();
            let mut want = vec![0f32; rows];
            dsv4_quant::matvec(ty, &c.bytes, rows, cols, &x, &mut want, Numerics::Official)
                .unwrap();
            let mags = row_magnitudes(ty, &c.bytes, rows, cols, &x);
            // The default choice, then both group sizes, automatic and on a single CTA
            // with two warps per group (many rounds per warp, partials combined).
            let v = |rows, split, ctas| Variant { rows, tokens: 1, split, ctas };
            let forced = [v(2, 0, 0), v(4, 0, 0), v(2, 2, 1), v(4, 2, 1)];
            for v in std::iter::once(None).chain(forced.map(Some)) {
                let mut yd = gpu.upload(&vec![f32::NAN; rows]).unwrap();
                match v {
                    None => mv.run_q(&c.w, &ad, &mut yd).unwrap(),
                    Some(v) => mv.run_q_variant(&c.w, &ad, &mut yd, v).unwrap(),
                }
                let got = gpu.download(&yd).unwrap();
                let what = format!("{ty} {cols}->{rows} official {v:?}");
                let rel = assert_close(&what, &got, &want, &mags);
                if v.is_none() {
                    eprintln!("{ty} {cols}->{rows} official: rel L2 {rel:.2e}");
                }
            }
        }
    }
}

/// `n` input rows of `cols` from `x` on the device as a product of `ty` takes them: f32
/// rows, or (official) the activations quantized for `ty`, each padded to 16 bytes; with the
/// bytes between rows.
fn device_inputs(gpu: &Gpu, ty: GgmlType, x: &[f32], n: usize, cols: usize, official: bool) -> (DeviceBuffer<u8>, usize) {
    if official {
        let stride = dsv4_cuda::quant::matvec::act_bytes(ty, cols).unwrap().next_multiple_of(16);
        let mut packed = vec![0u8; n * stride];
        for i in 0..n {
            let acts = dsv4_quant::QuantizedActs::for_weight(ty, &x[i * cols..(i + 1) * cols]).unwrap();
            let p = dsv4_cuda::quant::matvec::pack_acts(&acts);
            packed[i * stride..i * stride + p.len()].copy_from_slice(&p);
        }
        (gpu.upload(&packed).unwrap(), stride)
    } else {
        let bytes: Vec<u8> = x[..n * cols].iter().flat_map(|v| v.to_le_bytes()).collect();
        (gpu.upload(&bytes).unwrap(), cols * 4)
    }
}

/// The device address of a buffer (the raw entry points take addresses).
fn addr<T: cudarc::driver::DeviceRepr>(gpu: &Gpu, b: &DeviceBuffer<T>) -> u64 {
    use cudarc::driver::DevicePtr;
    let (p, _guard) = b.cuda_slice().device_ptr(gpu.stream());
    p
}

/// Expert slots (`run_experts_raw`), both numerics, as the model runner uses them: the gate/up
/// shape (2 tokens x 3 picks, each token's input shared by its picks) and the down shape
/// (one input per slot, outputs interleaved by pick). Expert ids repeat, and two are out of
/// range: those slots must leave their outputs untouched (still NaN); every other output
/// must match the CPU product of its expert.
#[test]
fn expert_slots_match_cpu() {
    let Some(gpu) = gpu_or_skip("expert_slots_match_cpu") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let n_expert = 8;
    let ids: [i32; 8] = [5, 0, 5, 7, -1, 3, 8, 1];
    let idd = gpu.upload(&ids).unwrap();
    let valid = |j: usize| (0..n_expert as i32).contains(&ids[j]);
    for ty in [GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        for (k, &(cols, rows)) in [(4096usize, 2048usize), (2048, 4096), (768, 304)].iter().enumerate() {
            let per = rows * row_bytes(ty, cols).unwrap();
            let seed = 1000 + 10 * k as u64;
            let all = random_matrix(ty, n_expert * rows, cols, scale(ty), seed);
            let buf = Arc::new(gpu.upload(&all).unwrap());
            let experts: Vec<DeviceMatrix> = (0..n_expert)
                .map(|e| DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap())
                .collect();
            assert!(Matvec::experts_stacked(&experts));
            let float = matches!(ty, GgmlType::F32 | GgmlType::F16);
            for official in [false, true].into_iter().filter(|&o| !o || !float) {
                // (x_div, y_mod, y_mul): gate/up, then down; all 8 slots (groups of 4 rows
                // over the slots' rows), then 2 (groups of 2 for the small shape).
                let configs = [(3usize, 1usize, 0usize, ids.len()), (1, 3, 3, ids.len()), (1, 1, 0, 2)];
                for (x_div, y_mod, y_mul, slots) in configs {
                    let inputs = slots.div_ceil(x_div);
                    let x = random_x(inputs * cols, seed + 1);
                    // Output row (j % y_mod) * y_mul + j / y_mod is at most `slots` for both shapes.
                    let out_rows = slots + 1;
                    let yd = gpu.upload(&vec![f32::NAN; out_rows * rows]).unwrap();
                    let num = if official { Numerics::Official } else { Numerics::Plain };
                    let (xd, x_bytes) = device_inputs(&gpu, ty, &x, inputs, cols, official);
                    let s = dsv4_cuda::quant::ExpertSlots { ids: addr(&gpu, &idd), n: slots, x_div, y_mod, y_mul, per_token: 0 };
                    // SAFETY: ids, inputs and outputs are live buffers sized for every slot.
                    unsafe {
                        mv.run_experts_raw(mv.queue(), &experts, s, addr(&gpu, &xd), x_bytes, official, addr(&gpu, &yd), rows)
                            .unwrap()
                    };
                    let y = gpu.download(&yd).unwrap();
                    for j in 0..slots {
                        let orow = (j % y_mod) * y_mul + j / y_mod;
                        let got = &y[orow * rows..(orow + 1) * rows];
                        let what = format!("{ty} {cols}->{rows} slot {j} official={official} x_div={x_div}");
                        if !valid(j) {
                            assert!(got.iter().all(|v| v.is_nan()), "{what}: skipped slot was written");
                            continue;
                        }
                        let e = ids[j] as usize;
                        let xi = &x[(j / x_div) * cols..(j / x_div + 1) * cols];
                        let wb = &all[e * per..(e + 1) * per];
                        let mut want = vec![0f32; rows];
                        dsv4_quant::matvec(ty, wb, rows, cols, xi, &mut want, num).unwrap();
                        let mags = row_magnitudes(ty, wb, rows, cols, xi);
                        assert_close(&what, got, &want, &mags);
                    }
                }
            }
        }
    }
}

/// Each of the `n` input rows (`stride` bytes apart in `xd`) through `w` alone, as the decode
/// step's one-token product (a one-slot launch): `n` rows of `w.rows()` outputs.
fn alone_products(gpu: &Gpu, mv: &Matvec, w: &DeviceMatrix, xd: &DeviceBuffer<u8>, stride: usize, n: usize, official: bool) -> Vec<f32> {
    let rows = w.rows();
    let zeros = gpu.upload(&[0i32; 1]).unwrap();
    let one = gpu.upload(&vec![f32::NAN; n * rows]).unwrap();
    for t in 0..n {
        let s = dsv4_cuda::quant::ExpertSlots { ids: addr(gpu, &zeros), n: 1, x_div: 1, y_mod: 1, y_mul: 0, per_token: 1 };
        let (xa, ya) = (addr(gpu, xd) + (t * stride) as u64, addr(gpu, &one) + (t * rows * 4) as u64);
        // SAFETY: one id, one input row and one output row, all inside live buffers.
        unsafe { mv.run_experts_raw(mv.queue(), std::slice::from_ref(w), s, xa, stride, official, ya, rows).unwrap() };
    }
    gpu.download(&one).unwrap()
}

/// Several tokens through `run_batch_split_raw` (the decode step's batched products) equal,
/// bit for bit, each token's one-token slot product, under both numerics, for every quantized
/// type over the Flash shapes (whose one-token launches split rows over up to 8 warps) and
/// token counts that fill 2, 4, 8 and 16-token kernels and two launches; and for the float
/// types (f32 inputs only) over the step's F16 shapes (the indexer's 8192 x 1024, the router's
/// 256 x 4096), whose one-token launches split rows over 1, 2 and 4 warps. Outputs start as
/// NaN, so a token the kernel skips fails.
#[test]
fn split_batches_equal_one_token_products() {
    let Some(gpu) = gpu_or_skip("split_batches_equal_one_token_products") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    const FLOAT_SHAPES: [(usize, usize); 4] = [(4096, 256), (1024, 8192), (4096, 2048), (2048, 4096)];
    for ty in [GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS, GgmlType::F16, GgmlType::F32] {
        let float = matches!(ty, GgmlType::F16 | GgmlType::F32);
        let shapes: &[(usize, usize)] = if float { &FLOAT_SHAPES } else { &FLASH_SHAPES };
        for (k, &(cols, rows)) in shapes.iter().enumerate() {
            let c = case(&gpu, ty, rows, cols, 2000 + k as u64);
            if float {
                // Float weights take f32 inputs only.
                let xd = gpu.upload(&vec![0u8; 2 * cols * 4]).unwrap();
                let yd = gpu.upload(&vec![0f32; 2 * rows]).unwrap();
                // SAFETY: two input rows and two output rows inside live buffers (refused anyway).
                let r = unsafe { mv.run_batch_split_raw(mv.queue(), &c.w, addr(&gpu, &xd), cols, true, 2, addr(&gpu, &yd), rows, 1) };
                assert!(r.is_err(), "{ty}: quantized activations for float weights were accepted");
            }
            for official in [false, true] {
                if float && official {
                    continue;
                }
                let n = 21;
                let x = random_x(n * cols, 77 + k as u64);
                let (xd, stride) = device_inputs(&gpu, ty, &x, n, cols, official);
                let xs = if official { stride } else { cols };
                let alone = alone_products(&gpu, &mv, &c.w, &xd, stride, n, official);
                let split = mv.slot_split(&c.w, official, 1).unwrap();
                for m in [2usize, 3, 8, 16, 21] {
                    let yd = gpu.upload(&vec![f32::NAN; m * rows]).unwrap();
                    // SAFETY: m input rows `stride` bytes apart and m output rows of `rows`.
                    unsafe { mv.run_batch_split_raw(mv.queue(), &c.w, addr(&gpu, &xd), xs, official, m, addr(&gpu, &yd), rows, split).unwrap() };
                    let y = gpu.download(&yd).unwrap();
                    for t in 0..m {
                        let (got, want) = (&y[t * rows..(t + 1) * rows], &alone[t * rows..(t + 1) * rows]);
                        let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{ty} {cols}->{rows} official={official} split={split}: token {t} of {m} differs from its one-token product");
                    }
                }
            }
        }
    }
}

/// Several tokens' Q8_0 products on the tensor cores (`run_mmq_raw`) equal, bit for bit, the
/// several-token CUDA-core products with the same split (which equal each token's one-token
/// product; for the one-token launch's own split that is checked here too), over the Flash
/// shapes and two odd ones (rows not a multiple of 16, the last 1024-column step not full;
/// 1,600 columns leave the rows 2-byte aligned, the kernel's plain-load path), every
/// split the columns allow, and token counts of 1, 5, 16, 21 and 40 (a partial column tile,
/// three token tiles). Outputs are poisoned and rows padded: nothing outside the n x rows
/// outputs may be written, nothing inside left out. Other types are refused.
#[test]
fn tensor_core_batches_equal_one_token_products() {
    let Some(gpu) = gpu_or_skip("tensor_core_batches_equal_one_token_products") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let ty = GgmlType::Q8_0;
    let shapes = FLASH_SHAPES.iter().copied().chain([(1600usize, 301usize), (1280, 301)]);
    for (k, (cols, rows)) in shapes.enumerate() {
        let c = case(&gpu, ty, rows, cols, 4000 + k as u64);
        let n = 40;
        let x = random_x(n * cols, 177 + k as u64);
        let (xd, stride) = device_inputs(&gpu, ty, &x, n, cols, true);
        let ys = rows + 3;
        let one_split = mv.slot_split(&c.w, true, 1).unwrap();
        // Each token alone, for the one-token split.
        let alone = alone_products(&gpu, &mv, &c.w, &xd, stride, n, true);
        let steps = cols.div_ceil(1024);
        for split in [1usize, 2, 4, 8].into_iter().filter(|&s| s <= steps) {
            for m in [1usize, 5, 16, 21, 40] {
                let (cd, td) = (gpu.upload(&vec![f32::NAN; m * ys]).unwrap(), gpu.upload(&vec![f32::NAN; m * ys]).unwrap());
                // SAFETY: m input rows `stride` bytes apart and m output rows of `ys` >= rows floats.
                unsafe {
                    mv.run_batch_split_raw(mv.queue(), &c.w, addr(&gpu, &xd), stride, true, m, addr(&gpu, &cd), ys, split).unwrap();
                    mv.run_mmq_raw(mv.queue(), &c.w, addr(&gpu, &xd), stride, m, addr(&gpu, &td), ys, split).unwrap();
                }
                let (cores, tensor) = (gpu.download(&cd).unwrap(), gpu.download(&td).unwrap());
                for t in 0..m {
                    let (got, want) = (&tensor[t * ys..t * ys + rows], &cores[t * ys..t * ys + rows]);
                    let what = format!("{cols}->{rows} split {split}, token {t} of {m}");
                    if let Some(r) = (0..rows).find(|&r| got[r].to_bits() != want[r].to_bits()) {
                        panic!("{what}: row {r} is {} on the tensor cores, {} on the CUDA cores", got[r], want[r]);
                    }
                    assert!(tensor[t * ys + rows..(t + 1) * ys].iter().all(|v| v.is_nan()), "{what}: padding written");
                    if split == one_split {
                        let lone = &alone[t * rows..(t + 1) * rows];
                        assert!(got.iter().zip(lone).all(|(a, b)| a.to_bits() == b.to_bits()), "{what}: differs from the token alone");
                    }
                }
            }
        }
    }
    // Other weight types, a split the columns cannot take, and no tokens are refused.
    let q4 = case(&gpu, GgmlType::Q4_K, 256, 1024, 9);
    let y = gpu.upload(&vec![0f32; 256]).unwrap();
    let xq = gpu.upload(&vec![0u8; 4096]).unwrap();
    // SAFETY: refused before any launch.
    unsafe {
        assert!(mv.run_mmq_raw(mv.queue(), &q4.w, addr(&gpu, &xq), 1152, 1, addr(&gpu, &y), 256, 1).is_err());
        let q8 = case(&gpu, ty, 256, 1024, 10);
        assert!(mv.run_mmq_raw(mv.queue(), &q8.w, addr(&gpu, &xq), 1152, 1, addr(&gpu, &y), 256, 2).is_err());
        assert!(mv.run_mmq_raw(mv.queue(), &q8.w, addr(&gpu, &xq), 1152, 0, addr(&gpu, &y), 256, 1).is_err());
    }
}

/// A stack of Q8_0 matrices that every token picks once each (the decode step's grouped
/// output projection and shared gate/up pair) through the tensor cores in one launch
/// (`run_mmq_stack_raw`): every (token, matrix) output equals, bit for bit, that pick in its
/// token's one-token slot launch over the stack (the split the step keeps), for both
/// placements the step uses (an input per pick, outputs pick-major; one input per token,
/// outputs matrix-major), 7 and 40 tokens, a Flash shape, an odd one and a 2-byte aligned one.
/// Outputs are poisoned and rows padded.
#[test]
fn tensor_core_stacks_equal_slot_products() {
    let Some(gpu) = gpu_or_skip("tensor_core_stacks_equal_slot_products") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let ty = GgmlType::Q8_0;
    let k = 3;
    let ids = gpu.upload(&[0i32, 1, 2]).unwrap();
    for &(cols, rows) in &[(4096usize, 1024usize), (1280, 301), (1600, 48)] {
        let per = rows * row_bytes(ty, cols).unwrap();
        let all = random_matrix(ty, k * rows, cols, scale(ty), 5000 + rows as u64);
        let buf = Arc::new(gpu.upload(&all).unwrap());
        let ws: Vec<DeviceMatrix> = (0..k).map(|e| DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap()).collect();
        let split = mv.slot_split(&ws[0], true, k).unwrap();
        let ys = rows + 3;
        for n in [7usize, 40] {
            for shared_input in [false, true] {
                let inputs = if shared_input { n } else { n * k };
                let x = random_x(inputs * cols, 300 + n as u64);
                let (xd, a) = device_inputs(&gpu, ty, &x, inputs, cols, true);
                // Pick j = t·k + z: its input row and output row.
                let x_row = |t: usize, z: usize| if shared_input { t } else { t * k + z };
                let y_row = |t: usize, z: usize| if shared_input { z * n + t } else { t * k + z };
                let mut want = vec![f32::NAN; n * k * ys];
                let tmp = gpu.upload(&vec![f32::NAN; k * rows]).unwrap();
                for t in 0..n {
                    let (x_div, xa) = if shared_input { (k, t * a) } else { (1, t * k * a) };
                    let sl = dsv4_cuda::quant::ExpertSlots { ids: addr(&gpu, &ids), n: k, x_div, y_mod: 1, y_mul: 0, per_token: 0 };
                    // SAFETY: k ids, their input rows and k output rows inside live buffers.
                    unsafe { mv.run_experts_raw(mv.queue(), &ws, sl, addr(&gpu, &xd) + xa as u64, a, true, addr(&gpu, &tmp), rows).unwrap() };
                    let o = gpu.download(&tmp).unwrap();
                    for z in 0..k {
                        let r = y_row(t, z);
                        want[r * ys..r * ys + rows].copy_from_slice(&o[z * rows..(z + 1) * rows]);
                    }
                }
                let io = if shared_input {
                    MmqIo { x: addr(&gpu, &xd), x_stride: a, x_step: 0, y: 0, y_stride: ys, y_step: n * ys }
                } else {
                    MmqIo { x: addr(&gpu, &xd), x_stride: k * a, x_step: a, y: 0, y_stride: k * ys, y_step: ys }
                };
                let yd = gpu.upload(&vec![f32::NAN; n * k * ys]).unwrap();
                let io = MmqIo { y: addr(&gpu, &yd), ..io };
                // SAFETY: n tokens' input rows and n·k output rows of `ys` floats, inside live buffers.
                unsafe { mv.run_mmq_stack_raw(mv.queue(), &ws, io, n, split).unwrap() };
                let got = gpu.download(&yd).unwrap();
                for t in 0..n {
                    for z in 0..k {
                        let r = y_row(t, z);
                        let what = format!("{cols}->{rows}, {n} tokens, shared input {shared_input}: token {t} matrix {z} (input row {})", x_row(t, z));
                        let (g, w) = (&got[r * ys..(r + 1) * ys], &want[r * ys..(r + 1) * ys]);
                        if let Some(i) = (0..rows).find(|&i| g[i].to_bits() != w[i].to_bits()) {
                            panic!("{what}: row {i} is {} on the tensor cores, {} in the slot launch", g[i], w[i]);
                        }
                        assert!(g[rows..].iter().all(|v| v.is_nan()), "{what}: padding written");
                    }
                }
            }
        }
    }
    // Matrices not stacked in one buffer are refused.
    let a = case(&gpu, ty, 64, 1024, 11);
    let b = case(&gpu, ty, 64, 1024, 12);
    let xq = gpu.upload(&vec![0u8; 4096]).unwrap();
    let y = gpu.upload(&vec![0f32; 256]).unwrap();
    let io = MmqIo { x: addr(&gpu, &xq), x_stride: 1152, x_step: 0, y: addr(&gpu, &y), y_stride: 64, y_step: 64 };
    // SAFETY: refused before any launch.
    assert!(unsafe { mv.run_mmq_stack_raw(mv.queue(), &[a.w, b.w], io, 1, 1) }.is_err());
}

/// Grouped expert products (`run_grouped_raw`, the decode step's MoE over several tokens):
/// every pick's output equals, bit for bit, its expert-slot product launched with the same
/// split, under both numerics, for entries of 4 picks (the routed experts' kernel, groups of
/// 4 rows) and 16 (groups of 2), an expert spread over several entries, a skipped entry, and picks placed as gate/up (input per token) and down (input
/// per pick, outputs interleaved). Outputs no pick addresses stay NaN.
#[test]
fn grouped_products_equal_slot_products() {
    let Some(gpu) = gpu_or_skip("grouped_products_equal_slot_products") else {
        return;
    };
    let mv = Matvec::new(&gpu).unwrap();
    let n_expert = 8;
    // 12 tokens x 3 picks; expert 5 has 18 picks (entries of 4, 4, 4, 4 and 2, or 16 and 2),
    // experts 0, 7, 1, 6, 4 have 1 to 5 (so entries of 4 picks hold every count from 1 to 4:
    // the kernel takes a body per count), expert 3 (skipped) 3, expert 2 none.
    let odd = [0, 7, 7, 1, 1, 1, 6, 6, 6, 6, 4, 4, 4, 4, 4, 3, 3, 3];
    let ids: Vec<i32> = (0..36).map(|j| if j % 2 == 0 { 5 } else { odd[j / 2] }).collect();
    let idd = gpu.upload(&ids).unwrap();
    for ty in [GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::Q8_0] {
        for &(cols, rows) in &[(4096usize, 2048usize), (2048, 4096), (768, 304)] {
            let per = rows * row_bytes(ty, cols).unwrap();
            let all = random_matrix(ty, n_expert * rows, cols, scale(ty), 3000 + rows as u64);
            let buf = Arc::new(gpu.upload(&all).unwrap());
            let experts: Vec<DeviceMatrix> = (0..n_expert).map(|e| DeviceMatrix::view(buf.clone(), e * per, ty, rows, cols).unwrap()).collect();
            for official in [false, true] {
                for (x_div, y_mod, y_mul) in [(3usize, 3usize, 12usize), (1, 3, 13)] {
                    let picks = ids.len();
                    let inputs = picks.div_ceil(x_div);
                    let x = random_x(inputs * cols, 91);
                    let (xd, stride) = device_inputs(&gpu, ty, &x, inputs, cols, official);
                let xs = if official { stride } else { cols };
                    let out_rows = 3 * y_mul + picks;
                    // Reference: each token's 3 picks in one slot launch (the one-token
                    // step's shape, whose split the grouped launch keeps), placed where the
                    // grouped launch puts them.
                    let split = mv.slot_split(&experts[0], official, 3).unwrap();
                    let mut want = vec![f32::NAN; out_rows * rows];
                    let tmp = gpu.upload(&vec![f32::NAN; 3 * rows]).unwrap();
                    for j in (0..picks).step_by(3) {
                        let tok = dsv4_cuda::quant::ExpertSlots { ids: addr(&gpu, &idd) + (j * 4) as u64, n: 3, x_div, y_mod: 1, y_mul: 0, per_token: 0 };
                        let xa = addr(&gpu, &xd) + ((j / x_div) * stride) as u64;
                        // SAFETY: 3 ids, their input rows and 3 output rows inside live buffers.
                        unsafe { mv.run_experts_raw(mv.queue(), &experts, tok, xa, stride, official, addr(&gpu, &tmp), rows).unwrap() };
                        let t = gpu.download(&tmp).unwrap();
                        for k in 0..3 {
                            let jj = j + k;
                            let orow = (jj % y_mod) * y_mul + jj / y_mod;
                            want[orow * rows..(orow + 1) * rows].copy_from_slice(&t[k * rows..(k + 1) * rows]);
                        }
                    }
                    for nt in [4usize, 16] {
                        // The table group_picks writes: by expert, picks in order, nt per entry.
                        let mut table = Vec::new();
                        for e in 0..n_expert as i32 {
                            let js: Vec<i32> = (0..picks as i32).filter(|&j| ids[j as usize] == e).collect();
                            for chunk in js.chunks(nt) {
                                table.push(if e == 3 { -1 } else { e });
                                table.push(chunk.len() as i32);
                                table.extend((0..nt).map(|k| chunk.get(k).copied().unwrap_or(-1)));
                            }
                        }
                        let slots = table.len() / (2 + nt);
                        let td = gpu.upload(&table).unwrap();
                        let yd = gpu.upload(&vec![f32::NAN; out_rows * rows]).unwrap();
                        let g = dsv4_cuda::quant::Grouped { table: addr(&gpu, &td), slots, busy: 0, nt, x_div, y_mod, y_mul, split };
                        // SAFETY: the table's picks address rows inside the input and output buffers.
                        unsafe { mv.run_grouped_raw(mv.queue(), &experts, g, addr(&gpu, &xd), xs, official, addr(&gpu, &yd), rows).unwrap() };
                        let got = gpu.download(&yd).unwrap();
                        for (j, &e) in ids.iter().enumerate() {
                            let orow = (j % y_mod) * y_mul + j / y_mod;
                            let (a, b) = (&got[orow * rows..(orow + 1) * rows], &want[orow * rows..(orow + 1) * rows]);
                            let what = format!("{ty} {cols}->{rows} official={official} nt={nt} x_div={x_div} pick {j} (expert {e})");
                            if e == 3 {
                                assert!(a.iter().all(|v| v.is_nan()), "{what}: a skipped entry was written");
                            } else {
                                assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()), "{what}: differs from its slot product");
                            }
                        }
                    }
                }
            }
        }
    }
}
