//! GPT-2 family: tiktoken's r50k/p50k/gpt2
//! `'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s`
//! and the original GPT-2 / HF ByteLevel
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
//!
//! The two match identically: the possessive quantifiers end their alternatives, so nothing
//! after them could make the engine backtrack into them; `\s++$` only fires on whitespace that
//! runs to the end of the text, which `\s+(?!\S)` also takes whole; and `\s+` is only reached
//! for a single whitespace char before a non-space, where it equals `\s`.

use super::classes::{is_other, Text, LETTER, NUM, WS};

/// End of the match starting at `p` (`p < len`; some alternative always matches at `p`).
#[inline]
pub(super) fn next_end(t: &Text<'_>, p: usize) -> usize {
    if let Some(e) = t.contraction(p) {
        return e;
    }
    let (f, n) = t.at(p);
    // ` ?` attaches a single ASCII space to a following letter/number/other run.
    let (s, g) = if t.b[p] == b' ' {
        match t.flags_at(p + 1) {
            g if g & (LETTER | NUM) != 0 || (p + 1 < t.len() && is_other(g)) => (p + 1, g),
            _ => (p, f),
        }
    } else {
        (p, f)
    };
    if g & LETTER != 0 {
        t.run(s, |f| f & LETTER != 0)
    } else if g & NUM != 0 {
        t.run(s, |f| f & NUM != 0)
    } else if g & WS == 0 {
        t.run(s, is_other)
    } else {
        // Whitespace (and then s == p). At the end of the text the whole run matches; before a
        // non-space `\s+(?!\S)` backtracks one char so the last space can start the next piece,
        // which fails for a run of one char, leaving `\s`.
        let r = t.ws_run(p);
        if r.end == t.len() {
            r.end
        } else if r.last > p {
            r.last
        } else {
            p + n
        }
    }
}
