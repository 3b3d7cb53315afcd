//! Property tests: random content round-trips exactly, and corrupted files never panic the
//! parser or yield a tensor slice outside the file.

use dsv4_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};
use proptest::prelude::*;

fn not_nan_f32() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn not_nan_f64() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN != NaN", |x| !x.is_nan())
}

fn leaf_array() -> impl Strategy<Value = Array> {
    use prop::collection::vec;
    let n = 0..6;
    prop_oneof![
        vec(any::<u8>(), n.clone()).prop_map(Array::U8),
        vec(any::<i8>(), n.clone()).prop_map(Array::I8),
        vec(any::<u16>(), n.clone()).prop_map(Array::U16),
        vec(any::<i16>(), n.clone()).prop_map(Array::I16),
        vec(any::<u32>(), n.clone()).prop_map(Array::U32),
        vec(any::<i32>(), n.clone()).prop_map(Array::I32),
        vec(not_nan_f32(), n.clone()).prop_map(Array::F32),
        vec(any::<bool>(), n.clone()).prop_map(Array::Bool),
        vec(".{0,8}", n.clone()).prop_map(Array::String),
        vec(any::<u64>(), n.clone()).prop_map(Array::U64),
        vec(any::<i64>(), n.clone()).prop_map(Array::I64),
        vec(not_nan_f64(), n).prop_map(Array::F64),
    ]
}

fn array() -> impl Strategy<Value = Array> {
    // At most 4 levels, within the 8 the format allows.
    leaf_array().prop_recursive(3, 24, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(Array::Array)
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        not_nan_f32().prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,16}".prop_map(Value::String),
        array().prop_map(Value::Array),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        not_nan_f64().prop_map(Value::F64),
    ]
}

const TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::I32,
    GgmlType::I8,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q4_K,
    GgmlType::IQ2_XXS,
];

#[derive(Clone, Debug)]
struct Content {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

fn tensor() -> impl Strategy<Value = (Vec<u64>, GgmlType, u8)> {
    (
        0..TYPES.len(),
        1u64..4,
        prop::collection::vec(1u64..4, 0..3),
        any::<u8>(),
    )
        .prop_map(|(t, blocks, rest, seed)| {
            let ty = TYPES[t];
            let mut dims = vec![blocks * ty.block_elems() as u64];
            dims.extend(rest);
            (dims, ty, seed)
        })
}

fn content() -> impl Strategy<Value = Content> {
    let alignment = prop_oneof![Just(None), (0u32..9).prop_map(|p| Some(1u32 << p))];
    (
        alignment,
        prop::collection::vec(("[a-z.]{0,12}", value()), 0..8),
        prop::collection::vec(("\\PC{0,20}", tensor()), 0..6),
    )
        .prop_map(|(alignment, kvs, tensors)| {
            // Indices make keys and names unique; the random tails vary their lengths.
            let mut metadata: Vec<(String, Value)> = kvs
                .into_iter()
                .enumerate()
                .map(|(i, (k, v))| (format!("{i}{k}"), v))
                .collect();
            if let Some(a) = alignment {
                metadata.insert(0, ("general.alignment".into(), Value::U32(a)));
            }
            let tensors = tensors
                .into_iter()
                .enumerate()
                .map(|(i, (name, (dims, ty, seed)))| {
                    let mut name = format!("{i}.{name}");
                    while name.len() > 63 {
                        name.pop();
                    }
                    let n = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
                    let data = (0..n)
                        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed))
                        .collect();
                    (name, dims, ty, data)
                })
                .collect();
            Content { metadata, tensors }
        })
}

fn write(c: &Content) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in &c.metadata {
        w.add_kv(k.clone(), v.clone()).unwrap();
    }
    for (name, dims, ty, _) in &c.tensors {
        w.add_tensor(name.clone(), dims, *ty).unwrap();
    }
    let data: Vec<&[u8]> = c.tensors.iter().map(|t| &t.3[..]).collect();
    w.write_all(Vec::new(), &data).unwrap()
}

/// What a reader must guarantee of any file it accepts.
fn check_invariants(f: &GgufFile) {
    assert!(f.alignment().is_power_of_two());
    let mut ranges = Vec::new();
    for t in f.tensors() {
        let start = f.data_start() + t.offset();
        let end = start + t.n_bytes();
        assert!(
            end <= f.file_size(),
            "{} ends at {end} > {}",
            t.name(),
            f.file_size()
        );
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes());
        assert_eq!(t.n_elements(), t.dims().iter().product::<u64>());
        ranges.push((start, end));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlap {w:?}");
    }
}

#[derive(Clone, Debug)]
enum Corruption {
    Truncate(usize),
    Flip(Vec<(usize, u8)>),
    /// Overwrites 8 bytes with a count-like value, at a random place or a header count.
    Count {
        at: usize,
        header_field: Option<bool>,
        value: u64,
    },
}

fn corruption() -> impl Strategy<Value = Corruption> {
    let big = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX / 2),
        0u64..1 << 20,
        any::<u64>()
    ];
    prop_oneof![
        any::<usize>().prop_map(Corruption::Truncate),
        prop::collection::vec((any::<usize>(), 1u8..=255), 1..8).prop_map(Corruption::Flip),
        (any::<usize>(), prop::option::of(any::<bool>()), big).prop_map(
            |(at, header_field, value)| Corruption::Count {
                at,
                header_field,
                value
            }
        ),
    ]
}

fn corrupt(mut bytes: Vec<u8>, c: &Corruption) -> Vec<u8> {
    match c {
        Corruption::Truncate(n) => bytes.truncate(n % (bytes.len() + 1)),
        Corruption::Flip(flips) => {
            for &(at, x) in flips {
                let i = at % bytes.len();
                bytes[i] ^= x;
            }
        }
        Corruption::Count {
            at,
            header_field,
            value,
        } => {
            let i = match header_field {
                Some(true) => 8,
                Some(false) => 16,
                None => at % (bytes.len() - 7),
            };
            bytes[i..i + 8].copy_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

proptest! {
    // 256 cases each by default; PROPTEST_CASES raises it.
    #[test]
    fn round_trip(c in content()) {
        let bytes = write(&c);
        let f = GgufFile::from_bytes(bytes.clone()).unwrap();
        check_invariants(&f);
        prop_assert!(f.warnings().is_empty());
        prop_assert_eq!(f.metadata(), &c.metadata[..]);
        prop_assert_eq!(f.tensors().len(), c.tensors.len());
        for (t, (name, dims, ty, data)) in f.tensors().iter().zip(&c.tensors) {
            prop_assert_eq!(t.name(), name);
            prop_assert_eq!(t.dims(), &dims[..]);
            prop_assert_eq!(t.ty(), *ty);
            prop_assert_eq!(t.offset() % f.alignment(), 0);
            prop_assert_eq!(f.tensor_data(t), &data[..]);
        }
        // Writing back what was read gives the same bytes.
        let again = Content {
            metadata: f.metadata().to_vec(),
            tensors: f.tensors().iter()
                .map(|t| (t.name().to_owned(), t.dims().to_vec(), t.ty(), f.tensor_data(t).to_vec()))
                .collect(),
        };
        prop_assert!(write(&again) == bytes);
    }

    #[test]
    fn corrupted_files_never_panic(c in content(), how in corruption()) {
        let bytes = corrupt(write(&c), &how);
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            check_invariants(&f);
        }
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        n_tensors in 0u64..4, n_kv in 0u64..4, tail in prop::collection::vec(any::<u8>(), 0..256)
    ) {
        let mut bytes = b"GGUF\x03\0\0\0".to_vec();
        bytes.extend_from_slice(&n_tensors.to_le_bytes());
        bytes.extend_from_slice(&n_kv.to_le_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            check_invariants(&f);
        }
    }
}
