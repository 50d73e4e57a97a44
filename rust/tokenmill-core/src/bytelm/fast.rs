//! A fast exact rejection for the marginalisation loop, where one node meets every token.
//!
//! Two adjacent tokens `a t` of a canonical encoding either straddle a pre-token boundary or
//! lie in one piece; in one piece they are a *canonical pair*: the merge loop on their bytes
//! alone gives `[a, t]` back (a contiguous run of a BPE encoding is the BPE encoding of its
//! bytes, because the merges inside the run happen in the same order with or without the
//! context, and none crosses its edges; the whole-piece lookup of `ignore_merges` tokenizers
//! does not apply to a run of two or more tokens, so the test uses the merge loop alone). So
//! when `a t` is not a canonical pair, the path is valid only if some extension puts a piece
//! boundary between them. Whether the pre-tokenizer can cut there depends on the text before
//! the cut and on what follows; for the known patterns the first character after the cut
//! and a short continuation decide it (the lookahead is one character, a contraction, or a
//! whitespace run and what ends it), so the answer is computed once per (node, lookahead key
//! of the token: its first character, or its leading whitespace run and the character after
//! it) with the pre-tokenizer alone, over the same continuations ([`super::canon`]'s probes)
//! that witness validity, and kept across bytes.
//!
//! The same pass also finds where the cut is *certain*: every continuation cuts there, with
//! the same pieces before. Then validity factorises: the node's tokens must be the encoding of
//! those pieces (once per node and key), and the token must be valid at the start of a text
//! (once per token, in a table), since pre-tokenization after a cut does not look back.

use rustc_hash::FxHashMap;

use crate::error::Result;
use crate::Rank;

use super::ByteLm;

impl ByteLm {
    /// Does the merge loop on `bytes(a) + bytes(b)` give back `[a, b]`?
    pub fn is_canonical_pair(&self, a: Rank, b: Rank) -> Result<bool> {
        let key = ((a as u64) << 32) | b as u64;
        if let Some(&v) = self.pair_cache.lock().unwrap().get(&key) {
            return Ok(v);
        }
        let bytes = [self.token_bytes(a)?, self.token_bytes(b)?].concat();
        let mut out = Vec::with_capacity(2);
        self.enc.bpe().merge_without_lookup(&bytes, &mut out)?;
        let v = out == [a, b];
        let mut cache = self.pair_cache.lock().unwrap();
        if cache.len() > 1 << 22 {
            cache.clear();
        }
        cache.insert(key, v);
        Ok(v)
    }

    /// How the pre-tokenizer treats the position after `head` (which starts at a stable
    /// point) when `first` (a [`lookahead_key`]) follows, over the probe continuations.
    /// `ends`: where the node's tokens end inside `head` (a probe that puts a piece boundary
    /// anywhere else in `head` cannot witness the node).
    ///
    /// Most keys need eight probes, not all of them: when no apostrophe is within reach of the
    /// cut (a contraction starting up to two characters before it or at it) and the key ends
    /// with a character that is neither whitespace nor an apostrophe, every lookahead of the
    /// known patterns that spans the cut ends inside `head + first` (a whitespace run ends at
    /// the key's last character; letter, digit and symbol runs are decided character by
    /// character), so every continuation splits `head + first` alike up to the cut. The end of
    /// text and the neutral characters must then agree on the piece starts up to the cut; if
    /// they do not, all probes run. `tests::quick_cuts_equal_full_cuts` fuzzes this against
    /// the full probe set for every known pattern.
    pub(super) fn cut_at(&self, head: &[u8], first: &[u8], ends: &[usize]) -> Result<Cut> {
        if decided_by_key(head, first) {
            let quick = &self.probes[..QUICK_PROBES];
            let (cut, unanimous) = self.cut_over(head, first, ends, quick)?;
            if unanimous {
                return Ok(cut);
            }
        }
        self.cut_at_full(head, first, ends)
    }

    /// [`ByteLm::cut_at`] over every probe.
    pub(super) fn cut_at_full(&self, head: &[u8], first: &[u8], ends: &[usize]) -> Result<Cut> {
        Ok(self.cut_over(head, first, ends, &self.probes)?.0)
    }

    /// The cut over `probes`, and whether they all agreed on the piece starts up to it.
    fn cut_over(
        &self,
        head: &[u8],
        first: &[u8],
        ends: &[usize],
        probes: &[Vec<u8>],
    ) -> Result<(Cut, bool)> {
        let at = head.len();
        let mut buf = Vec::with_capacity(at + first.len() + 8);
        let mut pieces = Vec::new();
        let mut before: Option<Vec<(usize, usize)>> = None;
        let mut possible = false;
        let mut joined = false;
        let mut certain = true;
        let mut starts: Option<Vec<usize>> = None;
        let mut unanimous = true;
        for e in probes {
            buf.clear();
            buf.extend_from_slice(head);
            buf.extend_from_slice(first);
            buf.extend_from_slice(e);
            pieces.clear();
            self.pieces(&buf, &mut pieces)?;
            let k = pieces.iter().position(|&(a, _)| a == at);
            let fits = pieces
                .iter()
                .all(|&(a, _)| a == 0 || a >= at || ends.binary_search(&a).is_ok());
            if fits {
                possible |= k.is_some();
                joined |= k.is_none();
            }
            let here: Vec<usize> = pieces
                .iter()
                .map(|&(a, _)| a)
                .filter(|&a| a <= at)
                .collect();
            match &starts {
                None => starts = Some(here),
                Some(s) => unanimous &= *s == here,
            }
            match k {
                Some(k) if certain => match &before {
                    None => before = Some(pieces[..k].to_vec()),
                    Some(b) => certain = b[..] == pieces[..k],
                },
                _ => certain = false,
            }
        }
        // When the cut is always there with the same pieces before it, the tokens before it
        // are those pieces' encodings, whatever follows.
        let head_tokens = match (certain, before) {
            (true, Some(pieces)) => {
                let mut out = Vec::new();
                for (a, b) in pieces {
                    self.enc.bpe().encode_piece(&head[a..b], &mut out)?;
                }
                Some(out)
            }
            _ => None,
        };
        let cut = Cut {
            possible,
            joined,
            head_tokens,
        };
        Ok((cut, unanimous))
    }
}

/// The end of text and the neutral characters: the first probes of [`super::canon::probes`].
const QUICK_PROBES: usize = 1 + super::canon::NEUTRAL.len();

/// See [`ByteLm::cut_at`]: no apostrophe among the last two characters of `head` or in `key`,
/// and `key` does not end with whitespace.
pub(super) fn decided_by_key(head: &[u8], key: &[u8]) -> bool {
    let Ok(k) = std::str::from_utf8(key) else {
        return false;
    };
    let ends_closed = k.chars().last().is_some_and(|c| !c.is_whitespace());
    let near = &head[head.len().saturating_sub(8)..];
    let head_tail = String::from_utf8_lossy(near);
    let no_apostrophe_near = !head_tail.chars().rev().take(2).any(|c| c == '\'');
    ends_closed && !k.contains('\'') && no_apostrophe_near
}

/// See [`ByteLm::cut_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cut {
    /// Some continuation puts a piece boundary there, and none elsewhere inside the node's
    /// tokens.
    pub possible: bool,
    /// Some continuation puts no piece boundary there, and none inside the node's tokens.
    pub joined: bool,
    /// Every continuation does, and these are the tokens before it.
    pub head_tokens: Option<Vec<Rank>>,
}

/// The part of a token's bytes that decides whether the pre-tokenizer can cut before it:
/// its first character, and when that is whitespace, the whole leading whitespace run and the
/// character after it (if the token has one). `None` when a character in that span is cut
/// (no shortcut).
///
/// Why more than the first character: after whitespace (indentation, blank lines) the
/// patterns' `\s+(?!\S)` and `\s*[\r\n]+` decide where a run splits by what ends the run.
/// With the first character alone every whitespace-led token looked undecided and went to
/// the extension probes (thousands per byte on indented code); with the run and what ends it,
/// the cut is settled for every continuation, so [`ByteLm::cut_at`] finds it certain or
/// impossible. The key is a prefix of the token, so every continuation of the token is a
/// continuation of the key: "certain" for the key is certain for the token, and "possible"
/// stays a necessary condition.
pub(super) fn lookahead_key(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    loop {
        let c = first_char(&bytes[at..])?;
        at += c.len();
        let ws = std::str::from_utf8(c)
            .ok()
            .and_then(|s| s.chars().next())
            .is_some_and(char::is_whitespace);
        if !ws || at == bytes.len() {
            return Some(&bytes[..at]);
        }
    }
}

/// The first character of `bytes` if it is complete (else `None`: no shortcut).
fn first_char(bytes: &[u8]) -> Option<&[u8]> {
    let n = match bytes.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    let c = bytes.get(..n)?;
    std::str::from_utf8(c).ok()?;
    Some(c)
}

/// Per-node memo of [`ByteLm::cut_at`], keyed by the lookahead key, in front of the
/// [`ByteLm`]-wide cache keyed by (node path, key): the node paths of a window stay the same
/// from one byte to the next, so the cut analysis of a node is done once, not once per byte.
#[derive(Default)]
pub(super) struct CutMemo {
    memo: FxHashMap<Vec<u8>, Cut>,
}

impl CutMemo {
    pub fn clear(&mut self) {
        self.memo.clear();
    }

    /// `path`: the node's tokens (their bytes are `head`, their ends `ends`).
    pub fn get(
        &mut self,
        lm: &ByteLm,
        path: &[Rank],
        head: &[u8],
        key: &[u8],
        ends: &[usize],
    ) -> Result<&Cut> {
        if !self.memo.contains_key(key) {
            let shared = (path.to_vec(), key.to_vec());
            let hit = lm.cut_cache.lock().unwrap().get(&shared).cloned();
            let cut = match hit {
                Some(cut) => cut,
                None => {
                    let cut = lm.cut_at(head, key, ends)?;
                    let mut cache = lm.cut_cache.lock().unwrap();
                    if cache.len() > 1 << 18 {
                        cache.clear();
                    }
                    cache.insert(shared, cut.clone());
                    cut
                }
            };
            self.memo.insert(key.to_vec(), cut);
        }
        Ok(&self.memo[key])
    }
}
