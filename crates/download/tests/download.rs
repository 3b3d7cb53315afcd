//! End-to-end downloads against a local server (no internet).

mod server;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use dsv4_download::{
    download, remote_info, DownloadError, DownloadOptions, Downloaded, Phase, Progress, Source,
    Variant,
};
use server::{sha256_hex, synth_bytes, Config, RangeMode, Redirect, Server, ShaHeader};

const LEN: usize = 3 * 1024 * 1024 + 12_345;

fn file_name() -> &'static str {
    Variant::Q2Imatrix.file_name()
}

fn source() -> Vec<u8> {
    synth_bytes(LEN, 42)
}

fn opts(base: &str, dir: &Path) -> DownloadOptions {
    let mut o = DownloadOptions::new(dir);
    o.base_url = base.to_string();
    o.connect_timeout = Duration::from_secs(5);
    o.read_timeout = Duration::from_secs(5);
    o.retries = 0;
    o.retry_delay = Duration::from_millis(10);
    o
}

fn serve(config: Config) -> (Server, Vec<u8>) {
    let s = Server::start(config);
    let bytes = source();
    s.add_file(file_name(), bytes.clone());
    (s, bytes)
}

fn run(o: &DownloadOptions) -> Result<Downloaded, DownloadError> {
    download(Variant::Q2Imatrix, o, &mut |_| {})
}

fn part(dir: &Path) -> std::path::PathBuf {
    dir.join(format!("{}.part", file_name()))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Leave a `.part` the way a killed run does: the server cuts the body early.
fn interrupted_part(s: &Server, dir: &Path) -> u64 {
    s.set(|c| c.drop_after = Some((1_000_000, 1)));
    let e = run(&opts(&s.base, dir)).unwrap_err();
    assert!(matches!(e, DownloadError::Interrupted { .. }), "{e:?}");
    let n = fs::metadata(part(dir)).unwrap().len();
    assert!(n > 0 && n < LEN as u64, "part length {n}");
    assert!(!dir.join(file_name()).exists());
    s.clear_log();
    n
}

#[test]
fn full_download_through_cdn_redirect_verifies_and_cleans_up() {
    let cdn = Server::start(Config::default());
    let (origin, bytes) = serve(Config {
        redirect: Redirect::To(cdn.base.clone()),
        ..Config::default()
    });
    cdn.add_file(file_name(), bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&origin.base, dir.path());
    o.progress_interval = Duration::ZERO;
    let mut reports: Vec<Progress> = Vec::new();
    let got = download(Variant::Q2Imatrix, &o, &mut |p| reports.push(p.clone())).unwrap();

    assert_eq!(got.path, dir.path().join(file_name()));
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    assert_eq!(got.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
    assert!(got.verified && !got.already_present);
    assert_eq!((got.bytes, got.resumed_from), (LEN as u64, 0));
    // Only the final file remains: no .part, no sidecar.
    assert_eq!(listing(dir.path()), vec![file_name().to_string()]);

    // The Hub was asked first (HEAD probe, then GET), the bytes came from the CDN.
    let log = origin.log();
    assert_eq!(log[0].method, "HEAD");
    assert!(log.iter().all(|r| r.status == 302));
    let cdn_gets = cdn.gets();
    assert_eq!(cdn_gets.len(), 1);
    assert!(cdn_gets[0]
        .path
        .starts_with(&format!("/cdn/{}", file_name())));
    assert!(cdn_gets[0].range.is_none());
    // The HEAD probe never goes to the CDN (presigned URLs are GET-only there).
    assert!(cdn.log().iter().all(|r| r.method == "GET"));

    // Progress: phases in order, byte counts never go backwards, totals known.
    assert_eq!(reports.first().unwrap().phase, Phase::Connecting);
    let last = reports.last().unwrap();
    assert_eq!(
        (last.phase, last.done, last.total),
        (Phase::Done, LEN as u64, Some(LEN as u64))
    );
    let dl: Vec<_> = reports
        .iter()
        .filter(|p| p.phase == Phase::Downloading)
        .collect();
    assert!(dl.len() > 2, "{} downloading reports", dl.len());
    assert!(dl.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(dl.iter().all(|p| p.total == Some(LEN as u64)));
}

#[test]
fn relative_redirect_and_etag_only_checksum() {
    let (s, bytes) = serve(Config {
        redirect: Redirect::Relative,
        sha: ShaHeader::EtagOnly,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert!(got.verified);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let info = remote_info(
        &Source::Variant(Variant::Q2Imatrix),
        &opts(&s.base, dir.path()),
    )
    .unwrap();
    assert_eq!(info.sha256, Some(sha256_hex(&bytes)));
    assert!(info.probed);
}

#[test]
fn interrupted_download_resumes_from_part() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let have = interrupted_part(&s, dir.path());
    // The .part holds exactly the first bytes of the file.
    assert_eq!(fs::read(part(dir.path())).unwrap(), bytes[..have as usize]);

    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert_eq!(got.resumed_from, have);
    assert!(got.verified);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert_eq!(gets[0].status, 206);
    assert_eq!(listing(dir.path()), vec![file_name().to_string()]);
}

#[test]
fn retries_resume_within_one_call() {
    let (s, bytes) = serve(Config {
        drop_after: Some((700_000, 2)),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    o.retries = 3;
    let got = download(Variant::Q2Imatrix, &o, &mut |_| {}).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 3);
    assert!(gets[0].range.is_none());
    assert_eq!(gets[1].range.as_deref(), Some("bytes=700000-"));
    assert_eq!(gets[2].range.as_deref(), Some("bytes=1400000-"));
}

#[test]
fn failures_in_a_row_are_bounded() {
    // Every GET is cut before its first byte: no progress, so the budget runs out.
    let (s, _) = serve(Config {
        drop_after: Some((0, 100)),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    o.retries = 2;
    let e = download(Variant::Q2Imatrix, &o, &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, DownloadError::Interrupted { done: 0, .. }),
        "{e:?}"
    );
    assert_eq!(s.gets().len(), 3);
    assert!(e.to_string().contains("run the same command again"));
    assert!(
        part(dir.path()).exists(),
        "the .part is kept for the next run"
    );
}

#[test]
fn drops_that_make_progress_do_not_use_up_retries() {
    let (s, bytes) = serve(Config {
        drop_after: Some((500_000, 5)),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    o.retries = 1;
    let got = download(Variant::Q2Imatrix, &o, &mut |_| {}).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 6);
    assert_eq!(gets[5].range.as_deref(), Some("bytes=2500000-"));
}

#[test]
fn server_ignoring_range_restarts_cleanly() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let have = interrupted_part(&s, dir.path());
    s.set(|c| c.range = RangeMode::Ignore);
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert_eq!(got.resumed_from, 0);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(
        gets[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert_eq!(gets[0].status, 200);
}

#[test]
fn wrong_partial_piece_restarts_without_range() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    interrupted_part(&s, dir.path());
    s.set(|c| c.range = RangeMode::WrongStart);
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 2);
    assert!(gets[0].range.is_some() && gets[1].range.is_none());
}

#[test]
fn checksum_mismatch_keeps_bytes_aside_and_leaves_no_final_file() {
    let wrong = sha256_hex(b"something else");
    let (s, bytes) = serve(Config {
        sha: ShaHeader::Value(wrong.clone()),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let e = run(&opts(&s.base, dir.path())).unwrap_err();
    let DownloadError::ChecksumMismatch {
        expected,
        actual,
        kept,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(expected, &wrong);
    assert_eq!(actual, &sha256_hex(&bytes));
    assert_eq!(fs::read(kept).unwrap(), bytes);
    assert!(e.to_string().contains(&wrong) && e.to_string().contains(&kept.display().to_string()));
    assert!(!dir.path().join(file_name()).exists());
    assert!(!part(dir.path()).exists());

    // Once the server is right, the next run starts clean and succeeds.
    s.set(|c| c.sha = ShaHeader::Linked);
    s.clear_log();
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert_eq!(got.resumed_from, 0);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
}

#[test]
fn corrupt_part_prefix_is_caught_by_the_final_checksum() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    // A .part with no sidecar (as curl leaves it) whose bytes are wrong.
    let mut junk = bytes[..800_000].to_vec();
    junk[1234] ^= 0xff;
    fs::write(part(dir.path()), &junk).unwrap();
    let e = run(&opts(&s.base, dir.path())).unwrap_err();
    assert!(matches!(e, DownloadError::ChecksumMismatch { .. }), "{e:?}");
    assert_eq!(s.gets()[0].range.as_deref(), Some("bytes=800000-"));
    assert!(!dir.path().join(file_name()).exists());
}

#[test]
fn part_from_another_version_of_the_file_is_discarded() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    fs::write(part(dir.path()), vec![7u8; 500_000]).unwrap();
    fs::write(
        dir.path().join(format!("{}.part.meta", file_name())),
        format!("sha256 {}\nsize {LEN}\n", "d".repeat(64)),
    )
    .unwrap();
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert_eq!(got.resumed_from, 0);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    assert!(s.gets()[0].range.is_none());
}

#[test]
fn complete_part_is_finished_without_a_body() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    fs::write(part(dir.path()), &bytes).unwrap();
    let got = run(&opts(&s.base, dir.path())).unwrap();
    assert!(got.verified);
    assert_eq!(got.resumed_from, LEN as u64);
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    let gets = s.gets();
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].status, 416);
}

#[test]
fn pinned_checksum_conflicting_with_server_fails_before_transfer() {
    let (s, _) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    let pin = sha256_hex(b"a different file");
    o.expected_sha256 = Some(pin.clone());
    let e = run(&o).unwrap_err();
    assert!(
        matches!(&e, DownloadError::ChecksumConflict { pinned, .. } if *pinned == pin),
        "{e:?}"
    );
    assert!(s.gets().is_empty());
    assert!(!dir.path().join(file_name()).exists());
}

#[test]
fn checksum_sources_without_server_header() {
    let (s, bytes) = serve(Config {
        sha: ShaHeader::None,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    // Nothing announced, nothing pinned: refused, nothing fetched.
    let e = run(&opts(&s.base, dir.path())).unwrap_err();
    assert!(matches!(e, DownloadError::NoChecksum { .. }), "{e:?}");
    assert!(s.gets().is_empty());

    // A pinned value is enough.
    let mut o = opts(&s.base, dir.path());
    o.expected_sha256 = Some(sha256_hex(&bytes).to_uppercase());
    let got = run(&o).unwrap();
    assert!(got.verified);
    fs::remove_file(&got.path).unwrap();

    // A wrong pin is caught at the end.
    o.expected_sha256 = Some(sha256_hex(b"nope"));
    assert!(matches!(
        run(&o).unwrap_err(),
        DownloadError::ChecksumMismatch { .. }
    ));

    // Verification off: downloads, reports the hash, says it is unverified.
    let mut o = opts(&s.base, dir.path());
    o.require_checksum = false;
    let got = run(&o).unwrap();
    assert!(!got.verified);
    assert_eq!(got.sha256, Some(sha256_hex(&bytes)));
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
}

#[test]
fn head_refused_with_pinned_checksum_still_works() {
    let (s, bytes) = serve(Config {
        no_head: true,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    o.expected_sha256 = Some(sha256_hex(&bytes));
    let got = run(&o).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
}

#[test]
fn not_found_names_file_and_url() {
    let (s, _) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let src = Source::parse("Missing-File.gguf").unwrap();
    let e = download(src, &opts(&s.base, dir.path()), &mut |_| {}).unwrap_err();
    let DownloadError::NotFound { file, url } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(file, "Missing-File.gguf");
    assert_eq!(
        url,
        &format!("{}/{}/resolve/main/Missing-File.gguf", s.base, server::REPO)
    );
    let msg = e.to_string();
    assert!(
        msg.contains("Missing-File.gguf") && msg.contains(url) && msg.contains("404"),
        "{msg}"
    );
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn token_is_required_sent_to_the_hub_and_withheld_from_the_cdn() {
    let cdn = Server::start(Config::default());
    let (origin, bytes) = serve(Config {
        token: Some("hf_secret".into()),
        redirect: Redirect::To(cdn.base.clone()),
        ..Config::default()
    });
    cdn.add_file(file_name(), bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let e = run(&opts(&origin.base, dir.path())).unwrap_err();
    assert!(
        matches!(e, DownloadError::Unauthorized { status: 401, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("HF_TOKEN"));

    let mut o = opts(&origin.base, dir.path());
    o.token = Some("hf_secret".into());
    let got = run(&o).unwrap();
    assert_eq!(fs::read(&got.path).unwrap(), bytes);
    assert!(origin
        .log()
        .iter()
        .filter(|r| r.status == 302)
        .all(|r| r.auth.as_deref() == Some("Bearer hf_secret")));
    assert!(cdn.log().iter().all(|r| r.auth.is_none()));
}

#[test]
fn stalled_server_times_out_instead_of_hanging() {
    let (s, _) = serve(Config {
        stall: true,
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&s.base, dir.path());
    o.read_timeout = Duration::from_millis(300);
    let t = Instant::now();
    let e = run(&o).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(matches!(e, DownloadError::Network { .. }), "{e:?}");
    assert!(e.is_retryable());
}

#[test]
fn refused_connection_is_a_network_error() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let e = run(&opts(&format!("http://127.0.0.1:{port}"), dir.path())).unwrap_err();
    assert!(matches!(e, DownloadError::Network { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn not_enough_space_is_reported_before_transfer() {
    let (s, _) = serve(Config {
        fake_size: Some(1 << 60),
        ..Config::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let e = run(&opts(&s.base, dir.path())).unwrap_err();
    assert!(
        matches!(e, DownloadError::DiskFull { needed: Some(n), available: Some(_), .. } if n == 1 << 60),
        "{e:?}"
    );
    assert!(s.gets().is_empty());
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn existing_file_is_reused_or_verified() {
    let (s, bytes) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let final_path = dir.path().join(file_name());
    fs::write(&final_path, b"not the model").unwrap();
    let mut seen = Vec::new();
    let got = download(Variant::Q2Imatrix, &opts(&s.base, dir.path()), &mut |p| {
        seen.push(p.phase)
    })
    .unwrap();
    assert!(got.already_present && !got.verified);
    assert_eq!(seen, vec![Phase::Done]);
    assert!(s.log().is_empty(), "no network access for a present file");

    let mut o = opts(&s.base, dir.path());
    o.verify_existing = true;
    let e = run(&o).unwrap_err();
    assert!(
        matches!(&e, DownloadError::ChecksumMismatch { kept, .. } if *kept == final_path),
        "{e:?}"
    );
    assert_eq!(
        fs::read(&final_path).unwrap(),
        b"not the model",
        "the user's file is left alone"
    );

    fs::write(&final_path, &bytes).unwrap();
    let got = run(&o).unwrap();
    assert!(got.already_present && got.verified);
    assert_eq!(got.sha256, Some(sha256_hex(&bytes)));
}

#[test]
fn second_concurrent_download_is_refused() {
    let (s, _) = serve(Config::default());
    let dir = tempfile::tempdir().unwrap();
    let held = fs::File::create(part(dir.path())).unwrap();
    held.try_lock().unwrap();
    let e = run(&opts(&s.base, dir.path())).unwrap_err();
    assert!(matches!(e, DownloadError::Busy { .. }), "{e:?}");
    assert!(s.gets().is_empty());
}

#[test]
fn url_source_downloads_to_its_last_segment() {
    let (s, bytes) = serve(Config::default());
    s.add_file("other.gguf", bytes[..100_000].to_vec());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/{}/resolve/main/other.gguf", s.base, server::REPO);
    let got = download(
        Source::parse(&url).unwrap(),
        &opts(&s.base, dir.path()),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(got.path, dir.path().join("other.gguf"));
    assert_eq!(fs::read(&got.path).unwrap(), bytes[..100_000]);
}
