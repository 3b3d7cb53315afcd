//! Every `.cu` source compiles with NVRTC, without a GPU: CI catches a broken kernel.
//!
//! Needs libnvrtc (13.0, the GPU machines' toolkit): `DSV4_NVRTC_LIB=/path/libnvrtc.so.13`,
//! or the venv that `scripts/cuda-compile-check-setup` makes under `target/`, or a system
//! CUDA. Without one the tests print SKIPPED (and fail instead when DSV4_REQUIRE_NVRTC=1).

mod common;

use dsv4_cuda::kernels::ALL_SOURCES;
use dsv4_cuda::nvrtc;

/// The GPUs we run on (sm_90: H100/H200) and the oldest we claim (sm_80: A100).
const ARCHES: &[u32] = &[90, 80];

#[test]
fn every_kernel_source_compiles_without_warnings() {
    let Some(lib) = common::nvrtc_or_skip("every_kernel_source_compiles_without_warnings") else {
        return;
    };
    let (major, minor) = nvrtc::version().unwrap();
    eprintln!("NVRTC {major}.{minor} from {lib}");
    for src in ALL_SOURCES {
        for &arch in ARCHES {
            let (cubin, log) = nvrtc::compile_with_log(src, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                log.is_empty(),
                "{} for sm_{arch} compiled with warnings:\n{log}",
                src.path
            );
            // An ELF image, not PTX text: the driver loads it without a JIT step.
            assert_eq!(
                &cubin[..4],
                b"\x7fELF",
                "{} for sm_{arch}: not a CUBIN",
                src.path
            );
            eprintln!("{} sm_{arch}: {} byte CUBIN", src.path, cubin.len());
        }
    }
}

/// The host code launches kernels by name; every name it builds must be in the CUBIN.
#[test]
fn matvec_cubin_defines_every_kernel_the_host_launches() {
    let Some(_) = common::nvrtc_or_skip("matvec_cubin_defines_every_kernel_the_host_launches")
    else {
        return;
    };
    let sets = [
        (dsv4_cuda::kernels::MATVEC, dsv4_cuda::quant::matvec::kernel_names()),
        (dsv4_cuda::kernels::MATMUL, dsv4_cuda::quant::matmul::kernel_names()),
    ];
    for (src, names) in sets {
        let cubin = nvrtc::compile(&src, 90).unwrap();
        for name in names {
            // Symbol names are NUL-terminated strings in the ELF string table.
            let needle = format!("\0{name}\0");
            assert!(
                cubin.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "kernel {name} is not defined by {}",
                src.path
            );
        }
    }
}

/// The model runner launches its kernels by name, too.
#[test]
fn model_cubins_define_every_kernel_the_host_launches() {
    let Some(_) = common::nvrtc_or_skip("model_cubins_define_every_kernel_the_host_launches") else {
        return;
    };
    for (src, names) in dsv4_cuda::kernels::MODEL_KERNELS {
        let cubin = nvrtc::compile(src, 90).unwrap();
        for name in *names {
            let needle = format!("\0{name}\0");
            assert!(
                cubin.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "kernel {name} is not defined by {}",
                src.path
            );
        }
    }
}

/// ptxas's resource report: no kernel may spill more than a few bytes of registers to local
/// memory (a spill in a bandwidth-bound kernel's loop costs traffic on every iteration).
/// ptxas parks one or two loop-invariant words of some quantized variants on the stack
/// (4-32 bytes, L1-resident; not a register cap: ptxas does it at 72 of 255 registers);
/// anything beyond [`MAX_SPILL`] fails.
const MAX_SPILL: usize = 64;

#[test]
fn kernels_do_not_spill() {
    let Some(_) = common::nvrtc_or_skip("kernels_do_not_spill") else {
        return;
    };
    let mut checked = 0;
    let mut spills: Vec<String> = Vec::new();
    // Every source: the model's kernels keep per-lane arrays in registers too (attend's
    // partial outputs, the Sinkhorn warp's elements).
    let logs: Vec<String> = ALL_SOURCES
        .iter()
        .map(|src| nvrtc::compile_with_options(src, 90, &["--ptxas-options=-v"]).unwrap().1)
        .collect();
    let log = logs.join("\n");
    let mut kernel = "";
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            kernel = rest.split('\'').next().unwrap_or("");
        }
        if line.contains("spill stores") {
            checked += 1;
            let bytes = |what: &str| -> usize {
                let before = line.split(what).next().unwrap_or("");
                before
                    .split(',')
                    .next_back()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches(" bytes")
                    .trim()
                    .parse()
                    .unwrap_or(usize::MAX)
            };
            let (stores, loads) = (bytes(" spill stores"), bytes(" spill loads"));
            if stores > MAX_SPILL || loads > MAX_SPILL {
                spills.push(format!("{kernel}: {}", line.trim()));
            } else if stores + loads > 0 {
                eprintln!("{kernel}: small spill: {}", line.trim());
            }
        }
        if line.contains("Used") && line.contains("registers") {
            eprintln!("{kernel}: {}", line.trim());
        }
    }
    assert!(checked > 0, "no resource report in the ptxas log:\n{log}");
    assert!(
        spills.is_empty(),
        "kernels spill registers:\n{}",
        spills.join("\n")
    );
}

/// The cache key changes with the architecture and the source, and is stable otherwise.
#[test]
fn cache_key_covers_arch_and_source() {
    let a = dsv4_cuda::kernels::MATVEC;
    let b = dsv4_cuda::kernels::KernelSource {
        path: a.path,
        code: "extern \"C\" __global__ void k() {}",
    };
    let v = (13, 0);
    assert_eq!(
        dsv4_cuda::cache::key(&a, 90, v),
        dsv4_cuda::cache::key(&a, 90, v)
    );
    assert_ne!(
        dsv4_cuda::cache::key(&a, 90, v),
        dsv4_cuda::cache::key(&a, 80, v)
    );
    assert_ne!(
        dsv4_cuda::cache::key(&a, 90, v),
        dsv4_cuda::cache::key(&b, 90, v)
    );
    assert_ne!(
        dsv4_cuda::cache::key(&a, 90, v),
        dsv4_cuda::cache::key(&a, 90, (13, 1))
    );
}

/// No driver here must be an error value, not a panic (CI machines have no GPU).
#[test]
fn no_driver_is_an_error_not_a_panic() {
    if dsv4_cuda::driver_present() {
        eprintln!("SKIPPED no_driver_is_an_error_not_a_panic: this machine has a CUDA driver");
        return;
    }
    assert!(matches!(
        dsv4_cuda::Gpu::new(0),
        Err(dsv4_cuda::CudaError::NoDriver)
    ));
    assert!(matches!(
        dsv4_cuda::device_count(),
        Err(dsv4_cuda::CudaError::NoDriver)
    ));
}
