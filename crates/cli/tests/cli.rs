//! The `dsv4` binary as users and outside checks drive it: synth, inspect, tokenize, logits,
//! bench-batch.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn dsv4(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsv4")).args(args).output().unwrap()
}

fn dsv4_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dsv4"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch() -> &'static Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

fn tiny() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = scratch().join("tiny.gguf");
        let o = dsv4(&["synth", "--preset", "tiny", "--seed", "3", "--out", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        p
    })
}

#[test]
fn synth_is_deterministic_in_the_seed() {
    let a = tiny();
    let b = scratch().join("tiny-again.gguf");
    let c = scratch().join("tiny-other.gguf");
    assert!(dsv4(&["synth", "--preset", "tiny", "--seed", "3", "--out", b.to_str().unwrap()]).status.success());
    assert!(dsv4(&["synth", "--preset", "tiny", "--seed", "4", "--out", c.to_str().unwrap()]).status.success());
    let (a, b, c) = (std::fs::read(a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert!(a == b, "same seed, same bytes");
    assert_eq!(a.len(), c.len());
    assert!(a != c, "another seed changes the weights");
}

#[test]
fn inspect_accepts_both_tiny_mixes_and_the_mtp_file() {
    let o = dsv4(&["inspect", tiny().to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(out.contains("layout: OK, model file"), "{out}");
    assert!(out.contains("blk.2.indexer_compressor_ape.weight"));
    assert!(out.contains("deepseek4.attention.compress_ratios = U32([0, 0, 4, 128, 4, 16])"));

    let q4 = scratch().join("tiny-q4.gguf");
    let mtp = scratch().join("tiny-q4-mtp.gguf");
    let o = dsv4(&[
        "synth", "--preset", "tiny", "--quant", "q4", "--out", q4.to_str().unwrap(), "--mtp-out", mtp.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = dsv4(&["inspect", "--brief", q4.to_str().unwrap()]);
    assert!(text(&o.stdout).contains("layout: OK, model file") && text(&o.stdout).contains("q4 expert mix"));
    let o = dsv4(&["inspect", "--brief", mtp.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("layout: OK, MTP file"), "{}", text(&o.stdout));
}

/// Free bytes in the filesystem holding `dir`, as `df` reports them.
fn free_bytes(dir: &Path) -> Option<u64> {
    let o = Command::new("df").args(["-Pk"]).arg(dir).output().ok()?;
    let kib: u64 = text(&o.stdout).lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// A real-geometry file: one Flash layer in the q2 mix is 3.3 GiB, written and checked here.
/// CI machines share their disk; where it could not hold the file with room to spare for the
/// rest of the suite (which runs beside this test), it skips, saying so, rather than filling
/// the disk under every other test.
#[test]
fn flash_preset_has_the_published_layout() {
    const NEEDED: u64 = 3_600_000_000 + (4 << 30);
    let free = free_bytes(scratch()).expect("df reports the scratch filesystem");
    if free < NEEDED {
        eprintln!("skipped: the 3.3 GiB Flash layer needs {NEEDED} bytes free, the scratch disk has {free}");
        return;
    }
    let p = scratch().join("flash1.gguf");
    let o = dsv4(&["synth", "--preset", "flash", "--layers", "1", "--quant", "q2", "--out", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = dsv4(&["inspect", "--brief", p.to_str().unwrap()]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("layout: OK, model file, DeepSeek V4 Flash geometry, 1 of 43 layers, q2 expert mix"), "{out}");
    std::fs::remove_file(&p).unwrap();
}

#[test]
fn inspect_lists_layout_mismatches_and_rejects_garbage() {
    // Drop one tensor and change another's dims: the inspector must name both.
    let f = dsv4_gguf::GgufFile::open(tiny()).unwrap();
    let mut w = dsv4_gguf::GgufWriter::new();
    for (k, v) in f.metadata() {
        w.add_kv(k.clone(), v.clone()).unwrap();
    }
    let mut data = Vec::new();
    for t in f.tensors() {
        if t.name() == "blk.1.attn_sinks.weight" {
            continue;
        }
        let mut dims = t.dims().to_vec();
        if t.name() == "output_norm.weight" {
            dims = vec![dims[0] / 2, 2];
        }
        w.add_tensor(t.name(), &dims, t.ty()).unwrap();
        data.push(f.tensor_data(t));
    }
    let bad = scratch().join("bad-layout.gguf");
    w.write_to_path(&bad, &data).unwrap();
    let o = dsv4(&["inspect", "--brief", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o.stdout);
    assert!(out.contains("missing tensor blk.1.attn_sinks.weight"), "{out}");
    assert!(out.contains("output_norm.weight: dims [128, 2], expected [256]"), "{out}");

    let junk = scratch().join("junk.gguf");
    std::fs::write(&junk, b"this is not a gguf file at all").unwrap();
    let o = dsv4(&["inspect", junk.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).to_lowercase().contains("magic"), "{}", text(&o.stderr));
}

#[test]
fn tokenize_prints_one_json_array_and_specials_only_on_request() {
    let tok = dsv4_tokenizer::Tokenizer::bundled().unwrap();
    let input = "fn main() { println!(\"héllo 世界\"); } <｜User｜>";
    let o = dsv4_stdin(&["tokenize", "--model", tiny().to_str().unwrap()], input);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1);
    let ids: Vec<u32> = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ids, tok.encode(input));
    assert!(!ids.contains(&tok.specials().user), "user text must not forge a control token");

    let o = dsv4_stdin(&["tokenize", "--special", "--model", tiny().to_str().unwrap()], input);
    let ids: Vec<u32> = serde_json::from_str(text(&o.stdout).trim()).unwrap();
    assert_eq!(ids, tok.encode_with_special(input));
    assert_eq!(*ids.last().unwrap(), tok.specials().user);
}

#[test]
fn logits_writes_every_position_and_prints_top5() {
    let out = scratch().join("logits.f32");
    let o = dsv4(&["logits", "--model", tiny().to_str().unwrap(), "--tokens", "0,17,42", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let raw = std::fs::read(&out).unwrap();
    let vocab = 129280;
    assert_eq!(raw.len(), 3 * vocab * 4);
    let vals: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();

    // The same numbers as the library computes.
    let model = dsv4_model::Model::load(tiny()).unwrap();
    let mut st = model.new_state();
    let want = model.forward(&mut st, &[0, 17, 42], true, dsv4_model::Numerics::Official).unwrap();
    assert!(vals.iter().zip(want.iter().flatten()).all(|(a, b)| a.to_bits() == b.to_bits()));

    let lines: Vec<serde_json::Value> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        let row = &vals[i * vocab..(i + 1) * vocab];
        let top = l["top5"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let best = (0..vocab).fold(0, |b, t| if row[t] > row[b] { t } else { b });
        assert_eq!(top[0]["id"].as_u64().unwrap() as usize, best);
    }

    let plain = scratch().join("logits-plain.f32");
    let o = dsv4(&["logits", "--model", tiny().to_str().unwrap(), "--tokens", "0,17,42", "--plain-numerics", "--out", plain.to_str().unwrap()]);
    assert!(o.status.success());
    assert_ne!(std::fs::read(&plain).unwrap(), raw, "--plain-numerics changes the arithmetic");
}

#[test]
fn logits_rejects_bad_token_lists() {
    let out = scratch().join("never.f32");
    for bad in ["1,x,3", "", "5,999999"] {
        let o = dsv4(&["logits", "--model", tiny().to_str().unwrap(), "--tokens", bad, "--out", out.to_str().unwrap()]);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(text(&o.stderr).starts_with("dsv4: "), "{}", text(&o.stderr));
    }
}

/// Serves `body` at `/antirez/deepseek-v4-gguf/resolve/main/<name>` (with the checksum header
/// Hugging Face sends) and 404 elsewhere, for `requests` connections.
fn serve_one(name: &'static str, body: Vec<u8>, requests: usize) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&body))
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut s = stream.unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let head = line.starts_with("HEAD");
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let want = format!("/antirez/deepseek-v4-gguf/resolve/main/{name}");
            let path = line.split_whitespace().nth(1).unwrap_or("");
            if path == want {
                let hdr = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Linked-Etag: \"{sha}\"\r\nX-Linked-Size: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    body.len()
                );
                s.write_all(hdr.as_bytes()).unwrap();
                if !head {
                    s.write_all(&body).unwrap();
                }
            } else {
                s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn download_fetches_and_verifies_from_a_local_hub() {
    let body: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let name = "DeepSeek-V4-Flash-MTP-Q4K-Q8_0-F32.gguf";
    let base = serve_one(name, body.clone(), 8);
    let dir = scratch().join("downloads");
    let o = dsv4(&["download", "mtp", "--dir", dir.to_str().unwrap(), "--base-url", &base]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("verified"), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(dir.join(name)).unwrap(), body);

    let o = dsv4(&["download", "q4", "--dir", dir.to_str().unwrap(), "--base-url", &base]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("404") || text(&o.stderr).to_lowercase().contains("not found"), "{}", text(&o.stderr));
    let o = dsv4(&["download", "q3", "--dir", dir.to_str().unwrap(), "--base-url", &base]);
    assert!(!o.status.success());
}

#[test]
fn kv_lists_removes_and_counts_checkpoints() {
    let dir = scratch().join("kvcache");
    {
        let store = dsv4_kvstore::KvStore::open(&dir, 1 << 30).unwrap();
        let fp = [7u8; 32];
        let ext = dsv4_kvstore::Extensions::new();
        store.save(&fp, &[1, 2, 3], &[0u8; 1000], &ext).unwrap();
        store.save(&fp, &[1, 2, 3, 4, 5], &[1u8; 2000], &ext).unwrap();
    }
    let d = dir.to_str().unwrap();
    let o = dsv4(&["kv", "stats", "--dir", d]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("2 checkpoints"), "{}", text(&o.stdout));
    let o = dsv4(&["kv", "ls", "--dir", d]);
    let lines: Vec<String> = text(&o.stdout).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{}", text(&o.stdout));
    let short = lines.iter().find(|l| l.split_whitespace().next() == Some("3")).unwrap();
    let id = short.split_whitespace().last().unwrap();
    let id = &id[id.len() - 16..];
    let o = dsv4(&["kv", "rm", "--dir", d, id]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = dsv4(&["kv", "ls", "--dir", d]);
    assert_eq!(text(&o.stdout).lines().count(), 2);
    let o = dsv4(&["kv", "rm", "--dir", d, "zzzz"]);
    assert!(!o.status.success());
    let o = dsv4(&["kv", "ls", "--dir", "/nonexistent/kv"]);
    assert!(!o.status.success());
}

#[test]
fn bench_batch_reports_every_stream_count() {
    let txt = scratch().join("bench.txt");
    std::fs::write(&txt, "The quick brown fox jumps over the lazy dog, and the dog sleeps on. ".repeat(40)).unwrap();
    let args = ["bench-batch", "-m", tiny().to_str().unwrap(), "--backend", "cpu", "--text", txt.to_str().unwrap()];
    let o = dsv4(&[&args[..], &["--streams", "1,3", "--context", "16", "--decode", "4"]].concat());
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let head = &rows[0];
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name} in {out}"));
    for (row, streams) in rows[1..].iter().zip([1usize, 3]) {
        assert_eq!(row.len(), head.len(), "{out}");
        assert_eq!(row[col("streams")], streams.to_string());
        // Each stream's first token comes with the untimed step; the other three are timed.
        assert_eq!(row[col("decode_tokens")], (3 * streams).to_string());
        let num = |name: &str| row[col(name)].parse::<f64>().unwrap_or_else(|e| panic!("{name}: {e} in {out}"));
        let (median, end) = (num("median_step_ms"), num("end_step_ms"));
        assert!(median > 0.0 && end > 0.0, "{out}");
        let steady = num("steady_tps");
        assert!((steady - streams as f64 * 1e3 / median).abs() <= 0.01 * steady, "{out}");
        assert_eq!(row[col("vs_one_stream")].is_empty(), streams == 1, "{out}");
        assert_eq!(row[col("steady_vs_one_stream")].is_empty(), streams == 1, "{out}");
    }
    let o = dsv4(&[&args[..], &["--streams", "0"]].concat());
    assert!(!o.status.success() && text(&o.stderr).contains("must be positive"), "{}", text(&o.stderr));
}
