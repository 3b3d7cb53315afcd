//! Run-time compilation of the kernel sources with NVRTC, to CUBIN for one real architecture.
//!
//! Finding the library. cudarc `dlopen`s libnvrtc by bare names (`libnvrtc.so`,
//! `libnvrtc.so.13`, ...), i.e. through `LD_LIBRARY_PATH` and the loader cache, and panics when
//! none loads. [`load_nvrtc`] runs first and never panics: it takes an explicit path
//! (`DSV4_NVRTC_LIB`, or the caller's), else the bare names, else the usual toolkit folders.
//! A library found by path is opened with `RTLD_GLOBAL` and kept for the process's life;
//! glibc then answers cudarc's later `dlopen("libnvrtc.so.13")` with that same object,
//! because a bare name matches the SONAME of an already loaded library. libnvrtc itself
//! `dlopen`s `libnvrtc-builtins.so.<major>.<minor>` by bare name, so the builtins library
//! beside it is preloaded the same way (without it every compile fails with "failed to open
//! libnvrtc-builtins").

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::sys as nv;

use crate::error::{CudaError, Result};
use crate::kernels::{common_header, KernelSource, COMMON_HEADER_NAME};

/// Environment variable naming libnvrtc's path (for example the compile-check venv's).
pub const NVRTC_LIB_ENV: &str = "DSV4_NVRTC_LIB";

/// Toolkit folders searched when neither `DSV4_NVRTC_LIB` nor the loader's search path finds
/// the library (CUDA images often keep `/usr/local/cuda/lib64` out of the loader cache).
const FALLBACK_DIRS: &[&str] = &[
    "/usr/local/cuda/lib64",
    "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/local/cuda-13.0/lib64",
    "/usr/local/cuda-13/lib64",
    "/usr/local/cuda/targets/sbsa-linux/lib",
    "/usr/lib/x86_64-linux-gnu",
];

/// The outcome of the first successful or failed load, shared by every later call.
static LOADED: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// Makes libnvrtc available to cudarc. `explicit` (or else `DSV4_NVRTC_LIB`) is a path to
/// `libnvrtc.so.*`; without either the default search applies. Returns a description of what
/// was loaded. Only the first call decides; later calls return its outcome.
pub fn load_nvrtc(explicit: Option<&Path>) -> Result<String> {
    let outcome = LOADED.get_or_init(|| {
        let from_env = std::env::var_os(NVRTC_LIB_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if let Some(path) = explicit.map(Path::to_path_buf).or(from_env) {
            return preload(&path).map(|()| path.display().to_string());
        }
        // SAFETY: probing loads and drops candidate libraries; libnvrtc has no load-time
        // side effects beyond its own initialisation.
        if unsafe { nv::is_culib_present() } {
            return Ok("libnvrtc from the loader's search path".to_string());
        }
        let mut searched = vec!["the loader's search path".to_string()];
        for dir in FALLBACK_DIRS {
            if let Some(path) = find_in_dir(Path::new(dir)) {
                return preload(&path).map(|()| path.display().to_string());
            }
            searched.push((*dir).to_string());
        }
        Err(searched.join(", "))
    });
    outcome
        .clone()
        .map_err(|searched| CudaError::NoNvrtc { searched })
}

/// `libnvrtc.so.<N>` in `dir`, preferring the highest major version.
fn find_in_dir(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let major: u32 = name
                .strip_prefix("libnvrtc.so.")?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            Some((major, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Opens `path` (and the builtins library beside it) globally and keeps both loaded.
fn preload(path: &Path) -> std::result::Result<(), String> {
    if !path.is_file() {
        return Err(format!("{} (no such file)", path.display()));
    }
    if let Some(dir) = path.parent() {
        let builtins = std::fs::read_dir(dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .find(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt.")
            });
        if let Some(b) = builtins {
            open_global(&b.path())?;
        }
    }
    open_global(path)
}

fn open_global(path: &Path) -> std::result::Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a vendor shared library; its initialisers have no preconditions.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("{} ({e})", path.display()))?;
    // Kept for the life of the process: cudarc's handle refers to the same object.
    std::mem::forget(lib);
    Ok(())
}

/// NVRTC's `(major, minor)` version. Part of the kernel cache key: another NVRTC may emit
/// different code for the same source.
pub fn version() -> Result<(i32, i32)> {
    load_nvrtc(None)?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two valid out-pointers.
    check("nvrtcVersion", unsafe {
        nv::nvrtcVersion(&mut major, &mut minor)
    })?;
    Ok((major, minor))
}

fn check(call: &'static str, code: nv::nvrtcResult) -> Result<()> {
    if code == nv::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Nvrtc { call, code })
    }
}

/// NVRTC options shared by every source. No `--use_fast_math`: the plain numerics need IEEE
/// division and exact conversions; FMA contraction stays on (the default), which only
/// changes rounding within the stated tolerances.
pub fn options(arch: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=sm_{arch}"),
        "-std=c++17".to_string(),
    ]
}

/// Compiles `src` to a CUBIN for `sm_<arch>` (for example 90). Errors carry NVRTC's log.
pub fn compile(src: &KernelSource, arch: u32) -> Result<Vec<u8>> {
    compile_with_log(src, arch).map(|(cubin, _)| cubin)
}

/// [`compile`], also returning NVRTC's log of a successful compile (its warnings; empty when
/// there are none).
pub fn compile_with_log(src: &KernelSource, arch: u32) -> Result<(Vec<u8>, String)> {
    compile_with_options(src, arch, &[])
}

/// [`compile_with_log`] with extra NVRTC options after the standard ones (for example
/// `--ptxas-options=-v`, whose register and spill report lands in the log).
pub fn compile_with_options(
    src: &KernelSource,
    arch: u32,
    extra: &[&str],
) -> Result<(Vec<u8>, String)> {
    load_nvrtc(None)?;
    let code = CString::new(src.code)
        .map_err(|_| CudaError::Shape(format!("{} contains a NUL byte", src.path)))?;
    let name = CString::new(src.path).expect("kernel paths have no NUL");
    let header = CString::new(common_header()).expect("header has no NUL");
    let header_name = CString::new(COMMON_HEADER_NAME).expect("header name has no NUL");
    let headers = [header.as_ptr()];
    let include_names = [header_name.as_ptr()];
    let mut prog: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all strings outlive the program, which is destroyed below on every path.
    check("nvrtcCreateProgram", unsafe {
        nv::nvrtcCreateProgram(
            &mut prog,
            code.as_ptr(),
            name.as_ptr(),
            1,
            headers.as_ptr(),
            include_names.as_ptr(),
        )
    })?;
    let result = compile_program(prog, src, arch, extra);
    // SAFETY: `prog` came from nvrtcCreateProgram and is destroyed once.
    unsafe { nv::nvrtcDestroyProgram(&mut prog) };
    result
}

fn compile_program(
    prog: nv::nvrtcProgram,
    src: &KernelSource,
    arch: u32,
    extra: &[&str],
) -> Result<(Vec<u8>, String)> {
    let all = options(arch)
        .into_iter()
        .chain(extra.iter().map(|o| o.to_string()));
    let opts: Vec<CString> = all
        .map(|o| CString::new(o).expect("options have no NUL"))
        .collect();
    let ptrs: Vec<*const c_char> = opts.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: `ptrs` points at `opts`, alive for the call.
    let status = unsafe { nv::nvrtcCompileProgram(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    if status != nv::nvrtcResult::NVRTC_SUCCESS {
        let log = program_log(prog).unwrap_or_else(|e| format!("(no log: {e})"));
        return Err(CudaError::Compile {
            source_name: src.path,
            arch: format!("sm_{arch}"),
            log,
        });
    }
    let mut size = 0usize;
    // SAFETY: valid program and out-pointer; the buffer has the size NVRTC reported.
    check("nvrtcGetCUBINSize", unsafe {
        nv::nvrtcGetCUBINSize(prog, &mut size)
    })?;
    let mut cubin = vec![0u8; size];
    check("nvrtcGetCUBIN", unsafe {
        nv::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char)
    })?;
    Ok((cubin, program_log(prog)?.trim().to_string()))
}

/// NVRTC's diagnostics for `prog` (warnings too).
fn program_log(prog: nv::nvrtcProgram) -> Result<String> {
    let mut size = 0usize;
    // SAFETY: as in `compile_program`.
    check("nvrtcGetProgramLogSize", unsafe {
        nv::nvrtcGetProgramLogSize(prog, &mut size)
    })?;
    let mut buf = vec![0 as c_char; size.max(1)];
    check("nvrtcGetProgramLog", unsafe {
        nv::nvrtcGetProgramLog(prog, buf.as_mut_ptr())
    })?;
    // SAFETY: NVRTC NUL-terminates the log within `size` bytes.
    Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned())
}
