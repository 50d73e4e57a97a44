//! GPT-2's reversible byte <-> unicode-character mapping, used by Hugging Face byte-level BPE
//! files: every byte is written as one printable character so that vocabularies are valid JSON
//! strings. Printable Latin-1 maps to itself; the 68 other bytes map to U+0100.. in byte order.

use std::sync::OnceLock;

struct Tables {
    byte_to_char: [char; 256],
    // Every mapped char is below U+0144, so a small dense table inverts the mapping.
    char_to_byte: [i16; 0x144],
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut byte_to_char = ['\0'; 256];
        let mut char_to_byte = [-1i16; 0x144];
        let mut next = 256u32;
        for b in 0..256u32 {
            let printable = (0x21..=0x7e).contains(&b)
                || (0xa1..=0xac).contains(&b)
                || (0xae..=0xff).contains(&b);
            let cp = if printable {
                b
            } else {
                next += 1;
                next - 1
            };
            let c = char::from_u32(cp).expect("mapped code points are valid chars");
            byte_to_char[b as usize] = c;
            char_to_byte[cp as usize] = b as i16;
        }
        Tables {
            byte_to_char,
            char_to_byte,
        }
    })
}

/// The character that stands for `b` in byte-level vocabularies.
pub fn byte_to_char(b: u8) -> char {
    tables().byte_to_char[b as usize]
}

/// The byte a byte-level character stands for, or `None` for characters outside the alphabet.
pub fn char_to_byte(c: char) -> Option<u8> {
    let t = tables();
    let cp = c as usize;
    if cp < t.char_to_byte.len() && t.char_to_byte[cp] >= 0 {
        Some(t.char_to_byte[cp] as u8)
    } else {
        None
    }
}

/// Decodes a byte-level token string to its bytes; `None` if any char is outside the alphabet.
pub fn decode_token(s: &str) -> Option<Vec<u8>> {
    s.chars().map(char_to_byte).collect()
}

/// Encodes bytes as a byte-level token string.
pub fn encode_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| byte_to_char(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_is_a_bijection_onto_printable_chars() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(
                !c.is_whitespace() && !c.is_control(),
                "byte {b} maps to {c:?}"
            );
            assert!(seen.insert(c));
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(byte_to_char(b' '), '\u{120}');
        assert_eq!(byte_to_char(b'\n'), '\u{10a}');
        assert_eq!(char_to_byte('\u{144}'), None);
    }
}
