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
    let b0 = t.b[p];
    if b0 == b'\'' {
        if let Some(e) = t.contraction(p) {
            return e;
        }
    }
    let (f, n) = t.at(p);
    // ` ?` attaches a single ASCII space to a following letter, number or "other" run, that
    // is to anything but whitespace.
    let (g, next) = if b0 == b' ' && p + 1 < t.len() {
        match t.at(p + 1) {
            (g, m) if g & WS == 0 => (g, p + 1 + m),
            _ => (f, p + n),
        }
    } else {
        (f, p + n)
    };
    if g & LETTER != 0 {
        t.run(next, |f| f & LETTER != 0)
    } else if g & NUM != 0 {
        t.run(next, |f| f & NUM != 0)
    } else if g & WS == 0 {
        t.run(next, is_other)
    } else {
        // Whitespace (and then `p` starts it). At the end of the text the whole run matches;
        // before a non-space `\s+(?!\S)` backtracks one char so the last space can start the
        // next piece, which fails for a run of one char, leaving `\s`.
        let r = t.ws_run(p);
        if r.end == t.len() {
            r.end
        } else if r.last > p {
            r.last
        } else {
            next
        }
    }
}
