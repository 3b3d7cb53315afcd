//! A header the size of the real files' (about 5 MB: 129,280 tokens, 127,741 merges) parses
//! fast and exactly.

use std::time::Instant;

use dsv4_gguf::{GgmlType, GgufFile, GgufWriter, Value};

const N_TOKENS: usize = 129_280;
const N_MERGES: usize = 127_741;

fn token(i: usize) -> String {
    // Byte-level BPE tokens: mostly short, some with multi-byte characters.
    match i % 4 {
        0 => format!("Ġtok{i}"),
        1 => format!("{i}"),
        2 => format!("ü{}", i % 97),
        _ => format!("<｜tok▁{i}｜>"),
    }
}

#[test]
fn real_sized_tokenizer_tables() {
    let tokens: Vec<String> = (0..N_TOKENS).map(token).collect();
    let merges: Vec<String> = (0..N_MERGES)
        .map(|i| format!("{} {}", token(i), token(i + 1)))
        .collect();
    let types: Vec<i32> = (0..N_TOKENS).map(|i| (i % 3) as i32).collect();
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", "deepseek4").unwrap();
    w.add_kv("deepseek4.attention.compress_ratios", vec![0u32, 0, 4, 128])
        .unwrap();
    w.add_kv("tokenizer.ggml.tokens", Value::from(tokens.clone()))
        .unwrap();
    w.add_kv("tokenizer.ggml.token_type", types.clone())
        .unwrap();
    w.add_kv("tokenizer.ggml.merges", Value::from(merges.clone()))
        .unwrap();
    w.add_tensor("output_norm.weight", &[4096], GgmlType::F32)
        .unwrap();
    let bytes = w.write_all(Vec::new(), &[&[0u8; 4 * 4096]]).unwrap();
    assert!(bytes.len() > 5_000_000, "{}", bytes.len());

    let t0 = Instant::now();
    let f = GgufFile::from_bytes(bytes).unwrap();
    let elapsed = t0.elapsed();
    // About 40 ms at the test profile's opt-level 1; the bound leaves room for a loaded machine and an unoptimised build.
    assert!(elapsed.as_millis() < 1000, "parse took {elapsed:?}");
    eprintln!("parsed a {}-byte header in {elapsed:?}", f.data_start());

    let got = f
        .get("tokenizer.ggml.tokens")
        .unwrap()
        .as_str_array()
        .unwrap();
    assert_eq!(got.len(), N_TOKENS);
    assert!(got.iter().zip(&tokens).all(|(a, b)| a == b));
    let got = f
        .get("tokenizer.ggml.merges")
        .unwrap()
        .as_str_array()
        .unwrap();
    assert_eq!(got.len(), N_MERGES);
    assert_eq!(got[N_MERGES - 1], merges[N_MERGES - 1]);
    let got = f
        .get("tokenizer.ggml.token_type")
        .unwrap()
        .as_i64_array()
        .unwrap();
    assert!(got.iter().zip(&types).all(|(&a, &b)| a == b as i64));
    assert_eq!(f.tensor("output_norm.weight").unwrap().offset(), 0);
}
