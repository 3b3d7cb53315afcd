//! Each kind of malformed file gives its own error variant, located by offset, key or tensor.
//! Files are assembled byte by byte so each test controls exactly what is wrong.

use dsv4_gguf::{GgufError, GgufFile, GgufWarning, Value};

/// A hand-assembled GGUF byte string.
#[derive(Clone)]
struct B(Vec<u8>);

impl B {
    fn header(n_tensors: u64, n_kv: u64) -> B {
        B(Vec::new()).raw(b"GGUF").u32(3).u64(n_tensors).u64(n_kv)
    }
    fn raw(mut self, b: &[u8]) -> B {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> B {
        self.raw(&v.to_le_bytes())
    }
    fn str(self, s: &str) -> B {
        self.bytes_str(s.as_bytes())
    }
    fn bytes_str(self, s: &[u8]) -> B {
        self.u64(s.len() as u64).raw(s)
    }
    fn kv_u32(self, key: &str, v: u32) -> B {
        self.str(key).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], ty: u32, offset: u64) -> B {
        let mut b = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            b = b.u64(d);
        }
        b.u32(ty).u64(offset)
    }
    fn pad_to(self, align: usize) -> B {
        let n = self.0.len().next_multiple_of(align) - self.0.len();
        self.zeros(n)
    }
    fn zeros(self, n: usize) -> B {
        self.raw(&vec![0; n])
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn parse(self) -> Result<GgufFile, GgufError> {
        GgufFile::from_bytes(self.0)
    }
}

/// One F32 [4] tensor "t" at offset 0, with 16 data bytes.
fn one_tensor() -> B {
    B::header(1, 1)
        .kv_u32("k", 7)
        .tensor("t", &[4], 0, 0)
        .pad_to(32)
        .zeros(16)
}

#[test]
fn the_minimal_files_parse() {
    // 24 header + 17 KV + 33 tensor info = 74, padded to 96.
    let f = one_tensor().parse().unwrap();
    assert_eq!((f.data_start(), f.file_size()), (96, 112));
    assert_eq!(f.tensor_data(f.tensor("t").unwrap()).len(), 16);
    let f = B::header(0, 0).parse().unwrap();
    assert_eq!(
        (f.metadata().len(), f.tensors().len(), f.data_start()),
        (0, 0, 32)
    );
}

#[test]
fn truncated_anywhere() {
    let full = one_tensor();
    for len in 0..full.0.len() {
        let err = B(full.0[..len].to_vec()).parse().unwrap_err();
        match err {
            GgufError::Truncated { offset, .. } => assert!(offset <= len as u64, "cut at {len}"),
            // The counts are checked against the bytes left before anything is read.
            GgufError::CountTooLarge { offset, .. } => {
                assert!(offset == 8 || offset == 16, "cut at {len}")
            }
            GgufError::TensorOutOfBounds { .. } => assert!(len >= 74, "cut at {len}"),
            e => panic!("cut at {len}: {e}"),
        }
    }
    let err = B(full.0[..10].to_vec()).parse().unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                offset: 8,
                needed: 8,
                available: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tensor count"), "{err}");
    // Cut inside a KV value: the message names the key.
    let b = B::header(0, 1).str("my.key").u32(8).u64(10).raw(b"abc");
    let err = b.parse().unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::Truncated {
                offset: 50,
                needed: 10,
                available: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"my.key\""), "{err}");
}

#[test]
fn data_past_the_end() {
    // Data start 96 + 16 bytes of data, one byte short.
    let mut b = one_tensor();
    b.0.pop();
    assert!(matches!(
        b.parse(),
        Err(GgufError::TensorOutOfBounds {
            n_bytes: 16,
            data_start: 96,
            file_size: 111,
            ..
        })
    ));
    // An offset that overflows when added to data_start.
    let b = B::header(1, 0)
        .tensor("t", &[4], 0, u64::MAX - 8)
        .pad_to(32)
        .zeros(16);
    let err = b.parse().unwrap_err();
    assert!(
        matches!(err, GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "t"),
        "{err}"
    );
}

#[test]
fn bad_magic_and_version() {
    let mut b = one_tensor();
    b.0[..4].copy_from_slice(b"GGML");
    assert!(matches!(b.parse(), Err(GgufError::BadMagic { found }) if &found == b"GGML"));
    for v in [1u32, 2, 4, u32::MAX] {
        let mut b = one_tensor();
        b.0[4..8].copy_from_slice(&v.to_le_bytes());
        let err = b.parse().unwrap_err();
        assert!(matches!(err, GgufError::UnsupportedVersion { found } if found == v));
        assert!(err.to_string().contains(&format!("version {v}")));
    }
}

#[test]
fn unknown_value_types() {
    let b = B::header(0, 1).str("k").u32(13).u32(0);
    assert!(matches!(
        b.parse(),
        Err(GgufError::UnknownValueType {
            offset: 33,
            id: 13,
            ..
        })
    ));
    // An array's element type.
    let b = B::header(0, 1).str("arr").u32(9).u32(99).u64(0);
    let err = b.parse().unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::UnknownValueType {
                offset: 39,
                id: 99,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"arr\""));
}

#[test]
fn unknown_ggml_type() {
    for id in [4u32, 5, 31, 36, 42, u32::MAX] {
        let b = B::header(1, 0)
            .tensor("w", &[4], id, 0)
            .pad_to(32)
            .zeros(64);
        let err = b.parse().unwrap_err();
        // 24 header + 9 name + 4 n_dims + 8 dim.
        assert!(
            matches!(err, GgufError::UnknownGgmlType { offset: 45, id: i, ref tensor } if i == id && tensor == "w"),
            "{err}"
        );
    }
}

#[test]
fn absurd_counts() {
    for (n_tensors, n_kv) in [(u64::MAX, 0), (0, u64::MAX), (1 << 40, 0), (2, 0), (0, 4)] {
        let b = B::header(n_tensors, n_kv).zeros(40);
        let err = b.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::CountTooLarge { .. }),
            "{n_tensors} {n_kv}: {err}"
        );
    }
    // The 48 bytes after the tensor count hold one minimal tensor-info record (32) but not two.
    assert!(matches!(
        B::header(2, 0).zeros(40).parse(),
        Err(GgufError::CountTooLarge {
            count: 2,
            available: 48,
            ..
        })
    ));
    // Array counts, for each element width.
    for (elem, width) in [(0u32, 1u64), (3, 2), (6, 4), (12, 8), (8, 8), (9, 12)] {
        let b = B::header(0, 1)
            .str("a")
            .u32(9)
            .u32(elem)
            .u64(10)
            .zeros(10 * width as usize - 1);
        let err = b.parse().unwrap_err();
        assert!(
            matches!(
                err,
                GgufError::CountTooLarge {
                    offset: 41,
                    count: 10,
                    ..
                }
            ),
            "elem type {elem}: {err}"
        );
        let b = B::header(0, 1)
            .str("a")
            .u32(9)
            .u32(elem)
            .u64(u64::MAX)
            .zeros(64);
        assert!(matches!(b.parse(), Err(GgufError::CountTooLarge { .. })));
    }
}

fn nested(depth: usize) -> B {
    // `depth` arrays, each holding one array, the innermost holding one u8.
    let mut b = B::header(0, 1).str("n").u32(9);
    for _ in 1..depth {
        b = b.u32(9).u64(1);
    }
    b.u32(0).u64(1).raw(&[42])
}

#[test]
fn nesting_depth() {
    let f = nested(8).parse().unwrap();
    assert_eq!(f.get("n").unwrap().as_array().unwrap().depth(), 8);
    let err = nested(9).parse().unwrap_err();
    assert!(
        matches!(err, GgufError::NestingTooDeep { offset: 133, .. }),
        "{err}"
    );
    assert!(matches!(
        nested(1000).parse(),
        Err(GgufError::NestingTooDeep { .. })
    ));
}

#[test]
fn invalid_utf8() {
    let b = B::header(0, 1).bytes_str(b"k\xff").u32(4).u32(1);
    assert!(matches!(
        b.parse(),
        Err(GgufError::InvalidUtf8 { offset: 32, .. })
    ));
    let b = B::header(0, 1).str("key").u32(8).bytes_str(b"\xc3\x28");
    let err = b.parse().unwrap_err();
    assert!(
        matches!(err, GgufError::InvalidUtf8 { offset: 47, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("\"key\""));
    let b = B::header(1, 0)
        .bytes_str(b"\xe2\x82")
        .u32(1)
        .u64(4)
        .u32(0)
        .u64(0)
        .pad_to(32)
        .zeros(16);
    assert!(matches!(
        b.parse(),
        Err(GgufError::InvalidUtf8 { offset: 32, .. })
    ));
}

#[test]
fn dimension_counts() {
    for n in [0usize, 9, 1000] {
        let dims = vec![1u64; n];
        let b = B::header(1, 0)
            .tensor("t", &dims, 0, 0)
            .pad_to(32)
            .zeros(64);
        let err = b.parse().unwrap_err();
        assert!(
            matches!(err, GgufError::BadDimCount { n_dims, ref tensor } if n_dims == n as u64 && tensor == "t"),
            "{err}"
        );
    }
    // n_dims = u32::MAX is refused before any dimension is read.
    let b = B::header(1, 0).str("t").u32(u32::MAX).zeros(64);
    assert!(matches!(
        b.parse(),
        Err(GgufError::BadDimCount {
            n_dims: 4294967295,
            ..
        })
    ));
    let b = B::header(1, 0)
        .tensor("t", &[1; 8], 0, 0)
        .pad_to(32)
        .zeros(32);
    assert_eq!(b.parse().unwrap().tensor("t").unwrap().dims().len(), 8);
}

#[test]
fn bad_shapes() {
    let b = B::header(1, 0)
        .tensor("z", &[4, 0], 0, 0)
        .pad_to(32)
        .zeros(32);
    assert!(matches!(b.parse(), Err(GgufError::ZeroDim { dims, .. }) if dims == [4, 0]));
    let b = B::header(1, 0)
        .tensor("o", &[1 << 32, 1 << 32], 24, 0)
        .pad_to(32)
        .zeros(32);
    assert!(matches!(b.parse(), Err(GgufError::SizeOverflow { ref tensor, .. }) if tensor == "o"));
    // Q4_K rows must be whole 256-element blocks.
    let b = B::header(1, 0)
        .tensor("q", &[100, 2], 12, 0)
        .pad_to(32)
        .zeros(512);
    let err = b.parse().unwrap_err();
    assert!(
        matches!(
            err,
            GgufError::PartialBlock {
                ne0: 100,
                block: 256,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Q4_K"));
}

#[test]
fn duplicates() {
    let b = B::header(2, 0)
        .tensor("t", &[4], 0, 0)
        .tensor("t", &[4], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(b.parse(), Err(GgufError::DuplicateTensor { name }) if name == "t"));
    let b = B::header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(b.parse(), Err(GgufError::DuplicateKey { key }) if key == "k"));
}

#[test]
fn overlap() {
    // Second tensor starts 8 bytes into the first.
    let b = B::header(2, 0)
        .tensor("a", &[8], 0, 0)
        .tensor("b", &[4], 0, 8)
        .pad_to(32)
        .zeros(64);
    let err = b.parse().unwrap_err();
    assert!(
        matches!(err, GgufError::OverlappingTensors { ref first, ref second } if first == "a" && second == "b")
    );
    // Same offset, declared in the other order.
    let b = B::header(2, 0)
        .tensor("a", &[4], 0, 32)
        .tensor("b", &[4], 0, 32)
        .pad_to(32)
        .zeros(64);
    assert!(matches!(
        b.parse(),
        Err(GgufError::OverlappingTensors { .. })
    ));
    // Touching is fine, and so is data out of declaration order.
    let b = B::header(2, 0)
        .tensor("a", &[4], 0, 16)
        .tensor("b", &[4], 0, 0)
        .pad_to(32)
        .zeros(32);
    let f = b.parse().unwrap();
    assert_eq!(
        f.warnings(),
        &[GgufWarning::MisalignedTensor {
            tensor: "a".into(),
            offset: 16,
            alignment: 32
        }]
    );
}

#[test]
fn alignment_rules() {
    let with = |v: B| v.tensor("t", &[4], 0, 0);
    // Not a power of two.
    for a in [3u32, 48, 100] {
        let b = with(B::header(1, 1).kv_u32("general.alignment", a))
            .pad_to(32)
            .zeros(64);
        assert!(
            matches!(b.parse(), Err(GgufError::BadAlignment { alignment }) if alignment == a as u64)
        );
    }
    // A power of two is honoured.
    let b = with(B::header(1, 1).kv_u32("general.alignment", 256))
        .pad_to(256)
        .zeros(16);
    let f = b.parse().unwrap();
    assert_eq!((f.alignment(), f.data_start()), (256, 256));
    // Zero and non-UINT32 values are ignored with a warning, as ds4 does.
    let b = with(B::header(1, 1).kv_u32("general.alignment", 0))
        .pad_to(32)
        .zeros(16);
    let f = b.parse().unwrap();
    assert_eq!(f.alignment(), 32);
    assert!(matches!(
        f.warnings(),
        [GgufWarning::AlignmentIgnored { .. }]
    ));
    let b = with(B::header(1, 1).str("general.alignment").u32(10).u64(64))
        .pad_to(32)
        .zeros(16);
    let f = b.parse().unwrap();
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get("general.alignment"), Some(&Value::U64(64)));
    assert!(
        f.warnings()[0].to_string().contains("U64"),
        "{}",
        f.warnings()[0]
    );
}

#[test]
fn warnings_do_not_fail() {
    let long = "x".repeat(64);
    let b = B::header(1, 0)
        .tensor(&long, &[4], 0, 4)
        .pad_to(32)
        .zeros(32);
    let f = b.parse().unwrap();
    assert_eq!(f.tensor_data(f.tensor(&long).unwrap()).len(), 16);
    assert_eq!(
        f.warnings(),
        &[
            GgufWarning::LongTensorName {
                tensor: long.clone(),
                len: 64
            },
            GgufWarning::MisalignedTensor {
                tensor: long.clone(),
                offset: 4,
                alignment: 32
            },
        ]
    );
}

#[test]
fn open_reports_the_path() {
    let err = GgufFile::open("/nonexistent/x.gguf").unwrap_err();
    assert!(matches!(err, GgufError::Open { .. }));
    assert!(err.to_string().contains("/nonexistent/x.gguf"));
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        GgufFile::open(&empty),
        Err(GgufError::Truncated { offset: 0, .. })
    ));
    let path = dir.path().join("ok.gguf");
    std::fs::write(&path, one_tensor().0).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.file_size(), one_tensor().len());
    assert_eq!(f.get("k"), Some(&Value::U32(7)));
}

#[test]
fn a_foreign_tensor_info_yields_no_bytes() {
    let big = B::header(1, 0)
        .tensor("t", &[64], 0, 0)
        .pad_to(32)
        .zeros(256)
        .parse()
        .unwrap();
    let small = one_tensor().parse().unwrap();
    assert_eq!(small.tensor_data(big.tensor("t").unwrap()), &[] as &[u8]);
}
