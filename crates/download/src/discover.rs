//! Finding the model file when the user did not say `-m`, and the per-user data
//! directory that downloads go to.
//!
//! Every function that reads the environment has a `*_with`/`*_from` twin that
//! takes the values as arguments, so tests never look at the real `$HOME`.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::variant::Variant;

/// Environment variable naming the model file.
pub const MODEL_ENV: &str = "DSV4_MODEL";
/// File name looked for in the working directory (ds4's default `-m`), and in
/// the data directory, where a user can point it at the variant they prefer.
pub const DEFAULT_MODEL_FILE: &str = "ds4flash.gguf";
/// Directory name under the XDG data home.
pub const DATA_DIR_NAME: &str = "dsv4";

/// Per-user data directory: `$XDG_DATA_HOME/dsv4` when that variable is an
/// absolute path, else `~/.local/share/dsv4`. `None` when neither is known.
pub fn default_data_dir() -> Option<PathBuf> {
    data_dir_from(
        std::env::var_os("XDG_DATA_HOME").as_deref(),
        home_dir().as_deref(),
    )
}

/// [`default_data_dir`] with the environment passed in.
pub fn data_dir_from(xdg_data_home: Option<&OsStr>, home: Option<&OsStr>) -> Option<PathBuf> {
    // The XDG spec says a relative value is invalid and must be ignored.
    if let Some(x) = xdg_data_home {
        let p = Path::new(x);
        if !x.is_empty() && p.is_absolute() {
            return Some(p.join(DATA_DIR_NAME));
        }
    }
    let home = home.filter(|h| !h.is_empty())?;
    Some(
        Path::new(home)
            .join(".local")
            .join("share")
            .join(DATA_DIR_NAME),
    )
}

fn home_dir() -> Option<OsString> {
    std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"))
}

/// A Hugging Face token from `$HF_TOKEN`, else the file the `hf` CLI writes
/// (`$HF_HOME/token`, default `~/.cache/huggingface/token`), as ds4's script does.
pub fn hf_token_from_env() -> Option<String> {
    hf_token_from(
        std::env::var_os("HF_TOKEN").as_deref(),
        std::env::var_os("HF_HOME").as_deref(),
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        home_dir().as_deref(),
    )
}

/// [`hf_token_from_env`] with the environment passed in.
pub fn hf_token_from(
    hf_token: Option<&OsStr>,
    hf_home: Option<&OsStr>,
    xdg_cache_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Option<String> {
    if let Some(t) = hf_token.and_then(|t| t.to_str()).map(str::trim) {
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    let hf_home = match hf_home.filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h),
        None => match xdg_cache_home.filter(|x| !x.is_empty()) {
            Some(x) => Path::new(x).join("huggingface"),
            None => Path::new(home.filter(|h| !h.is_empty())?)
                .join(".cache")
                .join("huggingface"),
        },
    };
    let t = std::fs::read_to_string(hf_home.join("token")).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Inputs of model discovery; [`SearchEnv::from_process`] reads the real ones.
#[derive(Clone, Debug, Default)]
pub struct SearchEnv {
    /// Value of `$DSV4_MODEL`.
    pub model_env: Option<OsString>,
    /// Directory `./ds4flash.gguf` is relative to.
    pub cwd: PathBuf,
    /// Per-user data directory (see [`default_data_dir`]).
    pub data_dir: Option<PathBuf>,
}

impl SearchEnv {
    pub fn from_process() -> Self {
        SearchEnv {
            model_env: std::env::var_os(MODEL_ENV),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            data_dir: default_data_dir(),
        }
    }
}

/// Why no model was found: every place looked at, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound {
    /// `(where it came from, path, what was wrong)`.
    pub tried: Vec<(String, PathBuf, String)>,
    /// Set when the user named a file (`-m` or `$DSV4_MODEL`) that is not there;
    /// discovery stops at it instead of silently using another model.
    pub explicit: bool,
}

impl fmt::Display for NotFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.explicit {
            let (from, path, why) = &self.tried[self.tried.len() - 1];
            return write!(
                f,
                "model file {} (from {from}) {why}; fix the path, or run `dsv4 download {}` \
                 to fetch a model",
                path.display(),
                Variant::Q2Imatrix.name()
            );
        }
        writeln!(f, "no DeepSeek V4 Flash GGUF found; looked at:")?;
        for (from, path, why) in &self.tried {
            writeln!(f, "  {} ({from}): {why}", path.display())?;
        }
        write!(
            f,
            "run `dsv4 download {}` (about 81 GiB, for 96-128 GB machines) or `dsv4 download {}` \
             (about 153 GiB, 256 GB+), or pass -m FILE / set {MODEL_ENV}",
            Variant::Q2Imatrix.name(),
            Variant::Q4Imatrix.name()
        )
    }
}

impl std::error::Error for NotFound {}

/// Find the model to load: `-m FILE`, then `$DSV4_MODEL`, then
/// `./ds4flash.gguf`, then the data directory (`ds4flash.gguf` there, then the
/// downloaded variants in [`Variant::ALL`] order, smallest-memory first).
pub fn find_model(explicit: Option<&Path>) -> Result<PathBuf, NotFound> {
    find_model_with(explicit, &SearchEnv::from_process())
}

/// [`find_model`] with the environment passed in.
pub fn find_model_with(explicit: Option<&Path>, env: &SearchEnv) -> Result<PathBuf, NotFound> {
    let mut tried = Vec::new();
    // A name the user gave is final: if it is wrong, say so rather than
    // falling back to some other model they did not ask for.
    let named = explicit
        .map(|p| ("-m".to_string(), p.to_path_buf()))
        .or_else(|| {
            env.model_env
                .as_ref()
                .filter(|v| !v.is_empty())
                .map(|v| (format!("${MODEL_ENV}"), PathBuf::from(v)))
        });
    if let Some((from, p)) = named {
        let p = if p.is_relative() { env.cwd.join(p) } else { p };
        return match check(&p) {
            Ok(()) => Ok(p),
            Err(why) => {
                tried.push((from, p, why));
                Err(NotFound {
                    tried,
                    explicit: true,
                })
            }
        };
    }
    let mut candidates = vec![(
        "working directory".to_string(),
        env.cwd.join(DEFAULT_MODEL_FILE),
    )];
    if let Some(d) = &env.data_dir {
        candidates.push(("data directory".to_string(), d.join(DEFAULT_MODEL_FILE)));
        for v in Variant::ALL.into_iter().filter(|v| v.is_main_model()) {
            candidates.push((
                format!("data directory, {}", v.name()),
                d.join(v.file_name()),
            ));
        }
    } else {
        tried.push((
            "data directory".to_string(),
            PathBuf::from("$XDG_DATA_HOME/dsv4"),
            "neither XDG_DATA_HOME nor HOME is set".to_string(),
        ));
    }
    for (from, p) in candidates {
        match check(&p) {
            Ok(()) => return Ok(p),
            Err(why) => tried.push((from, p, why)),
        }
    }
    Err(NotFound {
        tried,
        explicit: false,
    })
}

/// The downloaded file of `variant` in `dir`, if complete (the `.part` of an
/// unfinished download has another name, so it is never picked).
pub fn find_variant_in(dir: &Path, variant: Variant) -> Option<PathBuf> {
    let p = dir.join(variant.file_name());
    check(&p).ok().map(|_| p)
}

fn check(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        Ok(m) if m.is_file() => Err("is empty".to_string()),
        Ok(_) => Err("is not a regular file".to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(p).is_ok() {
                Err("is a dangling symlink".to_string())
            } else {
                Err("does not exist".to_string())
            }
        }
        Err(e) => Err(format!("cannot be read: {e}")),
    }
}
