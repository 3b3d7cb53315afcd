//! The crate's one error type. Nothing here panics on a machine without CUDA: a missing
//! driver or NVRTC library is an error value that says so.

use dsv4_gguf::GgmlType;

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda could not be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver was found (libcuda.so could not be loaded); this machine cannot run GPU code")]
    NoDriver,
    /// The driver loaded but reports no device with that index.
    #[error("CUDA device {index} does not exist ({count} device(s) present)")]
    NoDevice { index: usize, count: usize },
    /// The device is older than the kernels support.
    #[error("CUDA device {index} is sm_{major}{minor}; dsv4 kernels need sm_80 or newer")]
    UnsupportedArch {
        index: usize,
        major: i32,
        minor: i32,
    },
    #[error("CUDA driver call failed: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// libnvrtc could not be loaded from any of the places searched.
    #[error(
        "NVRTC (libnvrtc.so) was not found; searched: {searched}. Set DSV4_NVRTC_LIB to its path"
    )]
    NoNvrtc { searched: String },
    #[error("NVRTC call {call} failed: {code:?}")]
    Nvrtc {
        call: &'static str,
        code: cudarc::nvrtc::sys::nvrtcResult,
    },
    /// A kernel source did not compile; `log` is NVRTC's diagnostic output.
    #[error("NVRTC could not compile {source_name} for {arch}:\n{log}")]
    Compile {
        source_name: &'static str,
        arch: String,
        log: String,
    },
    #[error("kernel function {0} is missing from its module")]
    MissingKernel(String),
    #[error("{0} is not supported by the CUDA kernels")]
    UnsupportedType(GgmlType),
    #[error("bad shape: {0}")]
    Shape(String),
}
