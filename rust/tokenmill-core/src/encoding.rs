//! A tiktoken-style encoding: pre-tokenizer pattern + BPE vocabulary + special tokens.
//!
//! The semantics follow tiktoken's `CoreBPE` exactly (including `encode_with_unstable`);
//! the speed comes from the pre-tokenizer scanners and the id-based merge loop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::bpe::Bpe;
use crate::error::{Error, Result};
use crate::pretokenize::Pretokenizer;
use crate::Rank;

/// Which special tokens a call allows (or disallows), by index into [`Encoding::special_tokens`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecialFilter {
    Nothing,
    All,
    Only(Vec<bool>),
}

impl SpecialFilter {
    #[inline]
    pub fn contains(&self, index: usize) -> bool {
        match self {
            SpecialFilter::Nothing => false,
            SpecialFilter::All => true,
            SpecialFilter::Only(v) => v.get(index).copied().unwrap_or(false),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            SpecialFilter::Nothing => true,
            SpecialFilter::All => false,
            SpecialFilter::Only(v) => !v.iter().any(|&b| b),
        }
    }
}

/// Special tokens: literal strings matched before pre-tokenization.
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    names: Vec<String>,
    ids: Vec<Rank>,
    by_name: FxHashMap<String, usize>,
    by_id: FxHashMap<Rank, usize>,
    /// Splitting: leftmost match, longest on ties, so that overlapping specials resolve
    /// deterministically (tiktoken's alternation order depends on hash order there).
    splitter: Option<AhoCorasick>,
    /// Checking for disallowed specials must see every occurrence, even overlapping ones.
    overlapping: Option<AhoCorasick>,
    /// Length of the longest special token: how far past a match an earlier-starting one can end.
    max_len: usize,
}

impl SpecialTokens {
    pub fn new(specials: Vec<(String, Rank)>) -> Result<Self> {
        let mut names = Vec::with_capacity(specials.len());
        let mut ids = Vec::with_capacity(specials.len());
        let mut by_name = FxHashMap::default();
        let mut by_id = FxHashMap::default();
        for (name, id) in specials {
            if name.is_empty() {
                return Err(Error::InvalidVocab(
                    "a special token cannot be the empty string".into(),
                ));
            }
            if by_name.contains_key(&name) {
                return Err(Error::InvalidVocab(format!(
                    "duplicate special token {name:?}"
                )));
            }
            if let Some(&other) = by_id.get(&id) {
                let other: &String = &names[other];
                return Err(Error::InvalidVocab(format!(
                    "special tokens {other:?} and {name:?} share id {id}"
                )));
            }
            by_name.insert(name.clone(), names.len());
            by_id.insert(id, names.len());
            names.push(name);
            ids.push(id);
        }
        let build = |kind| {
            if names.is_empty() {
                return Ok(None);
            }
            AhoCorasick::builder()
                .match_kind(kind)
                .build(&names)
                .map(Some)
                .map_err(|e| Error::InvalidVocab(format!("special tokens: {e}")))
        };
        let splitter = build(MatchKind::LeftmostLongest)?;
        let overlapping = build(MatchKind::Standard)?;
        let max_len = names.iter().map(String::len).max().unwrap_or(0);
        Ok(SpecialTokens {
            max_len,
            names,
            ids,
            by_name,
            by_id,
            splitter,
            overlapping,
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Rank)> + '_ {
        self.names
            .iter()
            .map(String::as_str)
            .zip(self.ids.iter().copied())
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn id_of(&self, name: &str) -> Option<Rank> {
        self.index_of(name).map(|i| self.ids[i])
    }

    pub fn name_of(&self, id: Rank) -> Option<&str> {
        self.by_id.get(&id).map(|&i| self.names[i].as_str())
    }

    /// A filter from a list of names; unknown names are ignored (tiktoken ignores them too).
    pub fn filter<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> SpecialFilter {
        let mut v = vec![false; self.names.len()];
        for n in names {
            if let Some(i) = self.index_of(n) {
                v[i] = true;
            }
        }
        SpecialFilter::Only(v)
    }

    /// The first (leftmost, then longest) occurrence in `text` of a special token in `filter`.
    pub fn find_any(&self, text: &str, filter: &SpecialFilter) -> Option<&str> {
        if filter.is_empty() {
            return None;
        }
        let ac = self.overlapping.as_ref()?;
        let mut best: Option<(usize, usize, usize)> = None;
        for m in ac.find_overlapping_iter(text) {
            let i = m.pattern().as_usize();
            if !filter.contains(i) {
                continue;
            }
            let key = (m.start(), usize::MAX - m.end(), i);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
            // Matches arrive in order of their end; none starting before this one can follow
            // once we are past the longest special token.
            if let Some((s, _, _)) = best {
                if m.end() > s + self.max_len {
                    break;
                }
            }
        }
        best.map(|(_, _, i)| self.names[i].as_str())
    }

    /// The next special token at or after `from` that `allowed` contains: (start, end, id).
    fn next_allowed(
        &self,
        text: &str,
        mut from: usize,
        allowed: &SpecialFilter,
    ) -> Option<(usize, usize, Rank)> {
        let ac = self.splitter.as_ref()?;
        while from < text.len() {
            let m = ac.find(Input::new(text).span(from..text.len()))?;
            let i = m.pattern().as_usize();
            if allowed.contains(i) {
                return Some((m.start(), m.end(), self.ids[i]));
            }
            // Like tiktoken: skip one position past a disallowed match and search again, so an
            // allowed token overlapping it can still be found.
            from = m.start() + 1;
            while !text.is_char_boundary(from) {
                from += 1;
            }
        }
        None
    }
}

/// A byte-level BPE encoding with tiktoken semantics.
#[derive(Debug, Clone)]
pub struct Encoding {
    pretok: Pretokenizer,
    bpe: Bpe,
    specials: SpecialTokens,
    /// Token ids sorted by their bytes; built on first use (encode_with_unstable,
    /// token_byte_values) so that loading stays fast.
    sorted: OnceLock<Vec<Rank>>,
}

impl Encoding {
    pub fn new(
        pattern: &str,
        ranks: Vec<(Vec<u8>, Rank)>,
        specials: Vec<(String, Rank)>,
    ) -> Result<Self> {
        let pretok = Pretokenizer::new(pattern)?;
        let bpe = Bpe::from_ranks(ranks)?;
        Self::from_parts(pretok, bpe, SpecialTokens::new(specials)?)
    }

    pub fn from_parts(pretok: Pretokenizer, bpe: Bpe, specials: SpecialTokens) -> Result<Self> {
        for (name, id) in specials.iter() {
            if bpe.token_bytes(id).is_some() {
                return Err(Error::InvalidVocab(format!(
                    "special token {name:?} has id {id}, which is already an ordinary token"
                )));
            }
        }
        Ok(Encoding {
            pretok,
            bpe,
            specials,
            sorted: OnceLock::new(),
        })
    }

    pub fn pattern(&self) -> &str {
        self.pretok.pattern()
    }

    pub fn pretokenizer(&self) -> &Pretokenizer {
        &self.pretok
    }

    pub fn bpe(&self) -> &Bpe {
        &self.bpe
    }

    pub fn specials(&self) -> &SpecialTokens {
        &self.specials
    }

    /// One past the largest id, ordinary or special (tiktoken's `max_token_value + 1`).
    pub fn n_vocab(&self) -> usize {
        let max_special = self
            .specials
            .ids
            .iter()
            .map(|&i| i as usize + 1)
            .max()
            .unwrap_or(0);
        self.bpe.n_slots().max(max_special)
    }

    /// Encodes `text` ignoring special tokens; returns how many tokens the last piece gave.
    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<Rank>) -> Result<usize> {
        let mut last = 0;
        let mut failure = None;
        let bytes = text.as_bytes();
        self.pretok.for_each_match(text, |s, e| {
            let before = out.len();
            if let Err(err) = self.bpe.encode_piece(&bytes[s..e], out) {
                failure.get_or_insert(err);
            }
            last = out.len() - before;
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }

    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<Rank>> {
        let mut out = Vec::with_capacity(text.len() / 3);
        self.encode_ordinary_into(text, &mut out)?;
        Ok(out)
    }

    /// tiktoken's `encode`: special tokens in `allowed` become their ids, any other special-token
    /// text is encoded as ordinary text. Also returns the token count of the last piece.
    pub fn encode_with_last_piece(
        &self,
        text: &str,
        allowed: &SpecialFilter,
    ) -> Result<(Vec<Rank>, usize)> {
        let mut out = Vec::with_capacity(text.len() / 3);
        if allowed.is_empty() {
            let last = self.encode_ordinary_into(text, &mut out)?;
            return Ok((out, last));
        }
        let mut start = 0;
        let mut last;
        loop {
            let next = self.specials.next_allowed(text, start, allowed);
            let end = next.map_or(text.len(), |(s, _, _)| s);
            last = self.encode_ordinary_into(&text[start..end], &mut out)?;
            match next {
                Some((_, e, id)) => {
                    out.push(id);
                    start = e;
                }
                None => break,
            }
        }
        Ok((out, last))
    }

    /// The full tiktoken `encode`: raise on disallowed special tokens, then encode.
    pub fn encode(
        &self,
        text: &str,
        allowed: &SpecialFilter,
        disallowed: &SpecialFilter,
    ) -> Result<Vec<Rank>> {
        self.check_disallowed(text, disallowed)?;
        Ok(self.encode_with_last_piece(text, allowed)?.0)
    }

    pub fn check_disallowed(&self, text: &str, disallowed: &SpecialFilter) -> Result<()> {
        match self.specials.find_any(text, disallowed) {
            Some(token) => Err(Error::DisallowedSpecial {
                token: token.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The bytes of one token, ordinary or special.
    pub fn token_bytes(&self, id: Rank) -> Result<&[u8]> {
        if let Some(b) = self.bpe.token_bytes(id) {
            return Ok(b);
        }
        match self.specials.name_of(id) {
            Some(name) => Ok(name.as_bytes()),
            None => Err(Error::UnknownTokenId(id)),
        }
    }

    pub fn decode_bytes(&self, ids: &[Rank]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4 + 16);
        let mut rest = ids;
        // Ordinary tokens in bulk; stops only at special tokens and unknown ids.
        while let Some(k) = self.bpe.decode_append(rest, &mut out) {
            out.extend_from_slice(self.token_bytes(rest[k])?);
            rest = &rest[k + 1..];
        }
        Ok(out)
    }

    pub fn encode_single_token(&self, bytes: &[u8]) -> Result<Rank> {
        if let Some(id) = self.bpe.token_id(bytes) {
            return Ok(id);
        }
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| self.specials.id_of(s))
            .ok_or_else(|| Error::UnknownToken(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// BPE on one piece, as tiktoken's `_encode_single_piece` (whole-piece lookup first).
    pub fn encode_single_piece(&self, bytes: &[u8]) -> Result<Vec<Rank>> {
        let mut out = Vec::new();
        self.bpe.encode_piece(bytes, &mut out)?;
        Ok(out)
    }

    /// BPE merges only, without the whole-piece lookup (tiktoken's `byte_pair_encode`).
    fn merges_only(&self, bytes: &[u8]) -> Result<Vec<Rank>> {
        if bytes.len() == 1 {
            return self.encode_single_piece(bytes);
        }
        let mut out = Vec::new();
        self.bpe.merge_without_lookup(bytes, &mut out)?;
        Ok(out)
    }

    fn sorted_ids(&self) -> &[Rank] {
        self.sorted.get_or_init(|| {
            let mut ids: Vec<Rank> = self.bpe.vocab().map(|(_, id)| id).collect();
            ids.sort_unstable_by(|&a, &b| self.bpe.token_bytes(a).cmp(&self.bpe.token_bytes(b)));
            ids
        })
    }

    /// All ordinary token byte strings, sorted (tiktoken's `token_byte_values`).
    pub fn token_byte_values(&self) -> Vec<&[u8]> {
        self.sorted_ids()
            .iter()
            .filter_map(|&id| self.bpe.token_bytes(id))
            .collect()
    }

    /// Ids of ordinary tokens whose bytes start with `prefix`, in byte order.
    fn ids_with_prefix(&self, prefix: &[u8]) -> &[Rank] {
        let ids = self.sorted_ids();
        let bytes = |id: Rank| self.bpe.token_bytes(id).unwrap_or_default();
        let lo = ids.partition_point(|&id| bytes(id) < prefix);
        let hi = lo + ids[lo..].partition_point(|&id| bytes(id).starts_with(prefix));
        &ids[lo..hi]
    }

    /// tiktoken's `encode_with_unstable`: the stable prefix of the encoding, and every token
    /// sequence the unstable tail could become once more text is appended. Completions come back
    /// sorted (tiktoken returns them in hash order).
    pub fn encode_with_unstable(
        &self,
        text: &str,
        allowed: &SpecialFilter,
    ) -> Result<(Vec<Rank>, Vec<Vec<Rank>>)> {
        let (mut tokens, mut last) = self.encode_with_last_piece(text, allowed)?;
        if last == 0 {
            return Ok((tokens, Vec::new()));
        }
        // Regex splits at whitespace can disappear when text is appended (e.g. "\n" + " "), so
        // trailing all-whitespace tokens are treated as unstable too, as tiktoken does.
        let all_space = |id: Rank| {
            self.bpe
                .token_bytes(id)
                .is_some_and(|b| b.iter().all(|c| matches!(c, b' ' | b'\n' | b'\t')))
        };
        if all_space(tokens[tokens.len() - last]) {
            while last < tokens.len() && all_space(tokens[tokens.len() - last - 1]) {
                last += 1;
            }
        }
        let unstable = self.decode_bytes(&tokens[tokens.len() - last..])?;
        tokens.truncate(tokens.len() - last);
        let mut completions: FxHashSet<Vec<Rank>> = FxHashSet::default();
        if unstable.is_empty() {
            return Ok((tokens, Vec::new()));
        }
        for &id in self.ids_with_prefix(&unstable) {
            completions.insert(vec![id]);
        }
        for i in 1..unstable.len() {
            let (prefix, suffix) = unstable.split_at(i);
            for &id in self.ids_with_prefix(suffix) {
                let possibility = [prefix, self.bpe.token_bytes(id).unwrap_or_default()].concat();
                let encoded = match std::str::from_utf8(&possibility) {
                    Ok(s) => self.encode_ordinary(s)?,
                    Err(_) => self.merges_only(&possibility)?,
                };
                let mut seq = Vec::new();
                let mut seq_len = 0;
                for token in encoded {
                    seq.push(token);
                    seq_len += self.token_bytes(token)?.len();
                    if seq_len >= unstable.len() {
                        break;
                    }
                }
                completions.insert(seq);
            }
        }
        // `\s+(?!\S)` can split a trailing whitespace char off once a non-space follows.
        if unstable.len() > 1 {
            let (last_char, size) = decode_last_utf8(&unstable);
            if unstable.len() - size > 0 && last_char.is_some_and(char::is_whitespace) {
                let cut = unstable.len() - size;
                let mut re = self.merges_only(&unstable[..cut])?;
                re.extend(self.merges_only(&unstable[cut..])?);
                completions.insert(re);
            }
        }
        let mut completions: Vec<Vec<Rank>> = completions.into_iter().collect();
        completions.sort_unstable();
        Ok((tokens, completions))
    }
}

/// The last UTF-8 character of `bytes` and its length, like `bstr::decode_last_utf8` (which
/// tiktoken uses); for an invalid tail the char is `None` and the length is not used.
fn decode_last_utf8(bytes: &[u8]) -> (Option<char>, usize) {
    let n = bytes.len();
    for len in 1..=4.min(n) {
        let tail = &bytes[n - len..];
        if len < n.min(4) && (tail[0] & 0xC0) == 0x80 {
            continue;
        }
        return match std::str::from_utf8(tail) {
            Ok(s) => (s.chars().next(), len),
            Err(_) => (None, 1),
        };
    }
    (None, 1)
}

/// Maps `f` over `items` on up to `threads` scoped threads (dynamic scheduling, so one long
/// document does not hold up a whole chunk). Order is preserved.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let per_thread: Vec<Vec<(usize, R)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break local;
                        }
                        local.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    for (i, r) in per_thread.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| r.expect("every index is processed exactly once"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Encoding {
        let mut v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        for (i, t) in [
            "he", "ll", "hell", "hello", " w", " wo", "or", "ld", " world",
        ]
        .iter()
        .enumerate()
        {
            v.push((t.as_bytes().to_vec(), 256 + i as Rank));
        }
        let specials = vec![
            ("<|eot|>".to_string(), 1000),
            ("<|eot|>x".to_string(), 1001),
        ];
        Encoding::new(r"\w+| ?\w+|\s+|[^\w\s]+", v, specials).unwrap()
    }

    #[test]
    fn specials_follow_allowed_and_disallowed() {
        let e = toy();
        let all = SpecialFilter::All;
        let none = SpecialFilter::Nothing;
        let ids = e.encode("hello<|eot|> world", &all, &none).unwrap();
        assert_eq!(ids, vec![259, 1000, 264]);
        // Longest special wins at the same position.
        assert_eq!(e.encode("<|eot|>x", &all, &none).unwrap(), vec![1001]);
        let err = e.encode("hello<|eot|>", &none, &all).unwrap_err();
        assert_eq!(
            err,
            Error::DisallowedSpecial {
                token: "<|eot|>".into()
            }
        );
        let plain = e.encode("hello<|eot|>", &none, &none).unwrap();
        assert_eq!(e.decode_bytes(&plain).unwrap(), b"hello<|eot|>");
        assert!(plain.iter().all(|&t| t < 1000));
        let only_x = e.specials().filter(["<|eot|>x"]);
        assert_eq!(
            e.encode("<|eot|>", &only_x, &none).unwrap(),
            e.encode_ordinary("<|eot|>").unwrap()
        );
    }

    #[test]
    fn decode_errors_name_the_id() {
        let e = toy();
        assert_eq!(
            e.decode_bytes(&[5000]).unwrap_err(),
            Error::UnknownTokenId(5000)
        );
        assert_eq!(e.token_bytes(1000).unwrap(), b"<|eot|>");
    }

    #[test]
    fn special_ids_may_not_collide_with_ordinary_ids() {
        let v: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
        let e = Encoding::new(r"\w+", v, vec![("<s>".into(), 3)]).unwrap_err();
        assert!(e.to_string().contains("already an ordinary token"), "{e}");
    }

    #[test]
    fn par_map_preserves_order() {
        let items: Vec<usize> = (0..1000).collect();
        assert_eq!(
            par_map(&items, 4, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }

    #[test]
    fn decode_last_utf8_matches_bstr_convention() {
        assert_eq!(decode_last_utf8(b"ab "), (Some(' '), 1));
        assert_eq!(
            decode_last_utf8("a\u{3000}".as_bytes()),
            (Some('\u{3000}'), 3)
        );
        assert_eq!(decode_last_utf8(b"a\xe3\x80"), (None, 1));
    }
}
