//! Malformed vocabularies are rejected with a specific error, never a panic; a small
//! well-formed one encodes as its merges dictate.

use dsv4_tokenizer::{byte_to_char, Tokenizer, TokenizerError};

const SPECIALS: [&str; 7] = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "｜DSML｜",
];

/// 256 byte symbols (ids 0..256), three merged tokens, then the seven specials.
fn mini() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_to_char(b).to_string()).collect();
    tokens.extend(["ab", "abc", "Ġab"].map(String::from)); // 256, 257, 258
    let mut types = vec![1; tokens.len()];
    for (i, s) in SPECIALS.iter().enumerate() {
        tokens.push(s.to_string()); // 259..266
        types.push(if i < 4 { 3 } else { 4 });
    }
    let merges = ["a b", "ab c", "Ġ ab"].map(String::from).to_vec();
    (tokens, merges, types)
}

fn build(t: &[String], m: &[String], ty: &[i32]) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_vocab(t, m, ty)
}

#[test]
fn mini_vocabulary_encodes_by_its_merges() {
    let (t, m, ty) = mini();
    let tok = build(&t, &m, &ty).expect("mini vocab builds");
    assert_eq!(tok.vocab_size(), 266);
    assert_eq!(tok.encode("abc ab"), [257, 258]);
    // "abd": the `ab` merge applies, `d` stays a byte symbol.
    assert_eq!(tok.encode("abd"), [256, b'd' as u32]);
    assert_eq!(tok.encode_with_special("<think>ab"), [263, 256]);
    assert_eq!(tok.encode("<think>").len(), 7);
    let s = tok.specials();
    assert_eq!(
        [
            s.bos,
            s.eos,
            s.user,
            s.assistant,
            s.think,
            s.think_end,
            s.dsml
        ],
        [259, 260, 261, 262, 263, 264, 265]
    );
    assert_eq!(tok.decode(&tok.encode("é ü")), "é ü".as_bytes());
}

#[test]
fn empty_and_mismatched_arrays() {
    let (t, m, ty) = mini();
    assert!(matches!(
        build(&[], &m, &[]),
        Err(TokenizerError::EmptyVocab)
    ));
    assert!(matches!(
        build(&t, &m, &ty[1..]),
        Err(TokenizerError::LengthMismatch {
            tokens: 266,
            token_types: 265
        })
    ));
}

#[test]
fn bad_tokens() {
    let (t, m, ty) = mini();

    let mut t2 = t.clone();
    t2[257] = String::new();
    assert!(matches!(
        build(&t2, &m, &ty),
        Err(TokenizerError::EmptyToken { id: 257 })
    ));

    let mut t2 = t.clone();
    t2[258] = "ab".into();
    let e = build(&t2, &m, &ty).unwrap_err();
    assert!(
        matches!(
            e,
            TokenizerError::DuplicateToken {
                id: 258,
                first: 256,
                ..
            }
        ),
        "{e}"
    );

    for bad in [0, 7, -1, 100] {
        let mut ty2 = ty.clone();
        ty2[100] = bad;
        let e = build(&t, &m, &ty2).unwrap_err();
        assert!(
            matches!(e, TokenizerError::InvalidTokenType { id: 100, token_type, .. } if token_type == bad),
            "{e}"
        );
    }

    // A normal token must be byte-level, or it could not be decoded to bytes.
    let mut t2 = t.clone();
    t2[257] = "a｜c".into();
    let e = build(&t2, &m, &ty).unwrap_err();
    assert!(
        matches!(
            e,
            TokenizerError::NotByteLevel {
                id: 257,
                ch: '｜',
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("U+FF5C"), "{e}");
}

#[test]
fn every_byte_needs_a_symbol() {
    let (t, m, ty) = mini();
    // Byte 0x41 'A' replaced by an unrelated token: text with 'A' could not be encoded.
    let mut t2 = t.clone();
    t2[b'A' as usize] = "zz".into();
    let e = build(&t2, &m, &ty).unwrap_err();
    assert!(
        matches!(
            e,
            TokenizerError::MissingByteSymbol {
                byte: b'A',
                symbol: 'A'
            }
        ),
        "{e}"
    );
    // Present only as an added token is not enough: BPE looks symbols up as normal tokens.
    let mut ty2 = ty.clone();
    ty2[b'A' as usize] = 3;
    assert!(matches!(
        build(&t, &m, &ty2),
        Err(TokenizerError::MissingByteSymbol { byte: b'A', .. })
    ));
}

#[test]
fn bad_merges() {
    let (t, m, ty) = mini();
    for bad in ["ab", "a  b", " a", "a ", "a b c", ""] {
        let mut m2 = m.clone();
        m2[1] = bad.into();
        let e = build(&t, &m2, &ty).unwrap_err();
        assert!(
            matches!(&e, TokenizerError::MalformedMerge { rank: 1, merge } if merge == bad),
            "{bad:?}: {e}"
        );
    }
    let mut m2 = m.clone();
    m2.push("q ab".into()); // parts exist, result "qab" does not
    let e = build(&t, &m2, &ty).unwrap_err();
    assert!(
        matches!(&e, TokenizerError::MergeOutOfVocab { rank: 3, part, .. } if part == "qab"),
        "{e}"
    );
    // A merge producing an added token would let plain text encode to it.
    let mut ty2 = ty.clone();
    ty2[257] = 4; // "abc", the result of merge 1 "ab c", declared user-defined
    let e = build(&t, &m, &ty2).unwrap_err();
    assert!(
        matches!(
            &e,
            TokenizerError::MergeYieldsAddedToken {
                rank: 1,
                id: 257,
                ..
            }
        ),
        "{e}"
    );
    let mut m2 = m.clone();
    m2.push("xyz ab".into());
    let e = build(&t, &m2, &ty).unwrap_err();
    assert!(
        matches!(&e, TokenizerError::MergeOutOfVocab { rank: 3, part, .. } if part == "xyz"),
        "{e}"
    );
}

#[test]
fn specials_are_required_by_string() {
    let (t, m, ty) = mini();
    for (i, s) in SPECIALS.iter().enumerate() {
        let mut t2 = t.clone();
        t2[259 + i] = format!("{s}x");
        let e = build(&t2, &m, &ty).unwrap_err();
        assert!(
            matches!(e, TokenizerError::MissingSpecial { token, .. } if token == *s),
            "{e}"
        );
    }
}

#[test]
fn arbitrary_garbage_never_panics() {
    // Cheap fuzz over small hand-made vocabularies: whatever the input, an Ok or an Err.
    let (t, m, ty) = mini();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let (mut t2, mut m2, mut ty2) = (t.clone(), m.clone(), ty.clone());
        match next() % 4 {
            0 => {
                t2[(next() % 266) as usize] = char::from_u32((next() % 0x11_0000) as u32)
                    .unwrap_or('x')
                    .to_string()
            }
            1 => ty2[(next() % 266) as usize] = (next() % 9) as i32 - 1,
            2 => m2.push(format!(
                "{} {}",
                t[(next() % 266) as usize],
                t[(next() % 266) as usize]
            )),
            _ => {
                t2.truncate((next() % 267) as usize);
                ty2.truncate(t2.len());
            }
        }
        if let Ok(tok) = build(&t2, &m2, &ty2) {
            let s = "abc ab <think> é";
            assert_eq!(tok.decode(&tok.encode(s)), s.as_bytes());
        }
    }
}
