//! Official prompt token counts: `usage.prompt_tokens` of the DeepSeek API for the five
//! shared test prompts, rendered as one user message with thinking disabled
//! (FORMATS §5.2): BOS, `<｜User｜>`, prompt, `<｜Assistant｜>`, `</think>`.

mod common;

use std::path::{Path, PathBuf};

/// `shared/test-vectors` lives beside the repository root in a checkout (and at
/// /work/shared on development machines); worktrees sit deeper, so walk up.
fn find_test_vectors() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|dir| dir.join("shared/test-vectors"))
        .chain(std::iter::once(PathBuf::from("/work/shared/test-vectors")))
        .find(|p| p.join("official").is_dir() && p.join("prompts").is_dir())
}

/// The directory, or `None` (skip) outside CI; in CI a missing directory fails.
fn test_vectors_or_skip() -> Option<PathBuf> {
    let found = find_test_vectors();
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "shared/test-vectors not found (required when CI is set)"
        );
        println!("SKIPPED: shared/test-vectors not found beside the repository or at /work/shared");
    }
    found
}

fn official_vectors(dir: &Path) -> Vec<serde_json::Value> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("official"))
        .expect("read official/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".official.json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            serde_json::from_slice(&std::fs::read(p).expect("read vector")).expect("parse vector")
        })
        .collect()
}

#[test]
fn official_prompt_token_counts() {
    let Some(dir) = test_vectors_or_skip() else {
        return;
    };
    let tok = common::tokenizer();
    let s = tok.specials();
    let mut checked = Vec::new();
    for json in official_vectors(&dir) {
        let id = json["id"].as_str().expect("id");
        let want = json["usage"]["prompt_tokens"]
            .as_u64()
            .expect("usage.prompt_tokens") as usize;
        let prompt = std::fs::read_to_string(dir.join("prompts").join(format!("{id}.txt")))
            .expect("read prompt");

        let mut ids = vec![s.bos, s.user];
        ids.extend(tok.encode(&prompt));
        ids.extend([s.assistant, s.think_end]);
        assert_eq!(
            ids.len(),
            want,
            "{id}: rendered prompt has {} tokens, the API counted {want}",
            ids.len()
        );

        // The same prompt rendered as text and tokenized with added-token matching
        // (how HF would see the chat template's output) agrees.
        let rendered = format!("<｜begin▁of▁sentence｜><｜User｜>{prompt}<｜Assistant｜></think>");
        assert_eq!(tok.encode_with_special(&rendered), ids, "{id}");
        checked.push((id.to_owned(), want));
    }
    checked.sort_by_key(|c| c.1);
    let counts: Vec<usize> = checked.iter().map(|c| c.1).collect();
    assert_eq!(counts, [18, 21, 27, 3353, 3844], "{checked:?}");
    println!("official prompt token counts match: {checked:?}");
}

/// Every token the API reported (chosen and top-20 alternatives, as bytes) is one
/// token of this vocabulary: the official model's output vocabulary is ours. Only EOS
/// is reported under another spelling, `<｜｜end▁of▁sentence｜｜>`.
#[test]
fn official_output_tokens_are_single_vocabulary_tokens() {
    let Some(dir) = test_vectors_or_skip() else {
        return;
    };
    let tok = common::tokenizer();
    let mut n = 0;
    let mut eos_spelled_by_api = 0;
    for json in official_vectors(&dir) {
        for step in json["steps"].as_array().expect("steps") {
            let alts = step["top_logprobs"].as_array().expect("top_logprobs");
            for t in std::iter::once(&step["token"]).chain(alts.iter().map(|a| &a["token"])) {
                let bytes: Vec<u8> = t["bytes"]
                    .as_array()
                    .expect("bytes")
                    .iter()
                    .map(|b| b.as_u64().expect("byte") as u8)
                    .collect();
                // The API spells the end-of-sentence token with doubled bars; it is the
                // EOS alternative (id 1) in every vector where it appears.
                if bytes == "<｜｜end▁of▁sentence｜｜>".as_bytes() {
                    eos_spelled_by_api += 1;
                    continue;
                }
                let piece: String = bytes
                    .iter()
                    .map(|&b| dsv4_tokenizer::byte_to_char(b))
                    .collect();
                let id = tok.token_to_id(&piece);
                assert!(
                    id.is_some(),
                    "{}: official token {:?} is not in the vocabulary",
                    json["id"],
                    t["text"]
                );
                assert_eq!(tok.token_bytes(id.unwrap_or(0)), Some(&bytes[..]));
                n += 1;
            }
        }
    }
    assert!(n > 100, "only {n} official tokens checked");
    println!(
        "{n} official output tokens found in the vocabulary ({eos_spelled_by_api} more were the API's EOS spelling)"
    );
}
