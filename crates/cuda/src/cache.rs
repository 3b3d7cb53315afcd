//! On-disk cache of compiled kernels: NVRTC takes seconds per source, a cached CUBIN loads in
//! milliseconds. The key covers everything that changes the output: the source and the
//! shared header, the NVRTC options (which name the architecture) and NVRTC's version.
//!
//! Location: `$DSV4_KERNEL_CACHE` if set (`off` or empty disables the cache), else
//! `$XDG_CACHE_HOME/dsv4/kernels`, else `~/.cache/dsv4/kernels`. A cache that cannot be
//! written is skipped, never an error: it only costs compile time.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::kernels::{common_header, KernelSource};
use crate::nvrtc;

pub const CACHE_ENV: &str = "DSV4_KERNEL_CACHE";

/// The cache folder the environment asks for, or `None` when caching is off or no home is
/// known.
pub fn default_dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(v) if v.is_empty() || v == "off" => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("dsv4").join("kernels"))
}

/// Hex SHA-256 over source, header, options and NVRTC version, each length-prefixed so no two
/// different inputs can concatenate to the same bytes.
pub fn key(src: &KernelSource, arch: u32, nvrtc_version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    let mut part = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    part(src.code.as_bytes());
    part(common_header().as_bytes());
    for o in nvrtc::options(arch) {
        part(o.as_bytes());
    }
    part(format!("nvrtc {}.{}", nvrtc_version.0, nvrtc_version.1).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The file a source's CUBIN is kept in: readable name plus the key.
fn entry(dir: &Path, src: &KernelSource, arch: u32, key: &str) -> PathBuf {
    let stem: String = src
        .path
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    dir.join(format!("{stem}-sm{arch}-{}.cubin", &key[..32]))
}

/// The CUBIN of `src` for `sm_<arch>`, from `dir` when present, else compiled (and stored
/// when `dir` is writable).
pub fn get_or_compile(dir: Option<&Path>, src: &KernelSource, arch: u32) -> Result<Vec<u8>> {
    let Some(dir) = dir else {
        return nvrtc::compile(src, arch);
    };
    let key = key(src, arch, nvrtc::version()?);
    let path = entry(dir, src, arch, &key);
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok(bytes);
        }
    }
    let cubin = nvrtc::compile(src, arch)?;
    store(&path, &cubin);
    Ok(cubin)
}

/// Writes through a temporary file and a rename, so a concurrent reader never sees half a
/// file. Failures are ignored (see the module docs).
fn store(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(&tmp);
}
