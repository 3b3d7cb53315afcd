//! Streaming detokenization.

use std::sync::Arc;

use crate::Tokenizer;

/// A borrowed tokenizer, or a shared one for a decoder that outlives any borrow (a job
/// handed between threads).
#[derive(Debug)]
enum TokRef<'a> {
    Borrowed(&'a Tokenizer),
    Shared(Arc<Tokenizer>),
}

/// Turns a stream of token ids into text, emitting only complete UTF-8.
///
/// A token may end in the middle of a multi-byte character (byte-level BPE splits
/// CJK and emoji across tokens), so the trailing bytes that could still become a
/// valid character are held back until the next token arrives. Bytes that can never
/// become valid (the decoder knows as soon as the offending byte is seen) are emitted
/// as one U+FFFD per maximal invalid sequence, exactly as
/// `String::from_utf8_lossy` would over the whole stream; so the concatenated output
/// always equals `decode_lossy` of all ids.
#[derive(Debug)]
pub struct IncrementalDecoder<'a> {
    tokenizer: TokRef<'a>,
    pending: Vec<u8>,
}

impl IncrementalDecoder<'static> {
    /// A decoder holding its own reference to the tokenizer.
    pub fn shared(tokenizer: Arc<Tokenizer>) -> Self {
        IncrementalDecoder { tokenizer: TokRef::Shared(tokenizer), pending: Vec::new() }
    }
}

impl<'a> IncrementalDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        IncrementalDecoder {
            tokenizer: TokRef::Borrowed(tokenizer),
            pending: Vec::new(),
        }
    }

    /// Feed one id; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        // Field by field: the tokenizer is read while the pending bytes grow.
        let tok: &Tokenizer = match &self.tokenizer {
            TokRef::Borrowed(t) => t,
            TokRef::Shared(t) => t,
        };
        self.pending.extend_from_slice(tok.token_bytes(id).unwrap_or("\u{FFFD}".as_bytes()));
        self.drain(false)
    }

    /// End of stream: returns what was held back, an unfinished character as U+FFFD.
    /// The decoder is empty afterwards and can be reused.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Number of bytes held back (at most 3).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    fn drain(&mut self, at_end: bool) -> String {
        let p = &self.pending;
        let mut out = String::new();
        let mut start = 0;
        while start < p.len() {
            match std::str::from_utf8(&p[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = p.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Already validated by from_utf8, so lossy conversion replaces nothing.
                    out.push_str(&String::from_utf8_lossy(&p[start..start + valid]));
                    start += valid;
                    match e.error_len() {
                        // Invalid whatever follows: replace it now.
                        Some(n) => {
                            out.push('\u{FFFD}');
                            start += n;
                        }
                        // A valid prefix of a character cut by the end of the buffer.
                        None => {
                            if at_end {
                                out.push('\u{FFFD}');
                                start = p.len();
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }
}
