//! Model discovery and data-dir rules, with every input injected (the real
//! `$HOME` and environment are never read).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use dsv4_download::{
    data_dir_from, find_model_with, find_variant_in, hf_token_from, SearchEnv, Variant,
    DEFAULT_MODEL_FILE,
};

struct Dirs {
    _root: tempfile::TempDir,
    cwd: PathBuf,
    data: PathBuf,
    other: PathBuf,
}

fn dirs() -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let cwd = root.path().join("cwd");
    let data = root.path().join("data");
    let other = root.path().join("other");
    for d in [&cwd, &data, &other] {
        fs::create_dir_all(d).unwrap();
    }
    Dirs {
        _root: root,
        cwd,
        data,
        other,
    }
}

fn touch(p: &Path) {
    fs::write(p, b"GGUF").unwrap();
}

fn env(d: &Dirs, model_env: Option<&Path>) -> SearchEnv {
    SearchEnv {
        model_env: model_env.map(|p| p.as_os_str().to_owned()),
        cwd: d.cwd.clone(),
        data_dir: Some(d.data.clone()),
    }
}

#[test]
fn order_is_flag_env_cwd_datadir() {
    let d = dirs();
    let flag = d.other.join("flag.gguf");
    let from_env = d.other.join("env.gguf");
    let cwd_model = d.cwd.join(DEFAULT_MODEL_FILE);
    let q4 = d.data.join(Variant::Q4Imatrix.file_name());
    for p in [&flag, &from_env, &cwd_model, &q4] {
        touch(p);
    }
    let e = env(&d, Some(&from_env));
    assert_eq!(find_model_with(Some(&flag), &e).unwrap(), flag);
    assert_eq!(find_model_with(None, &e).unwrap(), from_env);
    // An empty variable counts as unset.
    let mut e2 = env(&d, None);
    e2.model_env = Some("".into());
    assert_eq!(find_model_with(None, &e2).unwrap(), cwd_model);
    fs::remove_file(&cwd_model).unwrap();
    assert_eq!(find_model_with(None, &env(&d, None)).unwrap(), q4);
}

#[test]
fn data_dir_prefers_default_name_then_variant_order() {
    let d = dirs();
    let e = env(&d, None);
    for v in [Variant::Mtp, Variant::Q4, Variant::Q2, Variant::Q4Imatrix] {
        touch(&d.data.join(v.file_name()));
    }
    // Unfinished downloads are never picked.
    touch(
        &d.data
            .join(format!("{}.part", Variant::Q2Imatrix.file_name())),
    );
    assert_eq!(
        find_model_with(None, &e).unwrap(),
        d.data.join(Variant::Q4Imatrix.file_name())
    );
    touch(&d.data.join(Variant::Q2Imatrix.file_name()));
    assert_eq!(
        find_model_with(None, &e).unwrap(),
        d.data.join(Variant::Q2Imatrix.file_name())
    );
    touch(&d.data.join(DEFAULT_MODEL_FILE));
    assert_eq!(
        find_model_with(None, &e).unwrap(),
        d.data.join(DEFAULT_MODEL_FILE)
    );
    assert_eq!(
        find_variant_in(&d.data, Variant::Mtp),
        Some(d.data.join(Variant::Mtp.file_name()))
    );
}

#[test]
fn mtp_alone_is_not_a_model() {
    let d = dirs();
    touch(&d.data.join(Variant::Mtp.file_name()));
    assert!(find_model_with(None, &env(&d, None)).is_err());
}

#[test]
fn named_file_that_is_missing_does_not_fall_back() {
    let d = dirs();
    touch(&d.cwd.join(DEFAULT_MODEL_FILE));
    let missing = d.other.join("nope.gguf");
    let err = find_model_with(Some(&missing), &env(&d, None)).unwrap_err();
    assert!(err.explicit);
    let msg = err.to_string();
    assert!(
        msg.contains("nope.gguf") && msg.contains("-m") && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(msg.contains("dsv4 download q2-imatrix"), "{msg}");

    let err = find_model_with(None, &env(&d, Some(&missing))).unwrap_err();
    assert!(err.to_string().contains("$DSV4_MODEL"), "{err}");

    // Relative names are taken from the working directory.
    touch(&d.cwd.join("rel.gguf"));
    assert_eq!(
        find_model_with(Some(Path::new("rel.gguf")), &env(&d, None)).unwrap(),
        d.cwd.join("rel.gguf")
    );
}

#[test]
fn nothing_found_lists_every_place_and_the_download_command() {
    let d = dirs();
    // An empty file and a directory named like the model do not count.
    fs::write(d.cwd.join(DEFAULT_MODEL_FILE), b"").unwrap();
    fs::create_dir(d.data.join(DEFAULT_MODEL_FILE)).unwrap();
    let err = find_model_with(None, &env(&d, None)).unwrap_err();
    assert!(!err.explicit);
    // cwd default, data default, then the four main variants.
    assert_eq!(err.tried.len(), 6);
    assert_eq!(err.tried[0].1, d.cwd.join(DEFAULT_MODEL_FILE));
    assert_eq!(err.tried[0].2, "is empty");
    assert_eq!(err.tried[1].2, "is not a regular file");
    let msg = err.to_string();
    assert!(
        msg.contains("dsv4 download q2-imatrix") && msg.contains("dsv4 download q4-imatrix"),
        "{msg}"
    );
    assert!(msg.contains(&d.data.display().to_string()), "{msg}");

    let no_home = SearchEnv {
        model_env: None,
        cwd: d.cwd.clone(),
        data_dir: None,
    };
    let msg = find_model_with(None, &no_home).unwrap_err().to_string();
    assert!(msg.contains("XDG_DATA_HOME"), "{msg}");
}

#[cfg(unix)]
#[test]
fn symlinked_default_is_followed_and_dangling_reported() {
    let d = dirs();
    let target = d.other.join("real.gguf");
    let link = d.cwd.join(DEFAULT_MODEL_FILE);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = find_model_with(None, &env(&d, None)).unwrap_err();
    assert_eq!(err.tried[0].2, "is a dangling symlink");
    touch(&target);
    assert_eq!(find_model_with(None, &env(&d, None)).unwrap(), link);
}

#[test]
fn data_dir_rules() {
    let home = OsStr::new("/home/u");
    assert_eq!(
        data_dir_from(Some(OsStr::new("/xdg")), Some(home)),
        Some(PathBuf::from("/xdg/dsv4"))
    );
    // Relative or empty XDG_DATA_HOME is ignored, per the XDG spec.
    assert_eq!(
        data_dir_from(Some(OsStr::new("rel")), Some(home)),
        Some(PathBuf::from("/home/u/.local/share/dsv4"))
    );
    assert_eq!(
        data_dir_from(Some(OsStr::new("")), Some(home)),
        Some(PathBuf::from("/home/u/.local/share/dsv4"))
    );
    assert_eq!(data_dir_from(None, None), None);
}

#[test]
fn hf_token_sources() {
    let d = dirs();
    assert_eq!(
        hf_token_from(Some(OsStr::new(" hf_env \n")), None, None, None),
        Some("hf_env".into())
    );
    let cache = d.other.join(".cache").join("huggingface");
    fs::create_dir_all(&cache).unwrap();
    fs::write(cache.join("token"), "hf_file\n").unwrap();
    assert_eq!(
        hf_token_from(None, None, None, Some(d.other.as_os_str())),
        Some("hf_file".into())
    );
    // HF_HOME wins over the default cache location.
    let hf_home = d.data.join("hf");
    fs::create_dir_all(&hf_home).unwrap();
    fs::write(hf_home.join("token"), "hf_home_tok").unwrap();
    assert_eq!(
        hf_token_from(
            Some(OsStr::new("")),
            Some(hf_home.as_os_str()),
            None,
            Some(d.other.as_os_str())
        ),
        Some("hf_home_tok".into())
    );
    assert_eq!(
        hf_token_from(None, None, None, Some(d.cwd.as_os_str())),
        None
    );
}
