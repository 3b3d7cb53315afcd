//! One CUDA device: its context, the stream all work goes to, and its kernel modules.

use std::path::PathBuf;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaModule, CudaStream, DeviceRepr, DriverError, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use crate::buffer::{padded_len, DeviceBuffer};
use crate::cache;
use crate::error::{CudaError, Result};
use crate::kernels::KernelSource;

/// Whether libcuda (the NVIDIA driver's user-space library) can be loaded here. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: tries to dlopen libcuda under its usual names and closes it again.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices; an error when there is no driver.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    match CudaContext::device_count() {
        Ok(n) => Ok(n.max(0) as usize),
        // cuInit's answer when the driver is installed but sees no GPU.
        Err(DriverError(CUresult::CUDA_ERROR_NO_DEVICE)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// A CUDA device chosen by index (`--gpu N`), with one stream on which every launch and copy
/// of this crate is ordered. Cheap to share behind an `Arc`.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    index: usize,
    name: String,
    cc: (i32, i32),
    sm_count: usize,
    l2_bytes: usize,
    cache_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Gpu({}: {}, sm_{}{})",
            self.index, self.name, self.cc.0, self.cc.1
        )
    }
}

impl Gpu {
    /// Opens device `index`. Errors (never panics) when there is no driver, no such device,
    /// or the device is older than sm_80.
    pub fn new(index: usize) -> Result<Self> {
        let count = device_count()?;
        if index >= count {
            return Err(CudaError::NoDevice { index, count });
        }
        let ctx = CudaContext::new(index)?;
        // One stream, ordered by hand: cudarc's per-buffer event tracking would add two event
        // records to every launch and get in the way of graph capture later.
        // SAFETY: nothing has been allocated or launched on this context by this process yet,
        // and this crate uses a single stream.
        unsafe { ctx.disable_event_tracking() };
        let cc = ctx.compute_capability()?;
        if cc.0 < 8 {
            return Err(CudaError::UnsupportedArch {
                index,
                major: cc.0,
                minor: cc.1,
            });
        }
        let name = ctx.name()?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?
            .max(1) as usize;
        let l2_bytes = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?
            .max(0) as usize;
        // A stream of its own rather than the legacy default stream, which CUDA cannot
        // capture into a graph (the model runner captures its decode step).
        let stream = ctx.new_stream()?;
        Ok(Gpu {
            ctx,
            stream,
            index,
            name,
            cc,
            sm_count,
            l2_bytes,
            cache_dir: cache::default_dir(),
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// The NVRTC target, e.g. 90 for `sm_90` (H100/H200).
    pub fn arch(&self) -> u32 {
        (self.cc.0 * 10 + self.cc.1) as u32
    }

    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    pub fn l2_bytes(&self) -> usize {
        self.l2_bytes
    }

    /// `(free, total)` device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        Ok(self.ctx.mem_get_info()?)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Overrides the kernel cache folder (`None` disables caching).
    pub fn set_kernel_cache(&mut self, dir: Option<PathBuf>) {
        self.cache_dir = dir;
    }

    /// Compiles `src` for this device (through the disk cache) and loads it.
    pub fn load_module(&self, src: &KernelSource) -> Result<Arc<CudaModule>> {
        let cubin = cache::get_or_compile(self.cache_dir.as_deref(), &src.resolved(), self.arch())?;
        Ok(self.ctx.load_module(Ptx::from_binary(cubin))?)
    }

    /// Copies `data` to a new device buffer (synchronously).
    pub fn upload<T: DeviceRepr + ValidAsZeroBits>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        let mut buf = self.alloc_zeros::<T>(data.len())?;
        if !data.is_empty() {
            self.stream.memcpy_htod(data, &mut buf.view_mut())?;
        }
        self.stream.synchronize()?;
        Ok(buf)
    }

    /// A zeroed device buffer of `len` elements.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<DeviceBuffer<T>> {
        let slice = self
            .stream
            .alloc_zeros::<T>(padded_len(len, std::mem::size_of::<T>()))?;
        Ok(DeviceBuffer { slice, len })
    }

    /// Copies `src` into the existing buffer `dst` (same length).
    pub fn copy_to_device<T: DeviceRepr>(
        &self,
        src: &[T],
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        if src.len() != dst.len() {
            return Err(CudaError::Shape(format!(
                "copy of {} elements into a buffer of {}",
                src.len(),
                dst.len()
            )));
        }
        if !src.is_empty() {
            self.stream.memcpy_htod(src, &mut dst.view_mut())?;
        }
        Ok(())
    }

    /// Copies a buffer back to the host, after all work queued before it.
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        buf: &DeviceBuffer<T>,
    ) -> Result<Vec<T>> {
        let mut out = vec![T::default(); buf.len()];
        if !out.is_empty() {
            self.stream.memcpy_dtoh(&buf.view(), &mut out)?;
        }
        self.stream.synchronize()?;
        Ok(out)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
