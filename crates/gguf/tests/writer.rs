//! The streaming writer: layout, and refusal of every invalid input with a specific error.

use std::io::{self, Write};

use dsv4_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, Value};

fn two_tensors() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "deepseek4").unwrap();
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[32, 2], GgmlType::Q8_0).unwrap();
    w
}

fn data_a() -> Vec<u8> {
    (0..12).collect()
}

fn data_b() -> Vec<u8> {
    (0..68).map(|i| 200 - i).collect()
}

#[test]
fn streamed_chunks_equal_one_shot_and_read_back() {
    let one_shot = two_tensors()
        .write_all(Vec::new(), &[&data_a(), &data_b()])
        .unwrap();

    let mut s = two_tensors().begin(Vec::new()).unwrap();
    assert_eq!(s.current_tensor(), Some("a"));
    s.write_tensor_bytes(&data_a()[..5]).unwrap();
    s.write_tensor_bytes(&[]).unwrap();
    s.write_tensor_bytes(&data_a()[5..]).unwrap();
    s.finish_tensor().unwrap();
    assert_eq!(s.current_tensor(), Some("b"));
    for chunk in data_b().chunks(7) {
        s.write_tensor_bytes(chunk).unwrap();
    }
    s.finish_tensor().unwrap();
    assert_eq!(s.current_tensor(), None);
    let streamed = s.finish().unwrap();
    assert_eq!(streamed, one_shot);

    let f = GgufFile::from_bytes(streamed).unwrap();
    let (a, b) = (f.tensor("a").unwrap(), f.tensor("b").unwrap());
    assert_eq!((a.offset(), b.offset()), (0, 32));
    assert_eq!(f.tensor_data(a), &data_a()[..]);
    assert_eq!(f.tensor_data(b), &data_b()[..]);
    // Every tensor is padded, the last included, as gguf-py does.
    assert_eq!(f.file_size(), f.data_start() + 32 + 96);
    assert_eq!(f.file_size() % 32, 0);
}

#[test]
fn byte_count_errors() {
    let mut s = two_tensors().begin(Vec::new()).unwrap();
    let err = s.write_tensor_bytes(&[0; 13]).unwrap_err();
    assert!(
        matches!(err, GgufError::WrongByteCount { ref tensor, expected: 12, got: 13 } if tensor == "a")
    );
    s.write_tensor_bytes(&[0; 8]).unwrap();
    // Refused whole: the 8 bytes already written stay the only ones.
    assert!(matches!(
        s.write_tensor_bytes(&[0; 5]),
        Err(GgufError::WrongByteCount { got: 13, .. })
    ));
    assert!(matches!(
        s.finish_tensor(),
        Err(GgufError::WrongByteCount {
            expected: 12,
            got: 8,
            ..
        })
    ));
    s.write_tensor_bytes(&[0; 4]).unwrap();
    s.finish_tensor().unwrap();
    assert!(matches!(
        s.write_tensor(&[0; 67]),
        Err(GgufError::WrongByteCount {
            expected: 68,
            got: 67,
            ..
        })
    ));
    let err = two_tensors()
        .begin(Vec::new())
        .unwrap()
        .finish()
        .unwrap_err();
    assert!(matches!(err, GgufError::TensorsMissing { ref next, missing: 2 } if next == "a"));
    assert!(matches!(
        s.finish(),
        Err(GgufError::TensorsMissing { missing: 1, .. })
    ));

    let mut s = two_tensors().begin(Vec::new()).unwrap();
    s.write_tensor(&data_a()).unwrap();
    s.write_tensor(&data_b()).unwrap();
    assert!(matches!(
        s.write_tensor_bytes(&[1]),
        Err(GgufError::NoTensorPending { got: 1 })
    ));
    assert!(matches!(
        s.finish_tensor(),
        Err(GgufError::NoTensorPending { got: 0 })
    ));
    s.finish().unwrap();

    let err = two_tensors()
        .write_all(Vec::new(), &[&data_a()])
        .unwrap_err();
    assert!(matches!(
        err,
        GgufError::DataCountMismatch {
            expected: 2,
            got: 1
        }
    ));
}

#[test]
fn declaration_errors() {
    let mut w = GgufWriter::new();
    let name63 = "n".repeat(63);
    w.add_tensor(name63.clone(), &[1], GgmlType::F32).unwrap();
    let err = w
        .add_tensor("n".repeat(64), &[1], GgmlType::F32)
        .unwrap_err();
    assert!(matches!(err, GgufError::NameTooLong { len: 64, .. }));
    assert!(matches!(
        w.add_tensor(name63, &[1], GgmlType::F32),
        Err(GgufError::DuplicateTensor { .. })
    ));
    assert!(matches!(
        w.add_tensor("z", &[2, 0], GgmlType::F32),
        Err(GgufError::ZeroDim { .. })
    ));
    assert!(matches!(
        w.add_tensor("d", &[], GgmlType::F32),
        Err(GgufError::BadDimCount { n_dims: 0, .. })
    ));
    assert!(matches!(
        w.add_tensor("d", &[1; 9], GgmlType::F32),
        Err(GgufError::BadDimCount { n_dims: 9, .. })
    ));
    assert!(matches!(
        w.add_tensor("q", &[100], GgmlType::IQ2_XXS),
        Err(GgufError::PartialBlock {
            ne0: 100,
            block: 256,
            ..
        })
    ));
    assert!(matches!(
        w.add_tensor("o", &[u64::MAX / 2, 3], GgmlType::F32),
        Err(GgufError::SizeOverflow { .. })
    ));

    w.add_kv("k", 1u8).unwrap();
    assert!(matches!(w.add_kv("k", 2u8), Err(GgufError::DuplicateKey { key }) if key == "k"));
    let mut deep = Array::U8(vec![1]);
    for _ in 0..8 {
        deep = Array::Array(vec![deep]);
    }
    assert_eq!(deep.depth(), 9);
    assert!(
        matches!(w.add_kv("deep", deep.clone()), Err(GgufError::ValueTooDeep { key }) if key == "deep")
    );
    let Array::Array(inner) = deep else {
        unreachable!()
    };
    w.add_kv("deep8", inner.into_iter().next().unwrap())
        .unwrap();
    assert!(matches!(
        w.add_kv("general.alignment", 48u32),
        Err(GgufError::BadAlignment { alignment: 48 })
    ));
    assert_eq!(w.alignment(), 32);
}

#[test]
fn alignment_follows_the_metadata() {
    let mut w = GgufWriter::new();
    w.add_kv("general.alignment", 4096u32).unwrap();
    assert_eq!(w.alignment(), 4096);
    w.add_tensor("a", &[1], GgmlType::F32).unwrap();
    w.add_tensor("b", &[1], GgmlType::F32).unwrap();
    let bytes = w
        .write_all(Vec::new(), &[&[1, 2, 3, 4], &[5, 6, 7, 8]])
        .unwrap();
    assert_eq!(bytes.len(), 3 * 4096);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(
        (f.data_start(), f.tensor("b").unwrap().offset()),
        (4096, 4096)
    );

    // Zero, or any type but UINT32, leaves the default, as for the reader.
    for v in [Value::U32(0), Value::U64(64), Value::I32(64)] {
        let mut w = GgufWriter::new();
        w.add_kv("general.alignment", v).unwrap();
        assert_eq!(w.alignment(), 32);
    }
}

#[test]
fn empty_file() {
    let bytes = GgufWriter::new().write_all(Vec::new(), &[]).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(
        &bytes[..24],
        b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
    );
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!((f.data_start(), f.file_size()), (32, 32));
}

/// Accepts `budget` bytes, then fails.
struct Failing {
    budget: usize,
}

impl Write for Failing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn io_errors_poison_the_stream() {
    assert!(matches!(
        two_tensors().begin(Failing { budget: 10 }),
        Err(GgufError::Io(_))
    ));
    let header = two_tensors()
        .write_all(Vec::new(), &[&data_a(), &data_b()])
        .unwrap()
        .len()
        - 32
        - 96;
    let mut s = two_tensors().begin(Failing { budget: header + 4 }).unwrap();
    s.write_tensor_bytes(&data_a()[..4]).unwrap();
    assert!(matches!(
        s.write_tensor_bytes(&data_a()[4..]),
        Err(GgufError::Io(_))
    ));
    assert!(matches!(
        s.write_tensor_bytes(&[]),
        Err(GgufError::Poisoned)
    ));
    assert!(matches!(s.finish_tensor(), Err(GgufError::Poisoned)));
    assert!(matches!(s.finish(), Err(GgufError::Poisoned)));
}

#[test]
fn write_to_path_then_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.gguf");
    two_tensors()
        .write_to_path(&path, &[&data_a(), &data_b()])
        .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(
        f.get("general.architecture").and_then(Value::as_str),
        Some("deepseek4")
    );
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()), &data_b()[..]);
    let err = two_tensors()
        .write_to_path(dir.path().join("no/such/dir.gguf"), &[&[], &[]])
        .unwrap_err();
    assert!(matches!(err, GgufError::Open { .. }));
}

#[test]
fn prefault_covers_exactly_the_tensor_data_with_monotone_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    // 100 MiB of F32 data: two progress steps of 64 MiB.
    let n = 25 << 20;
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "deepseek4").unwrap();
    w.add_tensor("t", &[n], GgmlType::F32).unwrap();
    let data = vec![7u8; n as usize * 4];
    std::fs::write(&path, w.write_all(Vec::new(), &[&data]).unwrap()).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mut calls = Vec::new();
    let total = f.prefault(&mut |done, total| calls.push((done, total)));
    assert_eq!(total, f.file_size() - f.data_start());
    assert_eq!(calls.len(), 2);
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(*calls.last().unwrap(), (total, total));
}
