//! Canonical encodings of byte strings and the validity of token sequences.
//!
//! Byte semantics. A byte-level model can be asked about any byte string, including invalid
//! UTF-8 (a prompt cut inside a character, or binary junk). The pre-tokenizer regexes work on
//! text, so a byte that is not part of a valid UTF-8 sequence is pre-tokenized as if it were
//! U+FFFD (a symbol: neither letter, number nor whitespace) and BPE then runs on the original
//! bytes. On valid UTF-8 this is exactly `encode_ordinary`.
//!
//! Stable point. For the known patterns, every extension `x + e` of a text is pre-tokenized like
//! `x` up to the start of the piece *before* the piece holding the last non-whitespace
//! character of `x` (ignoring a trailing incomplete UTF-8 sequence); and up to the *end* of the
//! last piece with a non-whitespace character that whitespace it did not absorb follows in `x`. The piece holding that
//! character can grow (letters continue) and the one before it can merge into a contraction
//! (`'` + `ll`); trailing whitespace can be re-split by lookahead (`\s+(?!\S)`) or merged with
//! a later newline (`\s*[\r\n]+`); nothing before reaches further forward, since each earlier
//! piece is already closed by a non-whitespace character that no alternative can absorb. When
//! whitespace follows the last non-whitespace piece, that piece cannot grow (no alternative
//! that starts with a non-whitespace character continues across whitespace it did not take,
//! and the contractions are decided within their three characters), so its end is already a
//! boundary of every extension; it stays one when more text follows, so the last such end in
//! `x` is a stable point too (and keeps the stable point from moving back).
//! `tests::stable_point_holds_for_extensions` checks this rule against the pre-tokenizer on
//! random texts and extensions.
//!
//! Validity. A token sequence `u` is valid when it is a prefix of the canonical encoding of
//! some text. Tokens before the stable point of `bytes(u)` must be its canonical encoding; the
//! rest is checked by trying extensions (probes): end of text; for each pre-tokenizer class a
//! character that no merge touches, alone and after each kind of whitespace; the characters the
//! patterns name literally (whitespace kinds, the apostrophe and contraction letters) and the
//! contraction completions; and, when the text ends inside a UTF-8 character, completions of
//! it. A witness needs at most that much: the lookahead of the patterns is one character (or a
//! contraction, or what ends a whitespace run), and a neutral character closes or
//! continues a piece without merging into the last token.

use crate::error::Result;
use crate::Rank;

use super::ByteLm;

/// Characters of each class that byte-level vocabularies trained on ordinary text never merge
/// (supplementary planes, and 0xFF which is never part of UTF-8).
pub(super) const NEUTRAL: [&[u8]; 7] = [
    "\u{20000}".as_bytes(), // letter (CJK extension B)
    "\u{1D400}".as_bytes(), // upper-case letter (mathematical bold capital A), for o200k
    "\u{1D41A}".as_bytes(), // lower-case letter (mathematical bold small a)
    "\u{1D7CE}".as_bytes(), // decimal digit (mathematical bold zero)
    "\u{1F600}".as_bytes(), // symbol
    "\u{3000}".as_bytes(),  // whitespace (ideographic space)
    b"\xff",                // a byte that is never valid UTF-8: pre-tokenized as a symbol
];

pub(super) fn probes() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![Vec::new()];
    out.extend(NEUTRAL.iter().map(|n| n.to_vec()));
    for ws in [&b" "[..], b"\n", b"\r", b"\t", b"\r\n", b" \n"] {
        for n in NEUTRAL {
            out.push([ws, n].concat());
        }
    }
    for c in [
        "re", "ve", "ll", "Re", "rE", "RE", "Ve", "vE", "VE", "Ll", "lL", "LL",
    ] {
        out.push(c.as_bytes().to_vec());
    }
    // Characters the patterns name literally; any other character acts like the neutral
    // one of its class, which cannot merge into the last token and so is the better witness.
    out.extend(b" \t\n\r\x0b\x0c'sStTmMdDlLvVrReE".iter().map(|&b| vec![b]));
    out
}

/// Length of a trailing proper prefix of a multi-byte UTF-8 sequence (0 if none).
pub(super) fn incomplete_tail(x: &[u8]) -> usize {
    for back in 1..=3.min(x.len()) {
        let i = x.len() - back;
        if x[i] & 0xC0 != 0x80 {
            // The last lead byte: incomplete iff decoding from it stops at the end of input.
            return match std::str::from_utf8(&x[i..]) {
                Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
                _ => 0,
            };
        }
    }
    0
}

/// Does `bytes` start with a whole whitespace character?
fn starts_with_whitespace(bytes: &[u8]) -> bool {
    bytes.utf8_chunks().next().is_some_and(|chunk| {
        chunk
            .valid()
            .chars()
            .next()
            .is_some_and(char::is_whitespace)
    })
}

/// Is `bytes` whitespace only (invalid UTF-8 counts as a symbol)?
fn all_whitespace(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| s.chars().all(char::is_whitespace))
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

impl ByteLm {
    /// Pre-tokenizer pieces of arbitrary bytes, as byte ranges (see the module notes).
    pub fn pieces(&self, bytes: &[u8], out: &mut Vec<(usize, usize)>) -> Result<()> {
        let pretok = self.enc.pretokenizer();
        if let Ok(s) = std::str::from_utf8(bytes) {
            return pretok.for_each_match(s, |a, b| out.push((a, b)));
        }
        let mut shadow = String::with_capacity(bytes.len() + 8);
        let mut map: Vec<usize> = Vec::with_capacity(bytes.len() + 8);
        let mut pos = 0;
        for chunk in bytes.utf8_chunks() {
            let valid = chunk.valid();
            map.extend(pos..pos + valid.len());
            shadow.push_str(valid);
            pos += valid.len();
            for _ in chunk.invalid() {
                shadow.push('\u{FFFD}');
                map.extend([pos; 3]);
                pos += 1;
            }
        }
        map.push(pos);
        pretok.for_each_match(&shadow, |a, b| out.push((map[a], map[b])))
    }

    /// The canonical encoding of arbitrary bytes.
    pub fn canonical(&self, bytes: &[u8]) -> Result<Vec<Rank>> {
        let mut pieces = Vec::new();
        self.pieces(bytes, &mut pieces)?;
        let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
        for (a, b) in pieces {
            self.enc.bpe().encode_piece(&bytes[a..b], &mut out)?;
        }
        Ok(out)
    }

    /// The tokens of `x[..sigma]` in every extension of `x`, for `sigma` its stable point: the
    /// pieces of `x` before it, encoded (not `canonical(&x[..sigma])`, which would see the end
    /// of text there: `\s++$` matches differently).
    pub fn stable_head(&self, x: &[u8], sigma: usize) -> Result<Vec<Rank>> {
        let pieces = self.head_pieces(x)?;
        self.encode_until(x, &pieces, sigma)
    }

    /// [`ByteLm::stable_point`] and [`ByteLm::stable_head`] from one pre-tokenization of `x`
    /// (it is linear in the length of `x`, the whole text before the cursor).
    pub fn stable(&self, x: &[u8]) -> Result<(usize, Vec<Rank>)> {
        let pieces = self.head_pieces(x)?;
        let sigma = stable_point_of(head_of(x), &pieces);
        Ok((sigma, self.encode_until(x, &pieces, sigma)?))
    }

    /// The stable point of `x`: every extension of `x` is encoded as [`ByteLm::stable_head`]
    /// followed by an encoding of the rest on its own.
    pub fn stable_point(&self, x: &[u8]) -> Result<usize> {
        let pieces = self.head_pieces(x)?;
        Ok(stable_point_of(head_of(x), &pieces))
    }

    /// The pieces of [`head_of`] `x`: what the stable point and the stable head are read from.
    fn head_pieces(&self, x: &[u8]) -> Result<Vec<(usize, usize)>> {
        let mut pieces = Vec::new();
        self.pieces(head_of(x), &mut pieces)?;
        Ok(pieces)
    }

    /// The encodings of the pieces of `x` that end by `sigma`.
    fn encode_until(&self, x: &[u8], pieces: &[(usize, usize)], sigma: usize) -> Result<Vec<Rank>> {
        let mut out = Vec::new();
        for &(a, b) in pieces.iter().take_while(|&&(_, b)| b <= sigma) {
            self.enc.bpe().encode_piece(&x[a..b], &mut out)?;
        }
        Ok(out)
    }
}

/// `x` without an incomplete character at its end.
fn head_of(x: &[u8]) -> &[u8] {
    &x[..x.len() - incomplete_tail(x)]
}

/// [`ByteLm::stable_point`] of `head` (no incomplete character at its end) from its pieces.
fn stable_point_of(head: &[u8], pieces: &[(usize, usize)]) -> usize {
    let mut last_non_ws = None;
    let mut pos = 0;
    for chunk in head.utf8_chunks() {
        for (i, c) in chunk.valid().char_indices() {
            if !c.is_whitespace() {
                last_non_ws = Some(pos + i);
            }
        }
        pos += chunk.valid().len();
        for _ in chunk.invalid() {
            last_non_ws = Some(pos);
            pos += 1;
        }
    }
    let Some(at) = last_non_ws else {
        return 0;
    };
    let k = pieces
        .iter()
        .position(|&(a, b)| a <= at && at < b)
        .unwrap_or(0);
    let base = pieces[k.saturating_sub(1)].0;
    // A piece with a non-whitespace character that whitespace follows inside `x` without
    // being part of it is closed: it holds the last non-whitespace character of the prefix
    // of `x` that ends with that whitespace character, so (rule above, applied to that
    // prefix) its end is a boundary of every extension of that prefix, hence of `x`. The
    // last such end, when later than the base rule's point, keeps the window after
    // indentation and blank lines to the whitespace run alone, and keeps the stable point
    // from moving back when the next word starts.
    let closed = pieces
        .iter()
        .take(k + 1)
        .rev()
        .find(|&&(a, b)| {
            b < head.len() && starts_with_whitespace(&head[b..]) && !all_whitespace(&head[a..b])
        })
        .map_or(0, |&(_, b)| b);
    base.max(closed)
}

impl ByteLm {
    /// Is `path` a prefix of the canonical encoding of some byte string?
    pub fn is_valid(&self, path: &[Rank]) -> Result<bool> {
        if let Some(&v) = self.valid_cache.lock().unwrap().get(path) {
            return Ok(v);
        }
        let v = self.is_valid_uncached(path)?;
        let mut cache = self.valid_cache.lock().unwrap();
        if cache.len() > 1 << 20 {
            cache.clear();
        }
        cache.insert(path.to_vec(), v);
        Ok(v)
    }

    pub(super) fn is_valid_uncached(&self, path: &[Rank]) -> Result<bool> {
        let y = self.path_bytes(path)?;
        // One pre-tokenization and one BPE pass give the canonical encoding, the stable point
        // and the stable head (the canonical tokens of the pieces before it) when no character
        // is cut at the end; this runs for every (node, token) pair the shortcuts leave open.
        let mut pieces = Vec::new();
        self.pieces(&y, &mut pieces)?;
        let mut whole = Vec::with_capacity(path.len() + 1);
        let mut counts = Vec::with_capacity(pieces.len());
        for &(a, b) in &pieces {
            self.enc.bpe().encode_piece(&y[a..b], &mut whole)?;
            counts.push(whole.len());
        }
        if whole == path {
            return Ok(true);
        }
        // The tokens before the stable point must be the stable head.
        let (s, head_ok) = if incomplete_tail(&y) == 0 {
            let s = stable_point_of(&y, &pieces);
            let n = pieces.iter().take_while(|&&(_, b)| b <= s).count();
            let n_head = if n == 0 { 0 } else { counts[n - 1] };
            let ok = path.len() >= n_head && path[..n_head] == whole[..n_head];
            (s, ok.then_some(n_head))
        } else {
            let (s, head) = self.stable(&y)?;
            (s, path.starts_with(&head).then_some(head.len()))
        };
        let Some(n_head) = head_ok else {
            return Ok(false);
        };
        let rest = &path[n_head..];
        let tail = &y[s..];
        let mut buf = Vec::with_capacity(tail.len() + 8);
        // Token ends inside the tail: a piece boundary anywhere else rules a probe out before
        // any merging.
        let mut ends = Vec::with_capacity(rest.len());
        let mut at = 0;
        for &id in rest {
            at += self.token_bytes(id)?.len();
            ends.push(at);
        }
        let mut pieces = Vec::new();
        let mut out = Vec::new();
        'probe: for e in &self.probes {
            buf.clear();
            buf.extend_from_slice(tail);
            buf.extend_from_slice(e);
            pieces.clear();
            self.pieces(&buf, &mut pieces)?;
            out.clear();
            for &(a, b) in &pieces {
                if a >= tail.len() {
                    break;
                }
                if a > 0 && ends.binary_search(&a).is_err() {
                    continue 'probe;
                }
                self.enc.bpe().encode_piece(&buf[a..b], &mut out)?;
            }
            if out.starts_with(rest) {
                return Ok(true);
            }
        }
        // A character cut at the end: what it becomes decides its class and the merges of its
        // bytes. A witness is all it takes, so first one completed character of each
        // pre-tokenizer class (the first completion of that class in byte order, as the cut
        // analyses use), which finds most witnesses in a few encodings; then every value of
        // the next byte with a spread of the remaining ones.
        let (cut_len, missing) = match incomplete_tail(tail) {
            0 => return Ok(false),
            k => (k, utf8_len(tail[tail.len() - k]) - k),
        };
        let mut witnessed = |completion: &[u8]| -> Result<bool> {
            for e in self.probes.iter().take(1 + NEUTRAL.len()) {
                buf.clear();
                buf.extend_from_slice(tail);
                buf.extend_from_slice(completion);
                buf.extend_from_slice(e);
                if self.canonical(&buf)?.starts_with(rest) {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let cut = &tail[tail.len() - cut_len..];
        for key in self.completion_keys(cut).iter().skip(1) {
            if witnessed(&key[cut_len..])? {
                return Ok(true);
            }
        }
        const SPREAD: [u8; 5] = [0x80, 0x8f, 0x9f, 0xaf, 0xbf];
        let mut completion = vec![0x80u8; missing];
        let n_spread = SPREAD.len().pow(missing as u32 - 1);
        for first in 0x80..=0xbfu8 {
            completion[0] = first;
            for mut k in 0..n_spread {
                for slot in completion[1..].iter_mut() {
                    *slot = SPREAD[k % SPREAD.len()];
                    k /= SPREAD.len();
                }
                if witnessed(&completion)? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
