//! Writes the CUBIN of every kernel source for one architecture into a folder, without a GPU,
//! so that a kernel's machine code can be read offline (`nvdisasm -c -fun NAME file.cubin`, from
//! PyPI's `nvidia-cuda-nvdisasm`) before device time is spent on it:
//!
//!     DSV4_NVRTC_LIB=$(scripts/cuda-compile-check-setup) \
//!         cargo run --release -p dsv4-cuda --example cubin_dump -- OUT_DIR [ARCH]
//!
//! ARCH defaults to 90 (H100/H200). One file per source: `quant/matvec.cu` → `quant_matvec.cubin`.

use std::path::PathBuf;

use dsv4_cuda::kernels::ALL_SOURCES;
use dsv4_cuda::nvrtc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: cubin_dump OUT_DIR [ARCH]")?);
    let arch: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(90);
    nvrtc::load_nvrtc(None)?;
    std::fs::create_dir_all(&out)?;
    for src in ALL_SOURCES {
        let cubin = nvrtc::compile(src, arch)?;
        let name = src.path.trim_end_matches(".cu").replace('/', "_") + ".cubin";
        std::fs::write(out.join(&name), &cubin)?;
        println!("{} ({} bytes)", out.join(name).display(), cubin.len());
    }
    Ok(())
}
