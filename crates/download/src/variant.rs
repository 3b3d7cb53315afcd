//! The published model files and how a user names what to download.

use crate::error::DownloadError;

/// Hugging Face repository holding antirez's GGUF files.
pub const DEFAULT_REPO: &str = "antirez/deepseek-v4-gguf";
/// Where the Hub lives; tests replace it with a local server.
pub const DEFAULT_BASE_URL: &str = "https://huggingface.co";
/// Branch the download script fetches from.
pub const DEFAULT_REVISION: &str = "main";

/// One of the files `dsv4 download NAME` knows by name.
///
/// File names are taken verbatim from ds4's `download_model.sh`: the `-imatrix`
/// pair from its current revision, the plain `q2`/`q4` pair and `mtp` from an
/// earlier one (the current script no longer offers the plain pair, so those two
/// may have been removed from the repository since).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    Q2Imatrix,
    Q4Imatrix,
    Q2,
    Q4,
    Mtp,
}

impl Variant {
    /// Every variant, in the order `dsv4 download --help` should list them and in
    /// which model discovery prefers them (MTP is never a main model).
    pub const ALL: [Variant; 5] = [
        Variant::Q2Imatrix,
        Variant::Q4Imatrix,
        Variant::Q2,
        Variant::Q4,
        Variant::Mtp,
    ];

    /// The name used on the command line (`q2-imatrix`, ..., `mtp`).
    pub fn name(self) -> &'static str {
        match self {
            Variant::Q2Imatrix => "q2-imatrix",
            Variant::Q4Imatrix => "q4-imatrix",
            Variant::Q2 => "q2",
            Variant::Q4 => "q4",
            Variant::Mtp => "mtp",
        }
    }

    /// Parse a command-line name; case-insensitive, `_` accepted for `-`.
    pub fn from_name(name: &str) -> Option<Variant> {
        let norm = name.trim().to_ascii_lowercase().replace('_', "-");
        Variant::ALL.into_iter().find(|v| v.name() == norm)
    }

    /// File name in the repository (and on disk).
    pub fn file_name(self) -> &'static str {
        match self {
            Variant::Q2Imatrix => {
                "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2-imatrix.gguf"
            }
            Variant::Q4Imatrix => {
                "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2-imatrix.gguf"
            }
            Variant::Q2 => "DeepSeek-V4-Flash-IQ2XXS-w2Q2K-AProjQ8-SExpQ8-OutQ8-chat-v2.gguf",
            Variant::Q4 => {
                "DeepSeek-V4-Flash-Q4KExperts-F16HC-F16Compressor-F16Indexer-Q8Attn-Q8Shared-Q8Out-chat-v2.gguf"
            }
            Variant::Mtp => "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf",
        }
    }

    /// Approximate size in bytes, for messages and a rough plan only (the real
    /// size comes from the server). q2/q4 are our computed tensor-data totals
    /// (80.76 GiB / 153.32 GiB, which match ds4's log and script); the MTP figure
    /// is the script's "about 3.5 GB" rounded up.
    pub fn approx_bytes(self) -> u64 {
        match self {
            Variant::Q2Imatrix | Variant::Q2 => 86_710_000_000,
            Variant::Q4Imatrix | Variant::Q4 => 164_630_000_000,
            Variant::Mtp => 3_800_000_000,
        }
    }

    /// One line for help output: what it is and who it is for.
    pub fn description(self) -> &'static str {
        match self {
            Variant::Q2Imatrix => {
                "2-bit routed experts, imatrix-tuned (about 81 GiB); recommended for 96-128 GB machines"
            }
            Variant::Q4Imatrix => {
                "4-bit routed experts, imatrix-tuned (about 153 GiB); for 256 GB+ machines"
            }
            Variant::Q2 => "2-bit routed experts without imatrix (about 81 GiB); older build",
            Variant::Q4 => "4-bit routed experts without imatrix (about 153 GiB); older build",
            Variant::Mtp => {
                "optional MTP speculative-decoding head (about 3.5 GiB); use with --mtp"
            }
        }
    }

    /// Whether this file is a full model (as opposed to the MTP add-on).
    pub fn is_main_model(self) -> bool {
        !matches!(self, Variant::Mtp)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to download: a known variant, any file of the repository, or a full URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Variant(Variant),
    /// A file name inside the repository (`DownloadOptions::repo`).
    RepoFile(String),
    /// An absolute http(s) URL; the file name is its last path segment.
    Url(String),
}

impl Source {
    /// Interpret a command-line argument: a variant name, an `http(s)://` URL, or
    /// a `.gguf` file name of the repository. Anything else is refused, so a typo
    /// in a variant name is not sent to the server as a file name.
    pub fn parse(arg: &str) -> Result<Source, DownloadError> {
        if let Some(v) = Variant::from_name(arg) {
            return Ok(Source::Variant(v));
        }
        let lower = arg.to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            return Ok(Source::Url(arg.to_string()));
        }
        if lower.ends_with(".gguf") && valid_file_name(arg) {
            return Ok(Source::RepoFile(arg.to_string()));
        }
        Err(DownloadError::UnknownSource {
            name: arg.to_string(),
        })
    }
}

impl From<Variant> for Source {
    fn from(v: Variant) -> Source {
        Source::Variant(v)
    }
}

/// A name we are willing to create inside the download directory: one plain path
/// component, so a hostile URL cannot write outside it.
pub(crate) fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_name(v.name()), Some(v));
            assert!(v.file_name().ends_with(".gguf"));
        }
        let mut files: Vec<_> = Variant::ALL.iter().map(|v| v.file_name()).collect();
        files.sort();
        files.dedup();
        assert_eq!(files.len(), 5);
        assert_eq!(Variant::from_name("Q2_IMATRIX"), Some(Variant::Q2Imatrix));
        assert_eq!(Variant::from_name("q3"), None);
    }

    #[test]
    fn imatrix_names_extend_the_plain_ones() {
        // ARCH.md §7.4 writes the pair as `...chat-v2(-imatrix).gguf`.
        for (plain, im) in [
            (Variant::Q2, Variant::Q2Imatrix),
            (Variant::Q4, Variant::Q4Imatrix),
        ] {
            let stem = plain.file_name().strip_suffix(".gguf").unwrap();
            assert_eq!(im.file_name(), format!("{stem}-imatrix.gguf"));
        }
    }

    #[test]
    fn source_parse() {
        assert_eq!(Source::parse("mtp").unwrap(), Source::Variant(Variant::Mtp));
        assert_eq!(
            Source::parse("https://x.test/a/b.gguf").unwrap(),
            Source::Url("https://x.test/a/b.gguf".into())
        );
        assert_eq!(
            Source::parse("Other.gguf").unwrap(),
            Source::RepoFile("Other.gguf".into())
        );
        assert!(matches!(
            Source::parse("q3"),
            Err(DownloadError::UnknownSource { .. })
        ));
        assert!(Source::parse("../evil.gguf").is_err());
    }
}
