//! Kernel launches through `cuLaunchKernelEx`, optionally as programmatic dependent launches.
//!
//! A decode step is ~40 dependent kernels per layer, most of them a few microseconds long, so
//! the gap between one kernel's last CTA and the next kernel's first (launch, CTA
//! scheduling, the first loads' latency) is a large share of the step. On sm_90 a launch may
//! carry the "programmatic stream serialization" attribute: the kernel's CTAs are then
//! scheduled as soon as every CTA of the previous kernel has started (`DSV4_GRID_ENTRY`
//! triggers it) and sit in `griddepcontrol.wait` until that kernel has finished and its
//! writes are visible. Work that reads nothing a kernel writes (the matvecs' first weight
//! copies) may go before the wait. The attribute survives stream capture, so the graphs of
//! the decode step keep the overlap.
//!
//! Contract for `overlap`: the kernel waits (`DSV4_GRID_ENTRY` or `grid_wait` in
//! `dsv4_common.cuh`) before it touches memory that an earlier kernel writes or reads, which
//! every kernel of the matvec and model sources does. Kernels that keep the plain contract
//! (the matmuls, the utilities) are launched with `overlap` off.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::sys::{self, CUlaunchAttribute, CUlaunchAttributeID, CUlaunchAttributeValue, CUlaunchConfig};
use cudarc::driver::{CudaFunction, CudaStream, DriverError};

use crate::error::Result;

/// Where a kernel is queued: `stream`, and whether it may overlap the kernel before it there
/// (a programmatic dependent launch, taken only where the device has them and they are asked
/// for). The first kernel after a wait on another stream's work is queued plain: an
/// overlapping launch names the one kernel before it on its stream.
#[derive(Clone, Copy)]
pub struct Queue<'a> {
    pub stream: &'a Arc<CudaStream>,
    pub overlap: bool,
}

/// One kernel argument, passed by value (device addresses are plain 64-bit integers).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

/// Queues `f` on `stream` with grid `grid`, `block` threads, `smem` bytes of dynamic shared
/// memory and `args` (in the kernel's parameter order).
///
/// # Safety
/// `args` match the kernel's parameter list in number, type and order, every address among
/// them is valid for what the kernel does with it until the launch completes, and with
/// `overlap` the kernel keeps the contract in the module documentation.
pub(crate) unsafe fn launch_ex(
    stream: &CudaStream,
    f: &CudaFunction,
    grid: (u32, u32, u32),
    block: u32,
    smem: u32,
    args: &[Arg],
    overlap: bool,
) -> Result<()> {
    // Each argument's value in an 8-byte cell (4-byte ones in the low bytes: the driver reads
    // as many bytes as the parameter has, and the host is little-endian).
    let mut vals: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::P(v) => v,
            Arg::I(v) => v as u32 as u64,
            Arg::L(v) => v as u64,
            Arg::F(v) => v.to_bits() as u64,
        })
        .collect();
    let mut params: Vec<*mut c_void> = vals.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
    stream.context().bind_to_thread()?;
    // SAFETY: an all-zero attribute is a valid (ignored) value of this plain C union.
    let mut attr: CUlaunchAttribute = unsafe { std::mem::zeroed() };
    attr.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
    attr.value = {
        // SAFETY: as above.
        let mut v: CUlaunchAttributeValue = unsafe { std::mem::zeroed() };
        v.programmaticStreamSerializationAllowed = 1;
        v
    };
    let cfg = CUlaunchConfig {
        gridDimX: grid.0,
        gridDimY: grid.1,
        gridDimZ: grid.2,
        blockDimX: block,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: smem,
        hStream: stream.cu_stream(),
        attrs: if overlap { &mut attr } else { std::ptr::null_mut() },
        numAttrs: overlap as u32,
    };
    // SAFETY: the configuration is valid for this call (attr outlives it), and the caller
    // vouches for the function's parameters.
    let r = unsafe { sys::cuLaunchKernelEx(&cfg, f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) };
    r.result().map_err(|e: DriverError| e.into())
}
