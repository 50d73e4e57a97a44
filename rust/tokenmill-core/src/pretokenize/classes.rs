//! Character classification for the hand-written scanners.
//!
//! Exactness depends on using precisely the Unicode sets the regex engines use, so the sets are
//! not written out here: they are read from `regex_syntax` (the parser behind both `regex` and
//! fancy-regex's delegates) by parsing `\p{L}` etc. and taking the ranges of the resulting class.
//! When `regex_syntax` updates its Unicode version, the scanners follow automatically.
//!
//! Lookup is one byte of flags per code point: a 128-entry table for ASCII (the hot path) and a
//! two-level table (256-code-point blocks, identical blocks shared) for everything else, built
//! once on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

/// `\s` (Unicode White_Space).
pub(crate) const WS: u8 = 1 << 0;
/// `\p{L}`.
pub(crate) const LETTER: u8 = 1 << 1;
/// `\p{N}`.
pub(crate) const NUM: u8 = 1 << 2;
/// `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`: o200k's "upper-ish" class.
pub(crate) const UPPERISH: u8 = 1 << 3;
/// `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`: o200k's "lower-ish" class.
pub(crate) const LOWERISH: u8 = 1 << 4;
/// `[\r\n]`.
pub(crate) const NEWLINE: u8 = 1 << 5;

/// `[^\s\p{L}\p{N}]`: \s, \p{L} and \p{N} are disjoint, so every character is exactly one of
/// whitespace, letter, number or "other". Note that marks (\p{M}) are "other".
#[inline(always)]
pub(crate) fn is_other(f: u8) -> bool {
    f & (WS | LETTER | NUM) == 0
}

/// `[^\r\n\p{L}\p{N}]`: the optional prefix of cl100k/o200k words (spaces, tabs, punctuation,
/// marks, ... anything but a line break, letter or number).
#[inline(always)]
pub(crate) fn is_word_prefix(f: u8) -> bool {
    f & (NEWLINE | LETTER | NUM) == 0
}

/// The regex sets each flag stands for, in the syntax the engines parse.
const SETS: [(u8, &str); 6] = [
    (WS, r"\s"),
    (LETTER, r"\p{L}"),
    (NUM, r"\p{N}"),
    (UPPERISH, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
    (LOWERISH, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"),
    (NEWLINE, r"[\r\n]"),
];

const BLOCK_BITS: u32 = 8;
const BLOCK_LEN: usize = 1 << BLOCK_BITS;

pub(crate) struct Tables {
    ascii: [u8; 128],
    /// Block number for each 256-code-point block of the code space.
    index: Box<[u16]>,
    /// Concatenated distinct blocks.
    blocks: Box<[u8]>,
}

impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("distinct_blocks", &(self.blocks.len() / BLOCK_LEN))
            .finish()
    }
}

/// The code point ranges of a regex that denotes a single Unicode character class.
pub(crate) fn class_ranges(re: &str) -> Vec<(char, char)> {
    let hir = regex_syntax::Parser::new()
        .parse(re)
        .unwrap_or_else(|e| panic!("built-in class {re:?} does not parse: {e}"));
    match hir.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            c.ranges().iter().map(|r| (r.start(), r.end())).collect()
        }
        other => panic!("built-in class {re:?} is not a Unicode class: {other:?}"),
    }
}

impl Tables {
    fn build() -> Tables {
        let mut flat = vec![0u8; 0x11_0000];
        for (flag, re) in SETS {
            for (lo, hi) in class_ranges(re) {
                for f in &mut flat[lo as usize..=hi as usize] {
                    *f |= flag;
                }
            }
        }
        let mut ascii = [0u8; 128];
        ascii.copy_from_slice(&flat[..128]);

        let mut seen: HashMap<&[u8], u16> = HashMap::new();
        let mut index = Vec::with_capacity(flat.len() / BLOCK_LEN);
        let mut blocks = Vec::new();
        for block in flat.chunks(BLOCK_LEN) {
            let next = seen.len() as u16;
            let id = *seen.entry(block).or_insert_with(|| {
                blocks.extend_from_slice(block);
                next
            });
            index.push(id);
        }
        Tables {
            ascii,
            index: index.into(),
            blocks: blocks.into(),
        }
    }

    /// Which flag values (each below 64) the Unicode scalar values in `lo..=hi` have: each
    /// distinct 256-code-point block is read once (a plane of rare scripts is mostly a few
    /// blocks repeated), surrogates are skipped.
    pub(crate) fn flags_in(&self, lo: u32, hi: u32) -> [bool; 64] {
        let mut out = [false; 64];
        let mut read = vec![false; self.blocks.len() / BLOCK_LEN];
        let mut cp = lo;
        while cp <= hi.min(0x10_FFFF) {
            if (0xD800..=0xDFFF).contains(&cp) {
                cp = 0xE000;
                continue;
            }
            let block_end = cp | (BLOCK_LEN as u32 - 1);
            if cp & (BLOCK_LEN as u32 - 1) == 0 && block_end <= hi {
                let id = self.index[(cp >> BLOCK_BITS) as usize] as usize;
                if !read[id] {
                    read[id] = true;
                    for &f in &self.blocks[id << BLOCK_BITS..(id + 1) << BLOCK_BITS] {
                        out[f as usize] = true;
                    }
                }
                cp = block_end + 1;
            } else {
                out[self.of_char(cp) as usize] = true;
                cp += 1;
            }
        }
        out
    }

    /// Flags of a code point.
    #[inline(always)]
    pub(crate) fn of_char(&self, cp: u32) -> u8 {
        let block = self.index[(cp >> BLOCK_BITS) as usize] as usize;
        self.blocks[(block << BLOCK_BITS) | (cp as usize & (BLOCK_LEN - 1))]
    }
}

/// The shared tables, built on first use (a few milliseconds).
pub(crate) fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(Tables::build)
}

/// A text being scanned: the bytes of a `&str` (so always valid UTF-8, and every position the
/// scanners hold is a char boundary) plus the tables.
#[derive(Clone, Copy)]
pub(crate) struct Text<'a> {
    pub(crate) b: &'a [u8],
    t: &'static Tables,
}

/// A maximal run of whitespace, with what the whitespace alternatives need to know about it.
pub(crate) struct WsRun {
    /// End of the run: the text's end or the start of a non-space.
    pub(crate) end: usize,
    /// Start of the run's last character (the one `\s+(?!\S)` gives back).
    pub(crate) last: usize,
    /// Just past the run's last `\r` or `\n`, if it has one (where `\s*[\r\n]+` ends).
    pub(crate) newline_end: Option<usize>,
}

impl<'a> Text<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Text {
            b: text.as_bytes(),
            t: tables(),
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.b.len()
    }

    /// Flags and UTF-8 length of the char starting at `i` (`i < len`, on a char boundary).
    #[inline(always)]
    pub(crate) fn at(&self, i: usize) -> (u8, usize) {
        let b = self.b;
        let b0 = b[i];
        if b0 < 0x80 {
            return (self.t.ascii[b0 as usize], 1);
        }
        // The input is a &str, so the continuation bytes exist and the sequence is well formed.
        let (cp, n) = if b0 < 0xE0 {
            (((b0 as u32 & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            (
                ((b0 as u32 & 0x0F) << 12)
                    | ((b[i + 1] as u32 & 0x3F) << 6)
                    | (b[i + 2] as u32 & 0x3F),
                3,
            )
        } else {
            (
                ((b0 as u32 & 0x07) << 18)
                    | ((b[i + 1] as u32 & 0x3F) << 12)
                    | ((b[i + 2] as u32 & 0x3F) << 6)
                    | (b[i + 3] as u32 & 0x3F),
                4,
            )
        };
        (self.t.of_char(cp), n)
    }

    /// Flags of the char at `i`, or 0 (no class at all) at the end of the text.
    #[inline(always)]
    pub(crate) fn flags_at(&self, i: usize) -> u8 {
        if i < self.b.len() {
            self.at(i).0
        } else {
            0
        }
    }

    /// End of the maximal run, starting at `i`, of chars whose flags satisfy `pred`.
    #[inline(always)]
    pub(crate) fn run(&self, mut i: usize, pred: impl Fn(u8) -> bool) -> usize {
        while i < self.b.len() {
            let (f, n) = self.at(i);
            if !pred(f) {
                break;
            }
            i += n;
        }
        i
    }

    /// Like [`Text::run`] but for at most `max` chars (`\p{N}{1,3}`).
    #[inline(always)]
    pub(crate) fn run_max(&self, mut i: usize, max: usize, pred: impl Fn(u8) -> bool) -> usize {
        for _ in 0..max {
            if i >= self.b.len() {
                break;
            }
            let (f, n) = self.at(i);
            if !pred(f) {
                break;
            }
            i += n;
        }
        i
    }

    /// End of the maximal run of bytes from `set` starting at `i` (ASCII sets only).
    #[inline(always)]
    pub(crate) fn run_bytes(&self, mut i: usize, set: &[u8]) -> usize {
        while i < self.b.len() && set.contains(&self.b[i]) {
            i += 1;
        }
        i
    }

    /// The whitespace run starting at `i` (`i` must be whitespace).
    #[inline]
    pub(crate) fn ws_run(&self, mut i: usize) -> WsRun {
        let mut last = i;
        let mut newline_end = None;
        while i < self.b.len() {
            let (f, n) = self.at(i);
            if f & WS == 0 {
                break;
            }
            if f & NEWLINE != 0 {
                newline_end = Some(i + 1);
            }
            last = i;
            i += n;
        }
        WsRun {
            end: i,
            last,
            newline_end,
        }
    }

    /// `'(?:[sdmt]|ll|ve|re)` at `i` (case-sensitive, GPT-2 family): end of the match.
    #[inline]
    pub(crate) fn contraction(&self, i: usize) -> Option<usize> {
        let b = self.b;
        if b.get(i) != Some(&b'\'') {
            return None;
        }
        match (b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (Some(b's' | b'd' | b'm' | b't'), _) => Some(i + 2),
            (Some(b'l'), Some(b'l')) | (Some(b'v' | b'r'), Some(b'e')) => Some(i + 3),
            _ => None,
        }
    }

    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` at `i`: end of the match.
    #[inline]
    pub(crate) fn contraction_ci(&self, i: usize) -> Option<usize> {
        if self.b.get(i) != Some(&b'\'') {
            return None;
        }
        let (c1, e1) = self.folded(i + 1)?;
        match c1 {
            b's' | b'd' | b'm' | b't' => Some(e1),
            b'l' | b'v' | b'r' => {
                let (c2, e2) = self.folded(e1)?;
                let ok = match c1 {
                    b'l' => c2 == b'l',
                    _ => c2 == b'e',
                };
                ok.then_some(e2)
            }
            _ => None,
        }
    }

    /// The char at `i` mapped to the ASCII lowercase letter it case-folds with, for the letters
    /// of the contractions, plus the end of the char. Under Unicode simple case folding the only
    /// non-ASCII char equivalent to one of `s t r e v m l d` is U+017F LATIN SMALL LETTER LONG S
    /// (~ `s`); U+212A KELVIN SIGN folds to `k`, which no contraction uses. The tests check this
    /// against regex_syntax's folding.
    #[inline(always)]
    fn folded(&self, i: usize) -> Option<(u8, usize)> {
        let b = self.b;
        let c = *b.get(i)?;
        if c < 0x80 {
            Some((c.to_ascii_lowercase(), i + 1))
        } else if c == 0xC5 && b.get(i + 1) == Some(&0xBF) {
            Some((b's', i + 2))
        } else {
            None
        }
    }
}
