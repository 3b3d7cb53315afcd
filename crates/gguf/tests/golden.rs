//! The files in tests/data were written by gguf-py 0.19.0
//! (tools/reference/make_gguf_golden.py). These tests read every value and byte of them, and
//! check that the Rust writer reproduces them byte for byte from the same content.

use dsv4_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value, ValueType};
use half::f16;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.gguf");
const GOLDEN_ALIGN64: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/golden_align64.gguf"
);

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The metadata of golden.gguf, in file order, mirroring `write_golden` in the script.
fn golden_metadata() -> Vec<(String, Value)> {
    let kv = |k: &str, v: Value| (k.to_string(), v);
    vec![
        kv("general.architecture", Value::from("deepseek4")),
        kv("test.u8", Value::U8(200)),
        kv("test.i8", Value::I8(-100)),
        kv("test.u16", Value::U16(60000)),
        kv("test.i16", Value::I16(-30000)),
        kv("test.u32", Value::U32(4_000_000_000)),
        kv("test.i32", Value::I32(-2_000_000_000)),
        kv("test.f32", Value::F32(1e-6)),
        kv("test.bool_true", Value::Bool(true)),
        kv("test.bool_false", Value::Bool(false)),
        kv("test.string", Value::from("DeepSeek V4 Flash ✓ ü")),
        kv("test.u64", Value::U64((1 << 63) + 12345)),
        kv("test.i64", Value::I64(-(1 << 62) - 7)),
        kv("test.f64", Value::F64(0.1)),
        kv("test.array.i32", Value::from(vec![0i32, 0, 4, 128, -1])),
        kv("test.array.f32", Value::from(vec![10.0f32, 0.5, -2.25])),
        kv("test.array.bool", Value::from(vec![true, false, true])),
        kv(
            "test.array.string",
            Value::from(vec!["<｜begin▁of▁sentence｜>", "Ġthe", "", "é"]),
        ),
        kv("test.array.u8", Value::from(vec![0u8, 1, 255])),
        kv("test.array.i8", Value::from(vec![-128i8, 127])),
        kv("test.array.u16", Value::from(vec![1u16, 65535])),
        kv("test.array.i16", Value::from(vec![-32768i16, 5])),
        kv("test.array.u32", Value::from(vec![0u32, 4, 128])),
        kv("test.array.u64", Value::from(vec![u64::MAX, 0])),
        kv("test.array.i64", Value::from(vec![i64::MIN, i64::MAX])),
        kv("test.array.f64", Value::from(vec![0.1f64, -1e300])),
        kv(
            "test.array.nested_i32",
            Value::from(vec![Array::I32(vec![1, 2]), Array::I32(vec![3, 4, 5])]),
        ),
        kv(
            "test.array.nested_str",
            Value::from(vec![
                Array::String(s(&["a", "b"])),
                Array::String(s(&["c"])),
            ]),
        ),
        kv(
            "test.array.nested3",
            Value::from(vec![
                Array::Array(vec![Array::I32(vec![7])]),
                Array::Array(vec![Array::I32(vec![8, 9])]),
            ]),
        ),
    ]
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn q8_0_blocks(n_blocks: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for b in 0..n_blocks {
        out.extend_from_slice(&f16::from_f32(0.125 * (b + 1) as f32).to_le_bytes());
        out.extend((0..32).map(|j| (((b * 32 + j) * 37 + 11) % 256) as u8));
    }
    out
}

/// (name, ne, type, data) of golden.gguf's tensors, in file order.
fn golden_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)> {
    vec![
        (
            "f32.matrix",
            vec![4, 3],
            GgmlType::F32,
            f32_bytes((0..12).map(|i| i as f32 * 0.5 - 2.0)),
        ),
        (
            "f16.odd",
            vec![7],
            GgmlType::F16,
            (0..7)
                .flat_map(|i| f16::from_f32(i as f32 * 0.25 - 1.0).to_le_bytes())
                .collect(),
        ),
        ("q8_0.weight", vec![64, 2], GgmlType::Q8_0, q8_0_blocks(4)),
        (
            "i32.ids",
            vec![3, 2],
            GgmlType::I32,
            (0..6)
                .flat_map(|i: i32| (i * 1000 - 2500).to_le_bytes())
                .collect(),
        ),
        (
            "f32.cube",
            vec![5, 3, 2],
            GgmlType::F32,
            f32_bytes((0..30).map(|i| i as f32 * 0.125 - 1.0)),
        ),
    ]
}

#[test]
fn reads_every_value_of_the_gguf_py_file() {
    let f = GgufFile::open(GOLDEN).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.file_size(), 2016);
    assert_eq!(f.data_start(), 1600);
    assert!(f.warnings().is_empty(), "{:?}", f.warnings());
    let want = golden_metadata();
    assert_eq!(f.metadata().len(), want.len());
    for ((k, v), (wk, wv)) in f.metadata().iter().zip(&want) {
        assert_eq!(k, wk);
        assert_eq!(v, wv, "{k}");
        assert_eq!(v.value_type(), wv.value_type(), "{k}");
    }
    assert_eq!(
        f.get("test.f32").unwrap().as_f64(),
        Some(9.999999974752427e-07)
    );
    assert_eq!(f.get("test.u32").unwrap().as_u32(), Some(4_000_000_000));
    assert_eq!(
        f.get("test.u64").unwrap().as_u64(),
        Some(9223372036854788153)
    );
    assert_eq!(f.get("test.bool_true").unwrap().as_bool(), Some(true));
    assert_eq!(
        f.get("test.array.u32").unwrap().as_i64_array(),
        Some(vec![0, 4, 128])
    );
    assert_eq!(
        f.get("test.array.string").unwrap().as_str_array().unwrap()[1],
        "Ġthe"
    );
    let nested3 = f.get("test.array.nested3").unwrap().as_array().unwrap();
    assert_eq!(
        (nested3.elem_type(), nested3.depth()),
        (ValueType::Array, 3)
    );
    assert!(f.get("test.missing").is_none());
}

#[test]
fn reads_every_tensor_byte_of_the_gguf_py_file() {
    let f = GgufFile::open(GOLDEN).unwrap();
    let want = golden_tensors();
    let offsets = [0u64, 64, 96, 256, 288];
    assert_eq!(f.tensors().len(), want.len());
    for ((t, (name, dims, ty, data)), off) in f.tensors().iter().zip(&want).zip(offsets) {
        assert_eq!(t.name(), *name);
        assert_eq!(t.dims(), &dims[..]);
        assert_eq!(t.ty(), *ty);
        assert_eq!(t.offset(), off, "{name}");
        assert_eq!(t.n_elements(), dims.iter().product::<u64>());
        assert_eq!(t.n_bytes(), data.len() as u64);
        assert_eq!(f.tensor_data(t), &data[..], "{name}");
        assert_eq!(f.tensor(name), Some(t));
    }
    assert!(f.tensor("nope").is_none());
}

#[test]
fn rust_writer_reproduces_the_gguf_py_file() {
    let mut w = GgufWriter::new();
    for (k, v) in golden_metadata() {
        w.add_kv(k, v).unwrap();
    }
    let tensors = golden_tensors();
    for (name, dims, ty, _) in &tensors {
        w.add_tensor(*name, dims, *ty).unwrap();
    }
    let data: Vec<&[u8]> = tensors.iter().map(|t| &t.3[..]).collect();
    let bytes = w.write_all(Vec::new(), &data).unwrap();
    let golden = std::fs::read(GOLDEN).unwrap();
    assert_eq!(bytes.len(), golden.len());
    assert!(
        bytes == golden,
        "first difference at byte {:?}",
        first_diff(&bytes, &golden)
    );
}

#[test]
fn honours_general_alignment_and_reproduces_it() {
    let f = GgufFile::open(GOLDEN_ALIGN64).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.data_start(), 256);
    assert_eq!(f.file_size(), 384);
    assert_eq!(f.get("general.alignment"), Some(&Value::U32(64)));
    let a = f.tensor("a").unwrap();
    let b = f.tensor("b").unwrap();
    assert_eq!((a.offset(), b.offset()), (0, 64));
    let a_data = f32_bytes([1.0, 2.0, 3.0]);
    let b_data: Vec<u8> = [0.5f32, -0.5, 4.0, 8.0, -16.0]
        .iter()
        .flat_map(|&x| f16::from_f32(x).to_le_bytes())
        .collect();
    assert_eq!(f.tensor_data(a), &a_data[..]);
    assert_eq!(f.tensor_data(b), &b_data[..]);

    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "deepseek4").unwrap();
    w.add_kv("general.alignment", 64u32).unwrap();
    w.add_kv("general.name", "align64").unwrap();
    assert_eq!(w.alignment(), 64);
    w.add_tensor("a", &[3], GgmlType::F32).unwrap();
    w.add_tensor("b", &[5], GgmlType::F16).unwrap();
    let bytes = w.write_all(Vec::new(), &[&a_data, &b_data]).unwrap();
    assert!(bytes == std::fs::read(GOLDEN_ALIGN64).unwrap());
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Writes a file with what gguf-py cannot write itself (empty arrays, alignment 128, block
/// types) to `$DSV4_GGUF_SAMPLE`, for `make_gguf_golden.py --read FILE --expect-rust-sample`.
/// Without the variable it still writes and re-reads the sample in memory.
#[test]
fn rust_sample_for_gguf_py() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "deepseek4").unwrap();
    w.add_kv("general.alignment", 128u32).unwrap();
    w.add_kv("rust.u64", u64::MAX).unwrap();
    w.add_kv("rust.f64", -0.0f64).unwrap();
    w.add_kv("rust.tokens", vec!["a", "ü", "", "Ġx"]).unwrap();
    w.add_kv("rust.ratios", vec![0u32, 0, 4, 128]).unwrap();
    w.add_kv("rust.empty_f32", Vec::<f32>::new()).unwrap();
    let tensors: [(&str, &[u64], GgmlType); 7] = [
        ("token_embd.weight", &[8, 3], GgmlType::F16),
        (
            "blk.0.ffn_gate_exps.weight",
            &[256, 2, 2],
            GgmlType::IQ2_XXS,
        ),
        ("blk.0.ffn_down_exps.weight", &[256, 2], GgmlType::Q2_K),
        ("blk.0.attn_q_a.weight", &[512, 1], GgmlType::Q4_K),
        ("output.weight", &[32, 3], GgmlType::Q8_0),
        ("bf16", &[5], GgmlType::BF16),
        ("ids", &[6, 2], GgmlType::I32),
    ];
    let mut data = Vec::new();
    for (name, dims, ty) in tensors {
        w.add_tensor(name, dims, ty).unwrap();
        let n = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        data.push(
            (0..n)
                .map(|i| ((i * 7 + name.len() as u64) % 256) as u8)
                .collect::<Vec<u8>>(),
        );
    }
    let slices: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
    let bytes = w.write_all(Vec::new(), &slices).unwrap();
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.alignment(), 128);
    for (t, d) in f.tensors().iter().zip(&data) {
        assert_eq!(f.tensor_data(t), &d[..]);
        assert_eq!(t.offset() % 128, 0);
    }
    assert_eq!(
        f.get("rust.empty_f32"),
        Some(&Value::Array(Array::F32(vec![])))
    );
    if let Some(path) = std::env::var_os("DSV4_GGUF_SAMPLE") {
        std::fs::write(path, bytes).unwrap();
    }
}
