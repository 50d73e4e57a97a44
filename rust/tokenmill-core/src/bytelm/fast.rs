//! A fast exact rejection for the marginalisation loop, where one node meets every token.
//!
//! Two adjacent tokens `a t` of a canonical encoding either straddle a pre-token boundary or
//! lie in one piece; in one piece they are a *canonical pair*: the merge loop on their bytes
//! alone gives `[a, t]` back (a contiguous run of a BPE encoding is the BPE encoding of its
//! bytes, because the merges inside the run happen in the same order with or without the
//! context, and none crosses its edges; the whole-piece lookup of `ignore_merges` tokenizers
//! does not apply to a run of two or more tokens, so the test uses the merge loop alone, read
//! off the merge priorities by [`super::pairs`]). So when `a t` is not a canonical pair, the
//! path is valid only if some extension puts a piece boundary between them. Whether the
//! pre-tokenizer can cut there depends on the text before the cut and on what follows; for
//! the known patterns the first character after the cut and a short continuation decide it
//! (the lookahead is one character, a contraction, or a whitespace run and what ends it), so
//! the answer is computed once per (node, lookahead key of the token: its first character, or
//! its leading whitespace run and the character after it) with the pre-tokenizer alone, over
//! the same continuations ([`super::canon`]'s probes) that witness validity, and kept across
//! bytes.
//!
//! The same pass also finds the *anchor*: the last piece start before or at the cut that every
//! continuation has, with the same pieces before it. Then validity factorises, since
//! pre-tokenization after a piece start does not look back: the node's tokens up to the
//! anchor must be the encoding of those pieces (once per node and key), and the node's tokens
//! after it followed by the token must be valid on their own ([`Rule::After`]; when the cut
//! itself is certain, the token must be valid at the start of a text, a table by token id).

use crate::error::Result;
use crate::pretokenize::O200K_PATTERN;
use crate::Rank;

use super::ByteLm;

impl ByteLm {
    /// Does the merge loop on `bytes(a) + bytes(b)` give back `[a, b]`? Read off the two
    /// tokens' own merge histories and the pair priorities ([`super::pairs`]).
    pub fn is_canonical_pair(&self, a: Rank, b: Rank) -> Result<bool> {
        match self.histories.canonical_pair(self.enc.bpe(), a, b) {
            Some(v) => Ok(v),
            None => self.is_canonical_pair_by_merging(a, b),
        }
    }

    /// [`ByteLm::is_canonical_pair`] by running the merge loop on the two tokens' bytes.
    pub(super) fn is_canonical_pair_by_merging(&self, a: Rank, b: Rank) -> Result<bool> {
        let bytes = [self.token_bytes(a)?, self.token_bytes(b)?].concat();
        let mut out = Vec::with_capacity(2);
        self.enc.bpe().merge_without_lookup(&bytes, &mut out)?;
        Ok(out == [a, b])
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
    ///
    /// The same holds for a key of whitespace only after a head that ends with a character
    /// other than whitespace ([`quick_cut`]): no whitespace run spans the cut, and whether the
    /// head's last piece takes the key's first character (a symbol run's `[\r\n]*`, o200k's
    /// `[\r\n/]*`) is decided by that character alone, whatever follows it; the piece starts
    /// after the cut, which do depend on the continuation, are not read. So does an
    /// apostrophe after optional whitespace, but for o200k (see [`quick_cut`]). These keys
    /// ran all the probes before, at most nodes that meet the whole vocabulary (indentation,
    /// line breaks and spaces after a word, quotes).
    pub(super) fn cut_at(&self, head: &[u8], first: &[u8], ends: &[usize]) -> Result<Cut> {
        if quick_cut(head, first, self.enc.pattern() == O200K_PATTERN) {
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
        let mut possible = false;
        let mut joined = false;
        let mut inner = 0;
        // Piece starts up to the cut in the first probe, and how many of them (a prefix) every
        // probe so far shares.
        let mut starts: Option<Vec<usize>> = None;
        let mut shared = 0;
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
                if k.is_none() {
                    let last = pieces.iter().map(|&(a, _)| a).rfind(|&a| a < at);
                    inner = inner.max(last.unwrap_or(0));
                }
            }
            let here = pieces.iter().map(|&(a, _)| a).take_while(|&a| a <= at);
            match &starts {
                None => {
                    let first: Vec<usize> = here.collect();
                    shared = first.len();
                    starts = Some(first);
                }
                Some(s) => {
                    // Compared in place: this runs eight times for every (node, key class).
                    let (mut n, mut len) = (0, 0);
                    for a in here {
                        if n == len && s.get(len) == Some(&a) {
                            n += 1;
                        }
                        len += 1;
                    }
                    shared = shared.min(n);
                    unanimous &= n == s.len() && len == s.len();
                }
            }
        }
        // The last piece start that every probe has, with the same pieces before it: the text
        // after it is pre-tokenized on its own, whatever follows (nothing looks back).
        let anchor = match &starts {
            Some(s) if shared > 0 => {
                let a = s[shared - 1];
                let mut tokens = Vec::new();
                for w in s[..shared].windows(2) {
                    self.enc
                        .bpe()
                        .encode_piece(&head[w[0]..w[1]], &mut tokens)?;
                }
                Some((a, tokens))
            }
            _ => None,
        };
        let cut = Cut {
            possible,
            joined,
            inner,
            anchor,
        };
        Ok((cut, unanimous))
    }
}

/// The end of text and the neutral characters: the first probes of [`super::canon::probes`].
const QUICK_PROBES: usize = 1 + super::canon::NEUTRAL.len();

/// See [`ByteLm::cut_at`]: no contraction in `head` reaches past its end
/// ([`apostrophe_near`]), no apostrophe in `key`, and `key` does not end with whitespace. A
/// byte of `key` that is not UTF-8 is a symbol (U+FFFD), as the pre-tokenizer sees it.
pub(super) fn decided_by_key(head: &[u8], key: &[u8]) -> bool {
    let k = String::from_utf8_lossy(key);
    let ends_closed = k.chars().last().is_some_and(|c| !c.is_whitespace());
    ends_closed && !k.contains('\'') && !apostrophe_near(head)
}

/// May [`ByteLm::cut_at`] try the quick probes first? When [`decided_by_key`]; when `key` is
/// whitespace only, `head` ends with a character that is not whitespace (a byte that is not
/// UTF-8 counts as a symbol) and no contraction reaches past it; or when `key` is an
/// apostrophe after optional whitespace, no contraction of `head` reaches past it, and the
/// pattern's words do not take a contraction after them (`suffix`: o200k's do).
///
/// The apostrophe: a contraction can only start at it, after the cut; a symbol run before it
/// takes it whatever follows, and a letter, number or whitespace run ends before it (the
/// whitespace alternatives read it as the character that ends the run). Only o200k's words,
/// `...[\p{Ll}...]+(?i:'s|'t|...)?`, take it or not depending on the letters after it.
pub(super) fn quick_cut(head: &[u8], key: &[u8], suffix: bool) -> bool {
    if decided_by_key(head, key) {
        return true;
    }
    if apostrophe_near(head) {
        return false;
    }
    let Ok(k) = std::str::from_utf8(key) else {
        return false;
    };
    let mut chars = k.chars().rev();
    if chars.next() == Some('\'') {
        return chars.all(char::is_whitespace) && !(suffix && key[0] == b'\'');
    }
    let key_ws = !key.is_empty() && k.chars().all(char::is_whitespace);
    let near = &head[head.len().saturating_sub(4)..];
    let head_closed = String::from_utf8_lossy(near)
        .chars()
        .last()
        .is_some_and(|c| !c.is_whitespace());
    key_ws && head_closed
}

/// Can a contraction that starts in `head` take characters after it? Only from an apostrophe
/// that is the last character, or the one before the last when the last is the first letter
/// of a two-letter contraction (`'re`, `'ve`, `'ll`, in either case): `'s`, `'t`, `'m` and
/// `'d` end within two characters, and under the patterns' case folding no character outside
/// ASCII stands for `r`, `v` or `l` (`pretokenize::classes`; only U+017F folds, to `s`). An
/// apostrophe followed by anything else (`'_`, `'(`, a digit, another letter) starts no
/// contraction at all.
pub(super) fn apostrophe_near(head: &[u8]) -> bool {
    let near = &head[head.len().saturating_sub(8)..];
    let text = String::from_utf8_lossy(near);
    let mut last = text.chars().rev();
    match (last.next(), last.next()) {
        (Some('\''), _) => true,
        (Some(c), Some('\'')) => matches!(c, 'r' | 'R' | 'v' | 'V' | 'l' | 'L'),
        _ => false,
    }
}

/// The ASCII characters the scanners of `pretokenize` name literally (outside the
/// contractions): the apostrophe, the space of ` ?`, o200k's `/`, and the line breaks.
const LITERAL: &[u8] = b"' /\r\n";

/// For each value of the class flags ([`char_flags`]), the first character with those flags
/// that is not in [`LITERAL`] (`None` for combinations no character has).
fn class_reps() -> &'static [Option<char>; 64] {
    static REPS: std::sync::OnceLock<[Option<char>; 64]> = std::sync::OnceLock::new();
    REPS.get_or_init(|| {
        let mut reps = [None; 64];
        for c in (0..0x11_0000u32).filter_map(char::from_u32) {
            let f = char_flags(c) as usize;
            if reps[f].is_none() && !(c.is_ascii() && LITERAL.contains(&(c as u8))) {
                reps[f] = Some(c);
            }
        }
        reps
    })
}

/// Is `c` a letter the contractions name (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`), in
/// either case (the patterns with `(?i:...)` also fold U+017F LATIN SMALL LETTER LONG S to
/// `s`, see `pretokenize::classes`)?
fn contraction_letter(c: char) -> bool {
    matches!(
        c.to_ascii_lowercase(),
        's' | 't' | 'r' | 'e' | 'v' | 'm' | 'l' | 'd'
    ) || c == '\u{17F}'
}

/// The lookahead key that stands for `key` in the cut analysis after a node (`apostrophe`:
/// [`apostrophe_near`] of the node's bytes): each character replaced by the first one of its
/// class ([`class_reps`]), except those of [`LITERAL`], bytes that are not UTF-8 and, when
/// a contraction of the node can reach past its end ([`apostrophe_near`]) or the key holds an
/// apostrophe, the letters of the contractions; a key that is one byte of 0x80 or more
/// becomes `0xff`.
///
/// Why the cut analysis is the same: the scanners look at a character only through its class
/// flags, except for the characters of [`LITERAL`] (kept) and the letters of a contraction,
/// which count only within two characters after an apostrophe: with no contraction reaching
/// past the node, no character of the key is read as one, whatever the probe after it; with
/// one, those letters are kept, and every other letter is replaced by a letter that is not
/// one either (the representatives are `a`, `A` and letters outside ASCII other than U+017F).
/// So head + key + probe and head + class key + probe are split alike, character for
/// character; the byte offsets differ only after the cut (a replacement may change a
/// character's length), and the analysis reads only the piece starts up to the cut. (A
/// character of the key never completes a character cut at the end of the head: it starts
/// with a byte that cannot continue one.) About 270 keys of a code vocabulary (`a` to `z`,
/// ` a` to ` z`, indentation before each letter, the completions of lone lead bytes, ...)
/// become a few dozen.
///
/// A key of one byte of 0x80 or more is a byte that is not UTF-8 whatever follows (a
/// continuation byte, `0xc0`, `0xc1`, `0xf5` to `0xff`), or a lone lead byte (a completion
/// key, see [`completion_keys`]) followed by a probe, and no probe starts with a continuation
/// byte: either way the pre-tokenizer reads it as one U+FFFD, provided the head does not end
/// inside a character (a continuation byte could complete it; the marginalisation looks no
/// such key up there). About 130 keys (77 stray bytes, 51 lone lead bytes), each its own
/// analysis at every node that meets the whole vocabulary, become one.
/// `tests::class_keys_give_the_same_cuts`,
/// `tests::apostrophe_and_byte_class_keys_give_the_same_cuts` and
/// `tests::every_character_after_an_apostrophe_gives_the_same_cuts` check this against the
/// plain keys for every known pattern.
pub(super) fn class_key(apostrophe: bool, key: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if let [b] = key {
        if *b >= 0x80 {
            out.push(0xff);
            return;
        }
    }
    let near = apostrophe || key.contains(&b'\'');
    let reps = class_reps();
    let mut tmp = [0u8; 4];
    for chunk in key.utf8_chunks() {
        for c in chunk.valid().chars() {
            let keep =
                (c.is_ascii() && LITERAL.contains(&(c as u8))) || (near && contraction_letter(c));
            let rep = if keep {
                c
            } else {
                reps[char_flags(c) as usize].unwrap_or(c)
            };
            out.extend_from_slice(rep.encode_utf8(&mut tmp).as_bytes());
        }
        out.extend_from_slice(chunk.invalid());
    }
    if !near {
        shorten_whitespace_key(out);
    }
}

/// A key of whitespace only (a token that is a whitespace run) with three or more characters
/// becomes its first character and one more: the last line break after the first character
/// if there is one, else its last character.
///
/// Why the cut analysis is the same: everything after the key's first character is whitespace
/// of the same run and lies after the cut, so the piece starts up to the cut can depend on it
/// only through what the whitespace alternatives read of the run: where it ends and where its
/// last character starts (both after the cut once the key has two characters), and where its
/// last line break ends (after the cut exactly when the key has a line break after its first
/// character; a symbol run's `[\r\n]*` also only takes line breaks, from the first character
/// on). Keeping the first character, a second one, and a line break when there is one keeps
/// all of these on the same side of the cut. These are the keys that run every probe (they
/// end with whitespace), and indentation makes dozens of them.
fn shorten_whitespace_key(key: &mut Vec<u8>) {
    let Ok(s) = std::str::from_utf8(key) else {
        return;
    };
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return;
    };
    let rest: Vec<char> = chars.collect();
    if rest.len() < 2 || !first.is_whitespace() || !rest.iter().all(|c| c.is_whitespace()) {
        return;
    }
    let second = rest
        .iter()
        .rev()
        .find(|&&c| c == '\n' || c == '\r')
        .or(rest.last())
        .copied()
        .expect("two or more characters");
    let mut tmp = [0u8; 4];
    key.clear();
    key.extend_from_slice(first.encode_utf8(&mut tmp).as_bytes());
    key.extend_from_slice(second.encode_utf8(&mut tmp).as_bytes());
}

/// See [`ByteLm::cut_at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Cut {
    /// Some continuation puts a piece boundary there, and none elsewhere inside the node's
    /// tokens.
    pub possible: bool,
    /// Some continuation puts no piece boundary there, and none inside the node's tokens.
    pub joined: bool,
    /// The last piece start before the cut (0 if none) of the continuations that put no
    /// piece boundary there, the latest over all of them: in each of them the node's tokens
    /// from there on and the next token lie in one piece.
    pub inner: usize,
    /// `(a, tokens)`: every continuation starts a piece at `a` (at most the cut), with the
    /// same pieces before it, whose encodings are `tokens`. `a` is the cut itself when every
    /// continuation cuts there.
    pub anchor: Option<(usize, Vec<Rank>)>,
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

/// The first character of `bytes` if it is complete, or its first byte when that byte is not
/// UTF-8 whatever follows it (a continuation byte, a byte that never starts a character, a
/// lead byte followed by a byte that cannot continue it): the pre-tokenizer reads such a byte
/// as U+FFFD on its own, provided the text before it does not end inside a character (see
/// [`starts_with_stray_byte`]). `None` when the character is cut (no shortcut).
fn first_char(bytes: &[u8]) -> Option<&[u8]> {
    match std::str::from_utf8(&bytes[..bytes.len().min(4)]) {
        Ok(s) => s.chars().next().map(|c| &bytes[..c.len_utf8()]),
        Err(e) if e.valid_up_to() > 0 => {
            let s = std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?;
            s.chars().next().map(|c| &bytes[..c.len_utf8()])
        }
        Err(e) => e.error_len().map(|_| &bytes[..1]),
    }
}

/// Does `bytes` start with a byte that is not UTF-8 whatever follows it (see [`first_char`])?
/// Such a key depends on the text before it: after a cut character the byte may complete it.
pub(super) fn starts_with_stray_byte(bytes: &[u8]) -> bool {
    matches!(std::str::from_utf8(&bytes[..bytes.len().min(4)]),
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_some())
}

/// What a node's cut analysis for one lookahead key says about the tokens with that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rule {
    /// None of them is valid after the node.
    Invalid,
    /// `path + t` is valid exactly when `path[j..] + t` is (`j > 0`; `j = path.len()`: when
    /// `t` is valid at the start of a text), see [`Cut::anchor`].
    After(usize),
    /// `t` continues the node's last piece: valid only if it makes a canonical pair with the
    /// node's last token, and then by the plain test. `path[i..] + t` lie in one piece in
    /// every continuation that joins ([`Cut::inner`]), so they must also be what the merges
    /// make of their bytes (a run of a piece's encoding is the encoding of its bytes).
    Joined(usize),
    /// The plain test.
    Open,
}

impl Cut {
    /// The rule for a node with tokens `path` ending at `ends`.
    pub(super) fn rule(&self, path: &[Rank], ends: &[usize]) -> Rule {
        if !self.possible && !self.joined {
            return Rule::Invalid;
        }
        if let Some((a, tokens)) = &self.anchor {
            if *a > 0 {
                // The node's tokens before `a` are the encodings of the fixed pieces, or no
                // continuation has them.
                let j = tokens.len();
                let fixed = j > 0 && j <= path.len() && path[..j] == tokens[..];
                return if fixed && ends[j - 1] == *a {
                    Rule::After(j)
                } else {
                    Rule::Invalid
                };
            }
        }
        if self.possible {
            Rule::Open
        } else {
            // A piece start of a continuation that fits is a token end.
            Rule::Joined(ends.partition_point(|&e| e <= self.inner))
        }
    }
}

impl ByteLm {
    /// [`Cut::rule`] of the node `path` (bytes `head`, token ends `ends`) for lookahead key
    /// `key`, cached by (path, key) across calls.
    pub(super) fn rule(
        &self,
        path: &[Rank],
        head: &[u8],
        key: &[u8],
        ends: &[usize],
    ) -> Result<Rule> {
        let shared = (path.to_vec(), key.to_vec());
        if let Some(&rule) = self.cut_cache.lock().unwrap().get(&shared) {
            return Ok(rule);
        }
        let rule = self.cut_at(head, key, ends)?.rule(path, ends);
        let mut cache = self.cut_cache.lock().unwrap();
        if cache.len() > 1 << 20 {
            cache.clear();
        }
        cache.insert(shared, rule);
        Ok(rule)
    }
}

/// The class flags of `c`: the character classes the known patterns tell apart, from the
/// pre-tokenizer's own tables (`pretokenize::classes`, read from `regex_syntax`), so that the
/// class keys follow exactly what the scanners read. The scanners test nothing else about a
/// character outside ASCII (every literal of the patterns is ASCII), so two such characters
/// with the same flags are pre-tokenized alike. Six flags: values below 64.
pub(super) fn char_flags(c: char) -> u8 {
    crate::pretokenize::classes::tables().of_char(c as u32)
}

/// The length of the character that `bytes` starts, when `bytes` is a proper prefix of one
/// that some continuation completes (`None` otherwise).
pub(super) fn incomplete_char_len(bytes: &[u8]) -> Option<usize> {
    let incomplete = matches!(std::str::from_utf8(bytes),
        Err(e) if e.valid_up_to() == 0 && e.error_len().is_none());
    incomplete.then(|| match bytes[0] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    })
}

/// Lookahead keys standing for every way a token that ends inside its first character can go
/// on: one completed character of each class among its completions, and its first byte alone
/// (no completion: the bytes are read as U+FFFD each). A token that ends inside the character
/// after a leading whitespace run (` \xf0\x9f`, `\n\n\xe4`) goes on the same ways after the
/// run, which stays in front of each key: the keys are then what [`lookahead_key`] gives for
/// the run followed by each completion. Empty when `bytes` is neither.
pub(super) fn completion_keys(bytes: &[u8]) -> Vec<Vec<u8>> {
    let valid = match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to there"),
    };
    let run: usize = valid
        .chars()
        .take_while(|c| c.is_whitespace())
        .map(char::len_utf8)
        .sum();
    let (run, bytes) = bytes.split_at(run);
    let Some(need) = incomplete_char_len(bytes) else {
        return Vec::new();
    };
    let missing = need - bytes.len();
    // The completions are the code points whose encoding starts with `bytes`: the prefix's
    // payload bits followed by `missing` continuation bytes of six bits each. They are visited
    // in the order of the byte strings with the first missing byte varying fastest (the first
    // completion of each class is its representative), as code points rather than through
    // `from_utf8`: a 4-byte lead byte alone has 64^3 of them.
    let lead_bits = [0x1f, 0x0f, 0x07][need - 2];
    let mut prefix = (bytes[0] & lead_bits) as u32;
    for &b in &bytes[1..] {
        prefix = prefix << 6 | (b & 0x3f) as u32;
    }
    let prefix = prefix << (6 * missing);
    let shortest = [0x80, 0x800, 0x1_0000][need - 2];
    let n = 64u32.pow(missing as u32);
    // The classes present among them, read off the class tables block by block: the walk
    // below stops when it has met them all, instead of visiting every completion (it was a
    // quarter of a fresh model's first bytes, once per cut prefix).
    let present =
        crate::pretokenize::classes::tables().flags_in(prefix.max(shortest), prefix + n - 1);
    let classes = present.iter().filter(|&&p| p).count();
    let mut seen = [false; 256];
    let mut keys = vec![bytes[..1].to_vec()];
    for k in 0..n {
        if keys.len() > classes {
            break;
        }
        let (mut k, mut cp) = (k, prefix);
        for slot in (0..missing).rev() {
            cp |= (k % 64) << (6 * slot);
            k /= 64;
        }
        // Not overlong, not a surrogate, not above U+10FFFF: what `from_utf8` accepts.
        let Some(c) = char::from_u32(cp).filter(|_| cp >= shortest) else {
            continue;
        };
        let f = char_flags(c);
        if !seen[f as usize] {
            seen[f as usize] = true;
            keys.push(c.to_string().into_bytes());
        }
    }
    if !run.is_empty() {
        for key in &mut keys {
            key.splice(0..0, run.iter().copied());
        }
    }
    keys
}

impl ByteLm {
    /// [`completion_keys`] of `bytes` (a proper prefix of one character, at most three
    /// bytes, after a whitespace run for a token), kept: asked for every token that ends
    /// inside a character at every fresh node, and by the plain test for every path that ends
    /// inside one.
    pub(super) fn completion_keys(&self, bytes: &[u8]) -> std::sync::Arc<Vec<Vec<u8>>> {
        let mut cache = self.completion_cache.lock().unwrap();
        if let Some(keys) = cache.get(bytes) {
            return keys.clone();
        }
        let keys = std::sync::Arc::new(completion_keys(bytes));
        cache.insert(bytes.to_vec(), keys.clone());
        keys
    }
}

/// No lookahead key (the token's first character is cut).
pub(super) const NO_KEY: u32 = u32::MAX;

/// A token's lookahead key, interned: its class key ([`class_key`]) after a node with an
/// apostrophe near its end (`near`) and after any other node (`class`); `stray`:
/// [`starts_with_stray_byte`].
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyIds {
    pub near: u32,
    pub class: u32,
    pub stray: bool,
}

/// Every token's [`KeyIds`], computed once: the marginalisation meets every token at every new
/// node, and decoding the key and its class there cost more than the rest of a cold check.
#[derive(Debug)]
pub(super) struct TokenKeys {
    /// The interned keys, by id.
    pub keys: Vec<Vec<u8>>,
    /// By token id.
    pub of: Vec<KeyIds>,
    /// The tokens by key id: those whose `class` key it is, and those whose `near` key it is.
    pub with_class: Vec<Vec<Rank>>,
    pub with_near: Vec<Vec<Rank>>,
}

impl TokenKeys {
    pub(super) fn new(bpe: &crate::bpe::Bpe) -> Self {
        let mut index: rustc_hash::FxHashMap<Vec<u8>, u32> = Default::default();
        let mut keys = Vec::new();
        let mut intern = |k: &[u8]| {
            *index.entry(k.to_vec()).or_insert_with(|| {
                keys.push(k.to_vec());
                (keys.len() - 1) as u32
            })
        };
        let none = KeyIds {
            near: NO_KEY,
            class: NO_KEY,
            stray: false,
        };
        let mut of = vec![none; bpe.n_slots()];
        let mut class = Vec::new();
        for (bytes, id) in bpe.vocab() {
            let Some(key) = lookahead_key(bytes) else {
                continue;
            };
            class_key(true, key, &mut class);
            let near = intern(&class);
            class_key(false, key, &mut class);
            of[id as usize] = KeyIds {
                near,
                class: intern(&class),
                stray: starts_with_stray_byte(key),
            };
        }
        let mut with_class = vec![Vec::new(); keys.len()];
        let mut with_near = vec![Vec::new(); keys.len()];
        for (id, k) in of.iter().enumerate() {
            if k.class != NO_KEY {
                with_class[k.class as usize].push(id as Rank);
                with_near[k.near as usize].push(id as Rank);
            }
        }
        TokenKeys {
            keys,
            of,
            with_class,
            with_near,
        }
    }
}
