//! cl100k family: tiktoken's cl100k_base
//! `'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s`,
//! Llama-3 (and the older cl100k spelling)
//! `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//! and Qwen2 (Llama-3 with single digits).
//!
//! The possessive and greedy spellings agree everywhere except whitespace that runs to the end
//! of the text and contains a line break: cl100k_base's `\s++$` takes the whole run, while
//! Llama-3's `\s*[\r\n]+` stops after the last line break and leaves the trailing spaces to
//! `\s+(?!\S)`.

use super::classes::{is_other, is_word_prefix, Text, LETTER, NUM};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Variant {
    /// `\s++$` comes first among the whitespace alternatives (cl100k_base).
    pub(super) ws_to_end_first: bool,
    /// The `n` of `\p{N}{1,n}` (at least 1).
    pub(super) max_digits: usize,
}

pub(super) const CL100K: Variant = Variant {
    ws_to_end_first: true,
    max_digits: 3,
};
pub(super) const LLAMA3: Variant = Variant {
    ws_to_end_first: false,
    max_digits: 3,
};
pub(super) const QWEN2: Variant = Variant {
    ws_to_end_first: false,
    max_digits: 1,
};

/// End of the match starting at `p` (`p < len`; some alternative always matches at `p`).
#[inline]
pub(super) fn next_end(t: &Text<'_>, p: usize, v: Variant) -> usize {
    let b0 = t.b[p];
    if b0 == b'\'' {
        if let Some(e) = t.contraction_ci(p) {
            return e;
        }
    }
    let (f, n) = t.at(p);
    let is_letter = |f: u8| f & LETTER != 0;
    // `[^\r\n\p{L}\p{N}]?\p{L}+`: possessive or not, the optional prefix can only help when a
    // letter follows it, since the prefix class excludes letters.
    if is_letter(f) {
        return t.run(p + n, is_letter);
    }
    // The char after a prefix char: a letter (prefix + word) or, after an ASCII space, "other".
    let (g, m) = if is_word_prefix(f) && p + n < t.len() {
        t.at(p + n)
    } else {
        (0, 0)
    };
    if is_letter(g) {
        return t.run(p + n + m, is_letter);
    }
    if f & NUM != 0 {
        return t.run_max(p + n, v.max_digits - 1, |f| f & NUM != 0);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    let other_end = if is_other(f) {
        Some(p + n)
    } else if b0 == b' ' && m != 0 && is_other(g) {
        Some(p + 1 + m)
    } else {
        None
    };
    if let Some(s) = other_end {
        let e = t.run(s, is_other);
        return t.run_bytes(e, b"\r\n");
    }
    // Whitespace.
    let r = t.ws_run(p);
    if v.ws_to_end_first && r.end == t.len() {
        return r.end;
    }
    // `\s*[\r\n]+`: `\s*` backtracks from the end of the run to the last line break.
    if let Some(e) = r.newline_end {
        return e;
    }
    // `\s+(?!\S)`, then `\s+` / `\s` for a lone space before a non-space.
    if r.end == t.len() {
        r.end
    } else if r.last > p {
        r.last
    } else {
        p + n
    }
}
