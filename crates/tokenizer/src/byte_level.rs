//! GPT-2 byte-level alphabet (FORMATS.md §5.3).
//!
//! Normal tokens are stored as strings over a 256-symbol alphabet in which every byte
//! value has one printable code point. Decoding maps each symbol back to its byte; the
//! HF pre-tokenizer does the forward mapping during encoding.

/// The code point that stands for `byte` in byte-level token strings.
pub const fn byte_to_char(byte: u8) -> char {
    let b = byte as u32;
    // Printable Latin-1 bytes keep their own code point; the 68 others (0-32,
    // 127-160, 173) are renumbered in increasing order from U+0100.
    let cp = if (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 {
        b
    } else if b <= 32 {
        0x100 + b
    } else if b <= 160 {
        // 127..=160 follow the 33 codes used by 0..=32.
        0x100 + 33 + (b - 127)
    } else {
        // 173 is the last of the 68.
        0x100 + 67
    };
    match char::from_u32(cp) {
        Some(c) => c,
        None => '\u{FFFD}', // unreachable: all values above are valid scalars
    }
}

/// The byte a byte-level symbol stands for, or `None` if `c` is not one of the 256.
pub fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    if (33..=126).contains(&cp) || (161..=172).contains(&cp) || (174..=255).contains(&cp) {
        return Some(cp as u8);
    }
    match cp {
        0x100..=0x120 => Some((cp - 0x100) as u8),
        0x121..=0x142 => Some((cp - 0x121 + 127) as u8),
        0x143 => Some(173),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_from_the_spec() {
        assert_eq!(byte_to_char(0x20), '\u{120}');
        assert_eq!(byte_to_char(0x0A), '\u{10A}');
        assert_eq!(byte_to_char(0x09), '\u{109}');
        assert_eq!(byte_to_char(0x7F), '\u{121}');
        assert_eq!(byte_to_char(0x80), '\u{122}');
        assert_eq!(byte_to_char(0xA0), '\u{142}');
        assert_eq!(byte_to_char(0xAD), '\u{143}');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(0xFF), '\u{FF}');
    }

    #[test]
    fn bijection() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c), "byte {b} maps to a duplicate symbol");
            assert_eq!(char_to_byte(c), Some(b));
        }
        // Nothing outside the 256 symbols decodes.
        let decodable = (0..0x200u32)
            .filter_map(char::from_u32)
            .filter(|&c| char_to_byte(c).is_some())
            .count();
        assert_eq!(decodable, 256);
        assert_eq!(char_to_byte('｜'), None);
    }
}
