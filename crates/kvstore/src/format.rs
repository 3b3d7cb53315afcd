//! The checkpoint file format: encoding, streaming write and verified decoding.
//!
//! See the crate docs for the byte layout. Everything here is pure (no directory policy);
//! the store decides names, locking and eviction.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

/// First eight bytes of every checkpoint file.
pub const MAGIC: [u8; 8] = *b"DSV4KVC\0";
/// Bumped on any layout change; files of another version are invalid (and removed).
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed header that precedes the token ids.
pub const HEADER_LEN: usize = 80;
/// Size of the SHA-256 trailer.
pub const CHECKSUM_LEN: usize = 32;
/// Extension keys are identifiers (tool-call ids and the like), not data.
pub const MAX_EXT_KEY_LEN: usize = 4096;

/// A 32-byte identity of the model the state belongs to (e.g. SHA-256 of the GGUF header).
pub type Fingerprint = [u8; 32];
/// Named side data stored next to the state (e.g. exact tool-call text by tool-call id).
pub type Extensions = BTreeMap<String, Vec<u8>>;

/// The decoded fixed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub fingerprint: Fingerprint,
    pub created_unix: u64,
    pub token_count: u32,
    pub ext_count: u32,
    pub ext_bytes: u64,
    pub payload_len: u64,
}

impl Header {
    /// Total file size this header implies, or None if it overflows (a corrupt header).
    pub fn file_len(&self) -> Option<u64> {
        (HEADER_LEN as u64)
            .checked_add((self.token_count as u64).checked_mul(4)?)?
            .checked_add(self.ext_bytes)?
            .checked_add(self.payload_len)?
            .checked_add(CHECKSUM_LEN as u64)
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 12..16: flags, reserved as zero so a future writer can signal optional features.
        h[16..48].copy_from_slice(&self.fingerprint);
        h[48..56].copy_from_slice(&self.created_unix.to_le_bytes());
        h[56..60].copy_from_slice(&self.token_count.to_le_bytes());
        h[60..64].copy_from_slice(&self.ext_count.to_le_bytes());
        h[64..72].copy_from_slice(&self.ext_bytes.to_le_bytes());
        h[72..80].copy_from_slice(&self.payload_len.to_le_bytes());
        h
    }
}

/// Why a file's bytes are not a valid checkpoint. Every variant means "skip and remove".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("file too short for a header ({0} bytes)")]
    TooShort(u64),
    #[error("bad magic")]
    BadMagic,
    #[error("format version {0}, this build reads {FORMAT_VERSION}")]
    Version(u32),
    #[error("unknown header flags {0:#x}")]
    Flags(u32),
    #[error("header implies {expected:?} bytes, file has {actual}")]
    Length { expected: Option<u64>, actual: u64 },
    #[error("zero tokens")]
    NoTokens,
    #[error("malformed extension section: {0}")]
    Extensions(&'static str),
    #[error("checksum mismatch")]
    Checksum,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4-byte slice"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8-byte slice"))
}

/// Parses and checks the fixed header against the actual file length. Checking the length
/// here (before trusting any count) is what keeps a corrupt header from driving a huge
/// allocation or an out-of-bounds read later.
pub fn parse_header(h: &[u8], file_len: u64) -> Result<Header, FormatError> {
    if h.len() < HEADER_LEN || file_len < (HEADER_LEN + CHECKSUM_LEN) as u64 {
        return Err(FormatError::TooShort(file_len));
    }
    if h[0..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version(version));
    }
    let flags = u32_at(h, 12);
    if flags != 0 {
        return Err(FormatError::Flags(flags));
    }
    let header = Header {
        fingerprint: h[16..48].try_into().expect("32-byte slice"),
        created_unix: u64_at(h, 48),
        token_count: u32_at(h, 56),
        ext_count: u32_at(h, 60),
        ext_bytes: u64_at(h, 64),
        payload_len: u64_at(h, 72),
    };
    if header.token_count == 0 {
        return Err(FormatError::NoTokens);
    }
    let expected = header.file_len();
    if expected != Some(file_len) {
        return Err(FormatError::Length { expected, actual: file_len });
    }
    Ok(header)
}

/// Decodes `n` little-endian u32 token ids.
pub fn decode_tokens(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4-byte chunk"))).collect()
}

/// The content-derived identity of a token prefix under one model: the file name is built
/// from it, so "same prefix" is a name collision and lookup can match by hashing the prompt
/// instead of opening files.
pub fn prefix_hash(fingerprint: &Fingerprint, tokens: &[u32]) -> [u8; 32] {
    let mut h = prefix_hasher(fingerprint);
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    h.finalize().into()
}

/// A hasher primed with the domain tag and fingerprint; feed token ids (LE u32) after it.
pub fn prefix_hasher(fingerprint: &Fingerprint) -> Sha256 {
    let mut h = Sha256::new();
    h.update(b"dsv4-kvstore prefix v1\0");
    h.update(fingerprint);
    h
}

fn ext_section_len(ext: &Extensions) -> Option<u64> {
    ext.iter().try_fold(0u64, |acc, (k, v)| acc.checked_add(12 + k.len() as u64 + v.len() as u64))
}

/// Writes a whole checkpoint to `out`, streaming the payload from `payload` (exactly
/// `payload_len` bytes), and returns the file length. The checksum is computed while
/// writing, so a multi-GB payload is never held twice.
pub fn write_checkpoint<W: Write, R: Read + ?Sized>(
    out: &mut W,
    fingerprint: &Fingerprint,
    created_unix: u64,
    tokens: &[u32],
    ext: &Extensions,
    payload_len: u64,
    payload: &mut R,
) -> io::Result<u64> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    let token_count = u32::try_from(tokens.len()).map_err(|_| invalid("too many tokens"))?;
    let ext_count = u32::try_from(ext.len()).map_err(|_| invalid("too many extensions"))?;
    if ext.keys().any(|k| k.is_empty() || k.len() > MAX_EXT_KEY_LEN) {
        return Err(invalid("extension key empty or too long"));
    }
    let ext_bytes = ext_section_len(ext).ok_or_else(|| invalid("extension section too large"))?;
    let header = Header { fingerprint: *fingerprint, created_unix, token_count, ext_count, ext_bytes, payload_len };
    let total = header.file_len().ok_or_else(|| invalid("checkpoint too large"))?;

    let mut w = HashingWriter { inner: out, hash: Sha256::new() };
    w.write_all(&header.encode())?;
    let mut tok = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        tok.extend_from_slice(&t.to_le_bytes());
    }
    w.write_all(&tok)?;
    for (k, v) in ext {
        w.write_all(&(k.len() as u32).to_le_bytes())?;
        w.write_all(&(v.len() as u64).to_le_bytes())?;
        w.write_all(k.as_bytes())?;
        w.write_all(v)?;
    }
    let copied = io::copy(&mut payload.take(payload_len), &mut w)?;
    if copied != payload_len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("payload reader gave {copied} of {payload_len} bytes"),
        ));
    }
    let digest: [u8; 32] = w.hash.finalize().into();
    w.inner.write_all(&digest)?;
    Ok(total)
}

struct HashingWriter<'a, W: Write> {
    inner: &'a mut W,
    hash: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A fully verified checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub header: Header,
    pub tokens: Vec<u32>,
    pub extensions: Extensions,
    pub payload: Vec<u8>,
}

/// Verifies and decodes a whole file image. The checksum is checked before any section is
/// interpreted, so a flipped byte anywhere is reported as such rather than as a parse error
/// in whatever field it happened to land in.
pub fn decode(mut bytes: Vec<u8>) -> Result<Decoded, FormatError> {
    let header = parse_header(&bytes, bytes.len() as u64)?;
    let body_end = bytes.len() - CHECKSUM_LEN;
    let digest: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
    if digest[..] != bytes[body_end..] {
        return Err(FormatError::Checksum);
    }
    let tok_end = HEADER_LEN + header.token_count as usize * 4;
    let tokens = decode_tokens(&bytes[HEADER_LEN..tok_end]);
    let ext_end = tok_end + header.ext_bytes as usize;
    let extensions = decode_extensions(&bytes[tok_end..ext_end], header.ext_count)?;
    // Reuse the file buffer for the payload instead of copying hundreds of MB.
    bytes.truncate(body_end);
    bytes.drain(..ext_end);
    Ok(Decoded { header, tokens, extensions, payload: bytes })
}

fn decode_extensions(mut b: &[u8], count: u32) -> Result<Extensions, FormatError> {
    let mut out = Extensions::new();
    for _ in 0..count {
        if b.len() < 12 {
            return Err(FormatError::Extensions("entry header past end"));
        }
        let klen = u32_at(b, 0) as usize;
        let vlen = u64_at(b, 4);
        if klen == 0 || klen > MAX_EXT_KEY_LEN {
            return Err(FormatError::Extensions("bad key length"));
        }
        let rest = &b[12..];
        let vlen = usize::try_from(vlen).map_err(|_| FormatError::Extensions("value too long"))?;
        if rest.len() < klen || rest.len() - klen < vlen {
            return Err(FormatError::Extensions("entry past end"));
        }
        let key = std::str::from_utf8(&rest[..klen]).map_err(|_| FormatError::Extensions("key not UTF-8"))?;
        if out.insert(key.to_string(), rest[klen..klen + vlen].to_vec()).is_some() {
            return Err(FormatError::Extensions("duplicate key"));
        }
        b = &rest[klen + vlen..];
    }
    if !b.is_empty() {
        return Err(FormatError::Extensions("trailing bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<u8>, Extensions) {
        let mut ext = Extensions::new();
        ext.insert("call_1".into(), b"<dsml>x</dsml>".to_vec());
        let mut out = Vec::new();
        let payload = b"PAYLOAD!".to_vec();
        let n = write_checkpoint(&mut out, &[7; 32], 1234, &[1, 2, 0xdeadbeef], &ext, 8, &mut &payload[..]).unwrap();
        assert_eq!(n as usize, out.len());
        (out, ext)
    }

    #[test]
    fn layout_bytes() {
        let (b, _) = sample();
        assert_eq!(&b[0..8], b"DSV4KVC\0");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[16..48], &[7; 32]);
        assert_eq!(u64_at(&b, 48), 1234);
        assert_eq!(u32_at(&b, 56), 3);
        assert_eq!(u32_at(&b, 60), 1);
        assert_eq!(u64_at(&b, 64), 12 + 6 + 14);
        assert_eq!(u64_at(&b, 72), 8);
        assert_eq!(&b[80..92], &[1, 0, 0, 0, 2, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(&b[92..96], &[6, 0, 0, 0]);
        assert_eq!(&b[96..104], &[14, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[104..110], b"call_1");
        assert_eq!(&b[110..124], b"<dsml>x</dsml>");
        assert_eq!(&b[124..132], b"PAYLOAD!");
        assert_eq!(b.len(), 132 + 32);
        let d: [u8; 32] = Sha256::digest(&b[..132]).into();
        assert_eq!(&b[132..], &d);
    }

    #[test]
    fn decode_round_trip_and_checksum() {
        let (b, ext) = sample();
        let d = decode(b.clone()).unwrap();
        assert_eq!(d.tokens, vec![1, 2, 0xdeadbeef]);
        assert_eq!(d.extensions, ext);
        assert_eq!(d.payload, b"PAYLOAD!");
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(decode(c).is_err(), "flip at {i} accepted");
        }
        for n in 0..b.len() {
            assert!(decode(b[..n].to_vec()).is_err(), "truncation to {n} accepted");
        }
    }

    #[test]
    fn short_payload_reader_is_an_error() {
        let mut out = Vec::new();
        let r = write_checkpoint(&mut out, &[0; 32], 0, &[1], &Extensions::new(), 10, &mut &b"abc"[..]);
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
