//! Device memory owned by the crate's callers.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr};

/// Allocations are rounded up to this many bytes. Kernels read whole 16-byte lines around
/// their data (GGUF blocks are not 16-byte aligned), so every buffer must own the bytes up to
/// the next 16-byte boundary after its last element; 256 also keeps each buffer's end on the
/// allocator's granularity.
pub const ALLOC_ALIGN: usize = 256;

/// `len` elements of `T` in device memory (the allocation may be a little longer, see
/// [`ALLOC_ALIGN`]; the padding is zeroed).
pub struct DeviceBuffer<T> {
    pub(crate) slice: CudaSlice<T>,
    pub(crate) len: usize,
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceBuffer<{}>[{}]",
            std::any::type_name::<T>(),
            self.len
        )
    }
}

/// Elements to allocate for `len` logical elements of `size` bytes each.
pub(crate) fn padded_len(len: usize, size: usize) -> usize {
    let bytes = (len * size).max(1).next_multiple_of(ALLOC_ALIGN);
    bytes.div_ceil(size.max(1))
}

impl<T: DeviceRepr> DeviceBuffer<T> {
    /// Logical length in elements.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Logical size in bytes.
    pub fn num_bytes(&self) -> usize {
        self.len * std::mem::size_of::<T>()
    }

    /// The logical elements, for kernel arguments and copies.
    pub fn view(&self) -> CudaView<'_, T> {
        self.slice.slice(..self.len)
    }

    pub fn view_mut(&mut self) -> CudaViewMut<'_, T> {
        self.slice.slice_mut(..self.len)
    }

    /// The whole allocation (padding included), for callers that use cudarc directly.
    pub fn cuda_slice(&self) -> &CudaSlice<T> {
        &self.slice
    }

    pub fn cuda_slice_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}
