//! Unicode NFC with Hugging Face's alignments, for `tokenizer.json` files whose normalizer is
//! `NFC` (Qwen2, Qwen2.5, Qwen3 and others).
//!
//! Offsets must come out as `tokenizers` reports them, so the alignment of every normalized
//! char follows its rule exactly: the normalization yields each output char with a change
//! count (`unicode-normalization-alignments`, the crate `tokenizers` itself uses); a char with
//! change `<= 0` stands for the next original char (and `-n` drops the `n` original chars after
//! it, which then belong to no output char), a char with change `> 0` is inserted and shares
//! the alignment of the original byte before it. So `e` + U+0301 becomes `é` aligned with the
//! `e` alone, as HF reports.

use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// `s` in NFC, and for every byte of it the original byte range (offset by `base`) of the char
/// it stands for; `None` when `s` is already in NFC (the alignment is then the identity).
pub(crate) fn nfc_aligned(s: &str, base: usize) -> Option<(String, Vec<(usize, usize)>)> {
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        return None;
    }
    let changes: Vec<(char, isize)> = s.nfc().collect();
    if changes.iter().all(|&(_, n)| n == 0) && changes.iter().map(|p| p.0).eq(s.chars()) {
        return None;
    }
    let orig: Vec<(usize, char)> = s.char_indices().collect();
    let range = |k: usize| {
        let (at, c) = orig[k];
        (base + at, base + at + c.len_utf8())
    };
    let mut out = String::with_capacity(s.len());
    let mut align = Vec::with_capacity(s.len());
    // Index of the next original char not yet stood for or dropped.
    let mut next = 0;
    for (c, change) in changes {
        let a = if change > 0 {
            if next == 0 {
                (base, base)
            } else {
                range(next - 1)
            }
        } else {
            let a = range(next.min(orig.len() - 1));
            next += 1 + change.unsigned_abs();
            a
        };
        out.push(c);
        align.extend(std::iter::repeat_n(a, c.len_utf8()));
    }
    Some((out, align))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_text_is_left_alone() {
        assert_eq!(nfc_aligned("plain ascii", 0), None);
        assert_eq!(nfc_aligned("déjà vu, 한국어", 0), None);
    }

    #[test]
    fn composed_chars_align_with_their_first_original_char() {
        let s = "cafe\u{301}!";
        let (n, al) = nfc_aligned(s, 10).unwrap();
        assert_eq!(n, "café!");
        // `é` (2 bytes) stands for `e` alone; the combining mark is dropped.
        assert_eq!(&al[3..5], &[(13, 14), (13, 14)]);
        assert_eq!(al[5], (16, 17));
        // Hangul jamo compose into one syllable each.
        let s = "\u{1112}\u{1161}\u{11ab}\u{1100}\u{116e}\u{11a8}";
        let (n, al) = nfc_aligned(s, 0).unwrap();
        assert_eq!(n, "한국");
        assert_eq!((al[0], al[3]), ((0, 3), (9, 12)));
    }
}
