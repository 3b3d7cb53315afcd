//! Errors a download can end with. Every message names the file or URL and,
//! where there is one, the step that fixes it, because the CLI prints them as is.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    #[error(
        "unknown model `{name}`: expected one of q2-imatrix, q4-imatrix, q2, q4, mtp, \
         a .gguf file name of the repository, or an http(s) URL"
    )]
    UnknownSource { name: String },

    #[error("invalid URL {url}: {reason}")]
    BadUrl { url: String, reason: String },

    #[error("{file} was not found on the server (HTTP 404) at {url}")]
    NotFound { file: String, url: String },

    #[error(
        "access denied (HTTP {status}) for {url}: the repository may be private or gated, or \
         its name is wrong; set HF_TOKEN (or pass a token) to a Hugging Face token that can read it"
    )]
    Unauthorized { status: u16, url: String },

    #[error("HTTP {status} from {url}")]
    Http { status: u16, url: String },

    #[error("network error while fetching {url}: {message}")]
    Network { url: String, message: String },

    #[error(
        "download of {file} stopped at {done} of {} bytes: {message}; run the same command \
         again to resume", total.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
    )]
    Interrupted {
        file: String,
        done: u64,
        total: Option<u64>,
        message: String,
    },

    #[error(
        "not enough disk space for {}: {} more bytes needed, {} available",
        path.display(), needed.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        available.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
    )]
    DiskFull {
        path: PathBuf,
        needed: Option<u64>,
        available: Option<u64>,
    },

    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    #[error(
        "checksum mismatch for {file}: expected sha256 {expected}, got {actual}; the bytes were \
         kept at {} (delete it, then run the command again)", kept.display()
    )]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
        kept: PathBuf,
    },

    #[error(
        "checksum conflict for {file}: expected sha256 {pinned}, but the server announces \
         {announced} (the published file changed, or the expected value is wrong)"
    )]
    ChecksumConflict {
        file: String,
        pinned: String,
        announced: String,
    },

    #[error(
        "no SHA-256 is known for {url}: the server sent no X-Linked-Etag/ETag checksum; give the \
         expected checksum or turn verification off"
    )]
    NoChecksum { url: String },

    #[error("expected sha256 `{value}` is not 64 hex digits")]
    BadChecksum { value: String },

    #[error("another download of {} is already running (its .part file is locked)", path.display())]
    Busy { path: PathBuf },

    #[error("unexpected reply from {url}: {message}")]
    Protocol { url: String, message: String },

    #[error("too many redirects starting at {url}")]
    TooManyRedirects { url: String },
}

impl DownloadError {
    /// Whether trying again (resuming from the `.part`) may succeed. Used by the
    /// retry loop; the CLI can use it to word its advice.
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::Network { .. } | DownloadError::Interrupted { .. } => true,
            // 408/429 and server-side errors are usually transient on a CDN.
            DownloadError::Http { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }
}

/// Wrap an I/O error on `path`, turning "no space" into [`DownloadError::DiskFull`]
/// so the user sees the cause rather than an errno.
pub(crate) fn io_err(path: &Path, e: io::Error) -> DownloadError {
    if is_disk_full(&e) {
        DownloadError::DiskFull {
            path: path.to_path_buf(),
            needed: None,
            available: None,
        }
    } else {
        DownloadError::Io {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
        return true;
    }
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_maps_to_disk_full() {
        let p = Path::new("/x/y.part");
        let e = io_err(p, io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(e, DownloadError::DiskFull { .. }), "{e:?}");
        assert!(e.to_string().contains("/x/y.part"));
        let e = io_err(p, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, DownloadError::Io { .. }));
    }

    #[test]
    fn retryable_classes() {
        let net = DownloadError::Network {
            url: "u".into(),
            message: "m".into(),
        };
        assert!(net.is_retryable());
        assert!(DownloadError::Http {
            status: 503,
            url: "u".into()
        }
        .is_retryable());
        assert!(!DownloadError::Http {
            status: 400,
            url: "u".into()
        }
        .is_retryable());
        assert!(!DownloadError::NotFound {
            file: "f".into(),
            url: "u".into()
        }
        .is_retryable());
    }
}
