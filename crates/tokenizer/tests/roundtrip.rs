//! Property tests: encoding is lossless and streaming decoding yields valid, complete text.

mod common;

use common::tokenizer;
use dsv4_tokenizer::{byte_to_char, ASSISTANT_TOKEN, DSML_TOKEN, THINK_TOKEN, USER_TOKEN};
use proptest::prelude::*;

/// Strings biased towards what breaks tokenizers: multi-byte characters, whitespace
/// kinds, digits of several scripts, added-token strings and fragments of them.
fn text() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => "[a-zA-Z]{1,8}",
        2 => prop::sample::select(vec![" ", "  ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "\u{2003}", "\u{85}", "\u{b}"]).prop_map(String::from),
        1 => prop::sample::select(vec!["1", "123", "4567", "٣", "０", "½", "①"]).prop_map(String::from),
        1 => prop::sample::select(vec!["中文", "ひらがな", "カタカナ", "한국어", "😀", "👨‍👩‍👧", "🇮🇹", "e\u{301}"]).prop_map(String::from),
        1 => prop::sample::select(vec![USER_TOKEN, ASSISTANT_TOKEN, THINK_TOKEN, DSML_TOKEN, "<｜", "｜>", "</", "<think"]).prop_map(String::from),
        1 => "[!-/:-@\\[-`{-~]{1,4}",
    ];
    prop::collection::vec(atom, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_encode_roundtrips(s in text()) {
        let tok = tokenizer();
        prop_assert_eq!(tok.decode(&tok.encode(&s)), s.as_bytes());
        prop_assert_eq!(tok.decode(&tok.encode_with_special(&s)), s.as_bytes());
        // Plain encoding never yields an added token.
        prop_assert!(tok.encode(&s).iter().all(|&id| !tok.is_added(id)));
    }

    #[test]
    fn incremental_decoder_reproduces_text(s in text()) {
        let tok = tokenizer();
        let mut dec = tok.incremental_decoder();
        let mut out = String::new();
        for id in tok.encode(&s) {
            out.push_str(&dec.push(id));
            prop_assert!(dec.pending_len() <= 3);
        }
        out.push_str(&dec.finish());
        prop_assert_eq!(out, s);
    }

    /// Arbitrary id streams (single-byte tokens mixed in, so characters get cut and
    /// invalid sequences appear): the chunks are what `decode_lossy` gives for the whole.
    #[test]
    fn incremental_decoder_equals_lossy_decode(ids in prop::collection::vec(
        prop_oneof![
            3 => any::<u8>().prop_map(byte_id),
            1 => 0u32..129_300,
        ], 0..40)) {
        let tok = tokenizer();
        let mut dec = tok.incremental_decoder();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&dec.push(id));
            prop_assert!(dec.pending_len() <= 3);
        }
        out.push_str(&dec.finish());
        prop_assert_eq!(dec.pending_len(), 0);
        prop_assert_eq!(out, tok.decode_lossy(&ids));
    }
}

fn byte_id(b: u8) -> u32 {
    tokenizer()
        .token_to_id(&byte_to_char(b).to_string())
        .expect("byte token")
}

fn feed(bytes: &[u8]) -> Vec<String> {
    let tok = tokenizer();
    let mut dec = tok.incremental_decoder();
    let mut chunks: Vec<String> = bytes.iter().map(|&b| dec.push(byte_id(b))).collect();
    chunks.push(dec.finish());
    chunks
}

#[test]
fn incremental_decoder_holds_back_partial_characters() {
    // "é" = C3 A9, "中" = E4 B8 AD, "😀" = F0 9F 98 80.
    assert_eq!(feed(&[0xC3, 0xA9]), ["", "é", ""]);
    assert_eq!(feed("a中b".as_bytes()), ["a", "", "", "中", "b", ""]);
    assert_eq!(feed("😀".as_bytes()), ["", "", "", "😀", ""]);
}

#[test]
fn incremental_decoder_replaces_what_can_never_complete() {
    // 0xFF is never valid: replaced at once, not held.
    assert_eq!(feed(&[0xFF, b'a']), ["\u{FFFD}", "a", ""]);
    // A lead byte followed by a non-continuation: the lead byte is replaced when the
    // second byte shows it cannot complete, and the second byte is emitted normally.
    assert_eq!(feed(&[0xE4, b'x']), ["", "\u{FFFD}x", ""]);
    // Truncated at end of stream: one U+FFFD for the whole unfinished character.
    assert_eq!(feed(&[b'a', 0xE4, 0xB8]), ["a", "", "", "\u{FFFD}"]);
    // A stray continuation byte.
    assert_eq!(feed(&[0x80]), ["\u{FFFD}", ""]);
    // Out-of-range id.
    let tok = tokenizer();
    let mut dec = tok.incremental_decoder();
    assert_eq!(dec.push(u32::MAX), "\u{FFFD}");
    assert_eq!(tok.decode(&[u32::MAX]), "\u{FFFD}".as_bytes());
}

#[test]
fn decode_returns_raw_bytes_of_split_characters() {
    let tok = tokenizer();
    assert_eq!(tok.decode(&[byte_id(0xE4)]), [0xE4]);
    assert_eq!(tok.decode_lossy(&[byte_id(0xE4)]), "\u{FFFD}");
}
