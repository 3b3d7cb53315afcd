//! Fetch antirez's DeepSeek V4 Flash GGUF files from Hugging Face and find a
//! local model file.
//!
//! ```no_run
//! use dsv4_download::{download, default_data_dir, DownloadOptions, Source, TerminalProgress};
//!
//! let dir = default_data_dir().expect("HOME is set");
//! let mut opts = DownloadOptions::new(dir);
//! opts.token = dsv4_download::hf_token_from_env();
//! let mut bar = TerminalProgress::stderr();
//! let got = download(Source::parse("q2-imatrix")?, &opts, &mut |p| bar.update(p))?;
//! bar.finish();
//! println!("{}", got.path.display());
//! # Ok::<(), dsv4_download::DownloadError>(())
//! ```
//!
//! Checksum source of truth: `DownloadOptions::expected_sha256` when given;
//! otherwise the SHA-256 the Hub announces for the file on its `resolve` reply
//! (`X-Linked-Etag`, else an `ETag` that is 64 hex digits, read from the Hub's
//! own origin, never from the CDN). Both present and different is an error
//! before any byte is fetched. With neither, the download is refused unless
//! `require_checksum` is turned off. The whole file is hashed while it streams
//! (an earlier `.part` is re-read once to seed the hash), and a mismatch moves
//! the bytes to `<file>.sha256-mismatch` and fails; the final name only ever
//! appears for a verified file (after fsync, by rename).

mod discover;
mod download;
mod error;
mod http;
mod progress;
mod variant;

pub use discover::{
    data_dir_from, default_data_dir, find_model, find_model_with, find_variant_in, hf_token_from,
    hf_token_from_env, NotFound, SearchEnv, DATA_DIR_NAME, DEFAULT_MODEL_FILE, MODEL_ENV,
};
pub use download::{download, remote_info, resolve, DownloadOptions, Downloaded, RemoteInfo};
pub use error::DownloadError;
pub use progress::{
    format_progress, human_bytes, human_duration, Phase, Progress, TerminalProgress,
};
pub use variant::{Source, Variant, DEFAULT_BASE_URL, DEFAULT_REPO, DEFAULT_REVISION};
