//! Token-for-token parity with HF `tokenizers` on the golden strings produced by
//! `tools/reference/gen_tokenizer_golden.py`.

mod common;

use common::{describe_mismatch, golden, tokenizer};

fn check(
    what: &str,
    encode: impl Fn(&str) -> Vec<u32>,
    want: impl Fn(&common::GoldenCase) -> &[u32],
) {
    let tok = tokenizer();
    let g = golden();
    let mut failures = Vec::new();
    for (i, c) in g.cases.iter().enumerate() {
        let got = encode(&c.text);
        if got != want(c) {
            failures.push(describe_mismatch(
                tok,
                what,
                i,
                &c.cat,
                &c.text,
                &got,
                want(c),
            ));
        }
    }
    println!(
        "{what}: {} strings compared with HF tokenizers {}, {} mismatches",
        g.cases.len(),
        g.tokenizers,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} strings differ from HF; first ones:\n{}",
        failures.len(),
        g.cases.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn golden_file_is_for_this_vocabulary_and_large_enough() {
    let g = golden();
    assert_eq!(
        g.tokenizer_json_sha256,
        dsv4_tokenizer::BUNDLED_TOKENIZER_JSON_SHA256
    );
    assert!(
        g.cases.len() >= 2000,
        "only {} golden strings",
        g.cases.len()
    );
    // The plain/special split must actually be exercised.
    assert!(g.cases.iter().filter(|c| c.plain.is_some()).count() > 1000);
}

#[test]
fn encode_with_special_matches_hf() {
    let tok = tokenizer();
    check(
        "encode_with_special",
        |s| tok.encode_with_special(s),
        |c| &c.special,
    );
}

#[test]
fn encode_matches_hf_without_added_tokens() {
    let tok = tokenizer();
    check(
        "encode",
        |s| tok.encode(s),
        |c| c.plain.as_deref().unwrap_or(&c.special),
    );
}

#[test]
fn decode_inverts_both_encoders() {
    let tok = tokenizer();
    for (i, c) in golden().cases.iter().enumerate() {
        assert_eq!(
            tok.decode(&tok.encode(&c.text)),
            c.text.as_bytes(),
            "case #{i} [{}] {:?}",
            c.cat,
            c.text
        );
        assert_eq!(
            tok.decode(&c.special),
            c.text.as_bytes(),
            "case #{i} [{}] {:?}",
            c.cat,
            c.text
        );
        assert_eq!(tok.decode_lossy(&c.special), c.text);
    }
}

#[test]
fn incremental_decoder_reproduces_each_golden_text() {
    let tok = tokenizer();
    for (i, c) in golden().cases.iter().enumerate() {
        let mut dec = tok.incremental_decoder();
        let mut out = String::new();
        for &id in &c.special {
            out.push_str(&dec.push(id));
            assert!(
                dec.pending_len() <= 3,
                "case #{i}: {} bytes held back",
                dec.pending_len()
            );
        }
        out.push_str(&dec.finish());
        assert_eq!(out, c.text, "case #{i} [{}]", c.cat);
    }
}

/// The GGUF's token types could also have been written from the HF `special` flag
/// alone (53 user-defined tokens instead of llama.cpp's 6). Encoding must not depend
/// on which: the flag only matters for HF's skip-special decoding, which is unused.
#[test]
fn encoding_does_not_depend_on_control_vs_user_defined() {
    let json: serde_json::Value =
        serde_json::from_slice(&dsv4_tokenizer::bundled_tokenizer_json()).expect("json");
    let v = dsv4_tokenizer::VocabData::bundled();
    let mut types = v.token_types.clone();
    let mut changed = 0;
    for t in json["added_tokens"].as_array().expect("added_tokens") {
        let id = t["id"].as_u64().expect("id") as usize;
        let want = if t["special"].as_bool().expect("special") {
            3
        } else {
            4
        };
        if types[id] != want {
            types[id] = want;
            changed += 1;
        }
    }
    assert_eq!(
        changed, 47,
        "tokens that look special but are not marked special"
    );
    let alt = dsv4_tokenizer::Tokenizer::from_vocab(&v.tokens, &v.merges, &types).expect("build");
    for (i, c) in golden().cases.iter().enumerate() {
        assert_eq!(
            alt.encode_with_special(&c.text),
            c.special,
            "case #{i} [{}] {:?}",
            c.cat,
            c.text
        );
    }
}
