use anyhow::Context;
use dsv4_download as dl;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// q2-imatrix, q4-imatrix, q2, q4, mtp, a file name from antirez's repository, or a URL.
    what: String,
    /// Where to save it (default: the per-user data dir, where model discovery looks).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Expected SHA-256 (otherwise the one Hugging Face announces is checked).
    #[arg(long)]
    sha256: Option<String>,
    /// Skip checksum verification (not recommended).
    #[arg(long)]
    no_verify: bool,
    /// Hugging Face token (default: $HF_TOKEN, then the `hf` tool's token file).
    #[arg(long)]
    token: Option<String>,
    /// Base URL of the hub (for mirrors and tests).
    #[arg(long, default_value = "https://huggingface.co")]
    base_url: String,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let source = dl::Source::parse(&a.what)?;
    let dir = a.dir.or_else(dl::default_data_dir).context("no data dir: set HOME or pass --dir")?;
    let mut opts = dl::DownloadOptions::new(dir);
    opts.base_url = a.base_url;
    opts.token = a.token.or_else(dl::hf_token_from_env);
    opts.expected_sha256 = a.sha256;
    opts.require_checksum = !a.no_verify;
    opts.proxy = std::env::var("HTTPS_PROXY").ok();
    let mut bar = dl::TerminalProgress::stderr();
    let got = dl::download(source, &opts, &mut |p| bar.update(p));
    bar.finish();
    let got = got?;
    let how = if got.already_present { "already present" } else { "downloaded" };
    let check = match (got.verified, &got.sha256) {
        (true, Some(h)) => format!("sha256 {h} verified"),
        _ => "checksum not verified".into(),
    };
    eprintln!("{how}: {} ({} bytes, {check})", got.path.display(), got.bytes);
    Ok(ExitCode::SUCCESS)
}
