//! Behaviour of the checkpoint store on a real directory.

use dsv4_kvstore::{Extensions, Fingerprint, KvError, KvStore, Options, SaveStatus};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const FP: Fingerprint = [0xA1; 32];
const OTHER: Fingerprint = [0xB2; 32];
const BIG: u64 = 1 << 30;

/// A payload that is a deterministic function of the tokens, so any mix-up of files or
/// bytes shows up as a mismatch.
fn payload_for(tokens: &[u32], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block: [u8; 32] = Sha256::digest(tokens.iter().flat_map(|t| t.to_le_bytes()).collect::<Vec<_>>()).into();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

fn seq(start: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| start.wrapping_mul(7919).wrapping_add(i * 31 + 1)).collect()
}

fn no_ext() -> Extensions {
    Extensions::new()
}

fn kv_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dsv4kv"))
        .collect();
    v.sort();
    v
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().ends_with(".part"))
        .collect()
}

#[test]
fn round_trip_with_extensions() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    let toks = seq(1, 300);
    let payload = payload_for(&toks, 10_000);
    let mut ext = Extensions::new();
    ext.insert("call_abc".into(), b"<\xef\xbd\x9cDSML\xef\xbd\x9ctool_calls>...".to_vec());
    ext.insert("call_empty".into(), Vec::new());
    let info = s.save(&FP, &toks, &payload, &ext).unwrap();
    assert_eq!(info.status, SaveStatus::Written);
    assert_eq!(info.bytes, 80 + 4 * 300 + (12 + 8 + 25) + (12 + 10) + 10_000 + 32);
    assert_eq!(fs::metadata(d.path().join(format!("{}.dsv4kv", info.id))).unwrap().len(), info.bytes);

    let mut prompt = toks.clone();
    prompt.extend([5, 6, 7]);
    let hit = s.lookup(&FP, &prompt).unwrap();
    assert_eq!(hit.tokens, 300);
    assert_eq!(hit.id, info.id);
    let l = s.load(&hit).unwrap();
    assert_eq!(l.tokens, toks);
    assert_eq!(l.payload, payload);
    assert_eq!(l.extensions, ext);
    assert!(s.take_warnings().is_empty());

    // The hit is counted, and survives a reopen (usage index).
    let e = &s.list().unwrap()[0];
    assert_eq!((e.hits, e.tokens, e.bytes), (1, 300, info.bytes));
    let s2 = KvStore::open(d.path(), BIG).unwrap();
    assert_eq!(s2.list().unwrap()[0].hits, 1);
    let st = s2.stats().unwrap();
    assert_eq!((st.files, st.bytes, st.temp_files), (1, info.bytes, 0));
    assert_eq!(st.by_fingerprint.get(&FP), Some(&(1, info.bytes)));
}

#[test]
fn longest_prefix_lookup() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    let base = seq(9, 20);
    for n in [3usize, 5, 8, 20] {
        s.save(&FP, &base[..n], &payload_for(&base[..n], 100), &no_ext()).unwrap();
    }
    // Same length as a real prefix, diverging content.
    let mut div = base[..6].to_vec();
    div[4] ^= 1;
    s.save(&FP, &div, &payload_for(&div, 100), &no_ext()).unwrap();

    let hit = |p: &[u32]| s.lookup(&FP, p).map(|h| h.tokens);
    assert_eq!(hit(&base[..10]), Some(8), "the 20-token file is longer than the prompt");
    assert_eq!(hit(&base[..8]), Some(8), "an exact-length prefix matches");
    assert_eq!(hit(&base[..7]), Some(5));
    assert_eq!(hit(&base[..4]), Some(3));
    assert_eq!(hit(&base[..2]), None);
    assert_eq!(hit(&base), Some(20));
    assert_eq!(hit(&div), Some(6));
    let mut p = base.clone();
    p[3] ^= 1; // diverges inside every prefix longer than 3
    assert_eq!(hit(&p), Some(3));
    assert_eq!(hit(&[]), None);
    let l = s.lookup_load(&FP, &base[..12]).unwrap();
    assert_eq!(l.tokens, &base[..8]);
    assert_eq!(l.payload, payload_for(&base[..8], 100));
}

#[test]
fn foreign_fingerprint_ignored_and_mislabelled_file_removed() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    let toks = seq(2, 50);
    let other = s.save(&OTHER, &toks, b"other model", &no_ext()).unwrap();
    assert!(s.lookup(&FP, &toks).is_none());
    assert!(s.lookup_load(&FP, &toks).is_none());
    // Another model's checkpoint is valid for that model: kept, and served to it.
    assert!(d.path().join(format!("{}.dsv4kv", other.id)).exists());
    assert_eq!(s.lookup_load(&OTHER, &toks).unwrap().payload, b"other model");

    // A file named for FP whose contents belong to OTHER: skipped with a warning and removed.
    let mine = s.save(&FP, &toks, b"mine", &no_ext()).unwrap();
    let mine_path = d.path().join(format!("{}.dsv4kv", mine.id));
    fs::copy(d.path().join(format!("{}.dsv4kv", other.id)), &mine_path).unwrap();
    s.take_warnings();
    assert!(s.lookup_load(&FP, &toks).is_none());
    let w = s.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].message.contains("fingerprint"), "{w:?}");
    assert!(!mine_path.exists());
}

/// The two-file fixture of the corruption tests: a short anchor that must keep serving,
/// and a longer victim that gets damaged.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    prompt: Vec<u32>,
    victim: PathBuf,
    good: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let s = KvStore::open(dir.path(), BIG).unwrap();
    let prompt = seq(3, 40);
    s.save(&FP, &prompt[..10], &payload_for(&prompt[..10], 500), &no_ext()).unwrap();
    let mut ext = Extensions::new();
    ext.insert("k".into(), b"value".to_vec());
    let v = s.save(&FP, &prompt[..30], &payload_for(&prompt[..30], 700), &ext).unwrap();
    let victim = dir.path().join(format!("{}.dsv4kv", v.id));
    let good = fs::read(&victim).unwrap();
    Fixture { dir: dir.path().to_path_buf(), _dir: dir, prompt, victim, good }
}

/// Damaged victim: the load path warns, removes it and falls back to the anchor.
fn assert_skipped_on_load(f: &Fixture, what: &str) {
    let s = KvStore::open_with(&f.dir, Options { budget_bytes: BIG, min_extension_tokens: 0 }, None).unwrap();
    // Open itself may already have caught it (header damage); either way the outcome is
    // the same: never the victim's data, the anchor still served, a warning, file gone.
    let l = s.lookup_load(&FP, &f.prompt).unwrap_or_else(|| panic!("{what}: anchor not served"));
    assert_eq!(l.tokens, &f.prompt[..10], "{what}");
    assert_eq!(l.payload, payload_for(&f.prompt[..10], 500), "{what}");
    let w = s.take_warnings();
    assert!(w.iter().any(|w| w.path == f.victim), "{what}: no warning for the victim: {w:?}");
    assert!(!f.victim.exists(), "{what}: damaged file not removed");
    assert_eq!(kv_files(&f.dir).len(), 1, "{what}");
}

/// Same, but through a store that was already open when the damage happened (so only the
/// full load check stands between the damage and the caller).
fn assert_skipped_by_open_store(f: &Fixture, s: &KvStore, what: &str) {
    let hit = s.lookup(&FP, &f.prompt).unwrap();
    assert_eq!(hit.tokens, 30, "{what}");
    assert!(matches!(s.load(&hit), Err(KvError::Invalid { .. })), "{what}: damaged file loaded");
    assert!(!f.victim.exists(), "{what}");
    let l = s.lookup_load(&FP, &f.prompt).unwrap();
    assert_eq!(l.tokens, &f.prompt[..10], "{what}");
    assert!(!s.take_warnings().is_empty(), "{what}");
}

#[test]
fn truncation_at_every_offset_is_skipped() {
    let f = fixture();
    let len = f.good.len();
    let s = KvStore::open(&f.dir, BIG).unwrap();
    for cut in (0..len).step_by(7).chain([len - 1, len - 32, 80, 79, 1]) {
        fs::write(&f.victim, &f.good[..cut]).unwrap();
        assert_skipped_by_open_store(&f, &s, &format!("truncated to {cut}"));
    }
    for cut in [0, 40, 100, len - 1] {
        fs::write(&f.victim, &f.good[..cut]).unwrap();
        assert_skipped_on_load(&f, &format!("truncated to {cut} (reopen)"));
    }
    // Trailing garbage is corruption as well.
    let mut longer = f.good.clone();
    longer.push(0);
    fs::write(&f.victim, &longer).unwrap();
    assert_skipped_on_load(&f, "one trailing byte");
}

#[test]
fn flipped_bytes_anywhere_are_skipped() {
    let f = fixture();
    let len = f.good.len();
    let s = KvStore::open(&f.dir, BIG).unwrap();
    // Header fields, tokens, extension entry, payload, checksum.
    let offsets = [0, 7, 8, 13, 16, 47, 48, 56, 60, 64, 72, 79, 80, 150, 199, 200, 212, 217, 500, len - 33, len - 32, len - 1];
    for &o in &offsets {
        let mut b = f.good.clone();
        b[o] ^= 0x01;
        fs::write(&f.victim, &b).unwrap();
        assert_skipped_by_open_store(&f, &s, &format!("flip at {o}"));
    }
    for &o in &[8, 57, 300, len - 1] {
        let mut b = f.good.clone();
        b[o] ^= 0x80;
        fs::write(&f.victim, &b).unwrap();
        assert_skipped_on_load(&f, &format!("flip at {o} (reopen)"));
    }
}

#[test]
fn other_version_with_valid_checksum_is_skipped() {
    let f = fixture();
    let mut b = f.good.clone();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    let n = b.len() - 32;
    let d: [u8; 32] = Sha256::digest(&b[..n]).into();
    b[n..].copy_from_slice(&d);
    fs::write(&f.victim, &b).unwrap();
    let s = KvStore::open(&f.dir, BIG).unwrap();
    let w = s.take_warnings();
    assert!(w.iter().any(|w| w.message.contains("version 2")), "{w:?}");
    assert!(!f.victim.exists());
    assert_eq!(s.lookup_load(&FP, &f.prompt).unwrap().tokens, &f.prompt[..10]);
}

#[test]
fn zero_length_and_garbage_files() {
    let f = fixture();
    fs::write(&f.victim, b"").unwrap();
    assert_skipped_on_load(&f, "zero-length");

    let f = fixture();
    fs::write(&f.victim, vec![0x5a; 4096]).unwrap();
    assert_skipped_on_load(&f, "garbage under a valid name");

    // A *.dsv4kv file whose name is not a checkpoint name, and files we do not own.
    let f = fixture();
    let junk = f.dir.join("notes.dsv4kv");
    fs::write(&junk, b"hello").unwrap();
    let readme = f.dir.join("README");
    fs::write(&readme, b"mine").unwrap();
    let s = KvStore::open(&f.dir, BIG).unwrap();
    assert!(s.take_warnings().iter().any(|w| w.path == junk));
    assert!(!junk.exists());
    assert_eq!(fs::read(&readme).unwrap(), b"mine", "foreign files are left alone");
    assert_eq!(s.lookup_load(&FP, &f.prompt).unwrap().tokens, &f.prompt[..30]);

    // A corrupt usage index is rebuilt, not fatal.
    fs::write(f.dir.join("usage.idx"), b"\xff\xfe nonsense").unwrap();
    let s = KvStore::open(&f.dir, BIG).unwrap();
    assert!(s.take_warnings().iter().any(|w| w.message.contains("usage index")));
    assert_eq!(s.list().unwrap().len(), 2);
    assert_eq!(fs::read_to_string(f.dir.join("usage.idx")).unwrap().lines().next(), Some("dsv4-kvstore usage v1"));
}

#[test]
fn eviction_keeps_a_hit_anchor_over_one_offs() {
    let d = tempfile::tempdir().unwrap();
    // Anchor: 200 tokens in 8 KB (poorer tokens/byte than the one-offs, as a small
    // checkpoint is under a fixed per-file overhead). One-offs: 2000 tokens in ~28 KB.
    let anchor = seq(100, 200);
    let one_off = |i: u32| {
        let mut t = anchor.clone();
        t.extend(seq(1000 + i, 1800));
        t
    };
    let anchor_len = 80 + 800 + 8000 + 32;
    let one_off_len = 80 + 8000 + 20_000 + 32;
    let budget = (anchor_len + 2 * one_off_len + 100) as u64;
    let s = KvStore::open(d.path(), budget).unwrap();
    let a = s.save(&FP, &anchor, &payload_for(&anchor, 8000), &no_ext()).unwrap();
    assert_eq!(a.bytes, anchor_len as u64);
    // Shared by three conversations so far.
    for _ in 0..3 {
        assert_eq!(s.lookup_load(&FP, &[anchor.clone(), vec![9, 9]].concat()).unwrap().tokens, anchor);
    }
    let mut ids: Vec<String> = Vec::new();
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(5));
        let t = one_off(i);
        let info = s.save(&FP, &t, &payload_for(&t, 20_000), &no_ext()).unwrap();
        assert_eq!(info.status, SaveStatus::Written);
        assert_eq!(info.bytes, one_off_len as u64);
        if i >= 2 {
            // Exactly the oldest one-off goes each time.
            assert_eq!(info.evicted, vec![ids[i as usize - 2].clone()], "save {i}");
        } else {
            assert!(info.evicted.is_empty());
        }
        ids.push(info.id);
        let names: Vec<String> = s.list().unwrap().into_iter().map(|e| e.id).collect();
        assert!(names.contains(&a.id), "anchor evicted at save {i}");
    }
    let left: Vec<String> = s.list().unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left.len(), 3);
    assert!(left.contains(&ids[4]) && left.contains(&ids[5]) && left.contains(&a.id));
    assert!(s.stats().unwrap().bytes <= budget);

    // Without its hits, the same anchor is the first to go (it has the worst tokens/byte):
    // the hits are what saved it above.
    let d2 = tempfile::tempdir().unwrap();
    let s2 = KvStore::open(d2.path(), budget).unwrap();
    let a2 = s2.save(&FP, &anchor, &payload_for(&anchor, 8000), &no_ext()).unwrap();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(5));
        let t = one_off(i);
        s2.save(&FP, &t, &payload_for(&t, 20_000), &no_ext()).unwrap();
    }
    assert!(!s2.list().unwrap().iter().any(|e| e.id == a2.id));
}

#[test]
fn eviction_order_by_score() {
    use dsv4_kvstore::score;
    // Same size and tokens: older goes first; a hit outweighs a few hours of age.
    assert!(score(1000, 1 << 20, 0, 3600) < score(1000, 1 << 20, 0, 60));
    assert!(score(1000, 1 << 20, 3, 4 * 3600) > score(1000, 1 << 20, 0, 0));
    // A small anchor hit 5 times beats a fresh large one-off with better tokens/byte.
    assert!(score(200, 8_000, 5, 600) > score(2000, 28_000, 0, 0));
    // Long idle eventually loses even with hits.
    assert!(score(200, 8_000, 5, 7 * 24 * 3600) < score(2000, 28_000, 0, 0));
}

#[test]
fn oversized_and_small_extension_saves_are_skipped() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open_with(d.path(), Options { budget_bytes: 10_000, min_extension_tokens: 64 }, None).unwrap();
    let t = seq(4, 200);
    let r = s.save(&FP, &t[..100], &vec![1; 20_000], &no_ext()).unwrap();
    assert_eq!(r.status, SaveStatus::SkippedOverBudget);
    assert!(kv_files(d.path()).is_empty() && temp_files(d.path()).is_empty());
    assert_eq!(s.save(&FP, &t[..100], b"p", &no_ext()).unwrap().status, SaveStatus::Written);
    let r = s.save(&FP, &t[..150], b"p", &no_ext()).unwrap();
    assert_eq!(r.status, SaveStatus::SkippedSmallExtension { existing_tokens: 100 });
    assert_eq!(s.save(&FP, &t[..164], b"p", &no_ext()).unwrap().status, SaveStatus::Written);
    // Another model's prefix does not count as existing.
    assert_eq!(s.save(&OTHER, &t[..110], b"p", &no_ext()).unwrap().status, SaveStatus::Written);
    assert_eq!(kv_files(d.path()).len(), 3);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    assert!(matches!(s.save(&FP, &[], b"x", &no_ext()), Err(KvError::InvalidInput(_))));
    let mut ext = Extensions::new();
    ext.insert(String::new(), vec![1]);
    assert!(matches!(s.save(&FP, &[1], b"x", &ext), Err(KvError::InvalidInput(_))));
    assert!(matches!(s.remove("../../etc/passwd"), Err(KvError::InvalidInput(_))));
    let id = s.save(&FP, &[1, 2], b"x", &no_ext()).unwrap().id;
    s.remove(&id).unwrap();
    assert!(matches!(s.remove(&id), Err(KvError::NotFound(_))));
    assert!(s.list().unwrap().is_empty());
    // A payload reader that comes up short: error, and no file or temp left behind.
    let r = s.save_reader(&FP, &[1, 2, 3], &no_ext(), 100, &mut &b"short"[..]);
    assert!(matches!(r, Err(KvError::Io { .. })));
    assert!(kv_files(d.path()).is_empty() && temp_files(d.path()).is_empty());
}

#[test]
fn duplicate_save_is_a_no_op() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    let t = seq(5, 64);
    let first = s.save(&FP, &t, &payload_for(&t, 1000), &no_ext()).unwrap();
    let path = d.path().join(format!("{}.dsv4kv", first.id));
    let m1 = fs::metadata(&path).unwrap();
    std::thread::sleep(Duration::from_millis(20));

    struct Untouchable;
    impl Read for Untouchable {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            panic!("a duplicate save must not read its payload");
        }
    }
    let again = s.save_reader(&FP, &t, &no_ext(), 1000, &mut Untouchable).unwrap();
    assert_eq!(again.status, SaveStatus::AlreadyPresent);
    assert_eq!(again.id, first.id);
    assert_eq!(again.bytes, first.bytes);
    // A second store instance, and a different payload: still no rewrite.
    let s2 = KvStore::open(d.path(), BIG).unwrap();
    assert_eq!(s2.save(&FP, &t, b"different", &no_ext()).unwrap().status, SaveStatus::AlreadyPresent);
    let m2 = fs::metadata(&path).unwrap();
    assert_eq!((m1.ino(), m1.mtime(), m1.mtime_nsec(), m1.len()), (m2.ino(), m2.mtime(), m2.mtime_nsec(), m2.len()));
    assert_eq!(s2.lookup_load(&FP, &t).unwrap().payload, payload_for(&t, 1000));
    assert_eq!(kv_files(d.path()).len(), 1);
}

#[test]
fn concurrent_stores_and_threads_stay_consistent() {
    let d = tempfile::tempdir().unwrap();
    let a = Arc::new(KvStore::open(d.path(), BIG).unwrap());
    let b = Arc::new(KvStore::open(d.path(), BIG).unwrap());
    let shared = seq(77, 100);
    let mut handles = Vec::new();
    for th in 0..4u32 {
        let s = if th % 2 == 0 { a.clone() } else { b.clone() };
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..15u32 {
                // Every thread saves the shared prefixes (racing duplicates) and its own.
                let n = 20 + (i as usize % 5) * 20;
                s.save(&FP, &shared[..n], &payload_for(&shared[..n], 3000), &no_ext()).unwrap();
                let mut own = shared.clone();
                own.extend(seq(th * 1000 + i, 30));
                s.save(&FP, &own, &payload_for(&own, 5000), &no_ext()).unwrap();
                let l = s.lookup_load(&FP, &[own.clone(), vec![1]].concat()).unwrap();
                assert_eq!(l.tokens, own);
                assert_eq!(l.payload, payload_for(&own, 5000));
                let l = s.lookup_load(&FP, &shared).unwrap();
                assert_eq!(l.payload, payload_for(&l.tokens, 3000));
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(a.take_warnings().is_empty() && b.take_warnings().is_empty());
    assert!(temp_files(d.path()).is_empty());
    assert_eq!(kv_files(d.path()).len(), 5 + 4 * 15);
    let c = KvStore::open(d.path(), BIG).unwrap();
    assert!(c.take_warnings().is_empty());
    let list = c.list().unwrap();
    assert_eq!(list.len(), 65);
    // Every load was counted exactly once in the shared usage index despite the races.
    assert_eq!(list.iter().map(|e| e.hits).sum::<u64>(), 4 * 15 * 2);
}

#[test]
fn concurrent_eviction_never_serves_wrong_data() {
    let d = tempfile::tempdir().unwrap();
    // Room for about four files: saves keep evicting what other threads are loading.
    let budget = 4 * (80 + 4 * 60 + 4000 + 32) as u64;
    let mut handles = Vec::new();
    for th in 0..3u32 {
        let dir = d.path().to_path_buf();
        handles.push(std::thread::spawn(move || {
            let s = KvStore::open(&dir, budget).unwrap();
            for i in 0..30u32 {
                let t = seq(th * 100 + i % 7, 60);
                s.save(&FP, &t, &payload_for(&t, 4000), &no_ext()).unwrap();
                if let Some(l) = s.lookup_load(&FP, &t) {
                    assert_eq!(l.tokens, t);
                    assert_eq!(l.payload, payload_for(&t, 4000));
                }
            }
            // Only "vanished" notices are acceptable: nothing was ever corrupt.
            for w in s.take_warnings() {
                assert!(w.message.contains("vanished"), "{w:?}");
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    let s = KvStore::open(d.path(), budget).unwrap();
    assert!(s.stats().unwrap().bytes <= budget);
    assert!(temp_files(d.path()).is_empty());
}

const CRASH_ENV: &str = "DSV4_KVSTORE_CRASH_DIR";

/// Helper mode for `sigkill_mid_write_loses_only_the_unfinished_file`: does nothing in a
/// normal run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else { return };
    let s = KvStore::open(&dir, BIG).unwrap();
    /// Yields payload bytes, then announces it is mid-write and hangs until killed.
    struct Stall {
        given: u64,
    }
    impl Read for Stall {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.given >= 24 << 20 {
                println!("MIDWRITE");
                std::thread::sleep(Duration::from_secs(120));
            }
            let n = buf.len().min(1 << 20);
            buf[..n].fill(0x77);
            self.given += n as u64;
            Ok(n)
        }
    }
    let t = seq(42, 5000);
    s.save_reader(&FP, &t, &no_ext(), 64 << 20, &mut Stall { given: 0 }).unwrap();
    unreachable!("the parent kills us mid-write");
}

#[test]
fn sigkill_mid_write_loses_only_the_unfinished_file() {
    let d = tempfile::tempdir().unwrap();
    let s = KvStore::open(d.path(), BIG).unwrap();
    let early = seq(1, 500);
    s.save(&FP, &early, &payload_for(&early, 50_000), &no_ext()).unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, d.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("child exited before reaching mid-write");
        }
        if line.contains("MIDWRITE") {
            break;
        }
    }
    let temps = temp_files(d.path());
    assert_eq!(temps.len(), 1);
    assert!(fs::metadata(&temps[0]).unwrap().len() >= 8 << 20, "the write was under way");
    // A store opened while the writer is alive must not take its temp file.
    let _ = KvStore::open(d.path(), BIG).unwrap();
    assert!(temps[0].exists(), "live writer's temp file removed");
    assert_eq!(KvStore::open(d.path(), BIG).unwrap().stats().unwrap().temp_files, 1);

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let s = KvStore::open(d.path(), BIG).unwrap();
    let w = s.take_warnings();
    assert!(w.iter().any(|w| w.path == temps[0] && w.message.contains("unfinished")), "{w:?}");
    assert!(temp_files(d.path()).is_empty(), "crashed writer's temp file not cleaned");
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tokens, 500);
    let l = s.lookup_load(&FP, &seq(42, 5000)).map(|l| l.tokens.len());
    assert_eq!(l, None, "the unfinished checkpoint must not exist");
    let l = s.lookup_load(&FP, &[early.clone(), vec![3]].concat()).unwrap();
    assert_eq!(l.payload, payload_for(&early, 50_000));
    assert!(s.take_warnings().is_empty());
}
