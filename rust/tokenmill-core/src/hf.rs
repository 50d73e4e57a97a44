//! Hugging Face `tokenizer.json` files for byte-level BPE models.
//!
//! The pipeline mirrors `tokenizers` step by step, because ids *and* offsets must come out
//! identical: added tokens are cut out first; each remaining segment runs through the
//! pre-tokenizer steps (Split / Digits / ByteLevel, possibly in a Sequence); each piece is
//! BPE-encoded with Hugging Face merge priorities; post-processors add template tokens and trim
//! offsets. Whatever the file asks for that is not reproduced exactly is refused with
//! [`Error::Unsupported`] naming the feature, never approximated.

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::bpe::{Bpe, MissingByte, Span};
use crate::bytes_unicode;
use crate::encoding::{par_map, Encoding, SpecialTokens};
use crate::error::{Error, Result};
use crate::pretokenize::Pretokenizer;
use crate::Rank;

/// The regex of the ByteLevel pre-tokenizer when `use_regex` is true.
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    Removed,
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

#[derive(Debug, Clone)]
enum Matcher {
    Regex(Pretokenizer),
    /// `Digits`: every `char::is_numeric` char is a match of its own.
    Numeric,
}

#[derive(Debug, Clone)]
enum PreStep {
    Split { matcher: Matcher, behavior: Behavior, invert: bool },
    ByteLevel { add_prefix_space: bool, regex: Option<Pretokenizer> },
}

#[derive(Debug, Clone)]
enum TemplatePiece {
    Special { ids: Vec<Rank>, tokens: Vec<String>, type_id: u32 },
    Sequence { type_id: u32 },
}

#[derive(Debug, Clone)]
enum PostStep {
    ByteLevel { trim_offsets: bool, add_prefix_space: bool },
    Template { single: Vec<TemplatePiece> },
}

#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: Rank,
    special: bool,
    lstrip: bool,
    rstrip: bool,
}

/// A set of added tokens matched as one automaton (leftmost, longest).
#[derive(Debug, Clone)]
struct AddedMatcher {
    ac: AhoCorasick,
    tokens: Vec<usize>,
}

/// The result of encoding one text: what `tokenizers.Encoding` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HfEncoding {
    pub ids: Vec<Rank>,
    pub type_ids: Vec<u32>,
    /// Token strings as written in the vocabulary.
    pub tokens: Vec<String>,
    /// (start, end) in characters (Unicode scalar values) of the input text.
    pub offsets: Vec<(usize, usize)>,
    pub special_tokens_mask: Vec<u32>,
    pub attention_mask: Vec<u32>,
}

/// A byte-level BPE tokenizer loaded from a `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    pre: Vec<PreStep>,
    bpe: Bpe,
    post: Vec<PostStep>,
    added: Vec<AddedToken>,
    added_by_content: FxHashMap<String, usize>,
    added_by_id: FxHashMap<Rank, usize>,
    /// Matched on the raw text first (`normalized: false`), then on what is left (`true`).
    raw_matcher: Option<AddedMatcher>,
    normalized_matcher: Option<AddedMatcher>,
    /// Vocabulary strings by id and back (model vocabulary only).
    id_to_str: Vec<Option<String>>,
    str_to_id: FxHashMap<String, Rank>,
    /// What the ByteLevel decoder turns each id into.
    decoded: FxHashMap<Rank, Vec<u8>>,
    decoder_byte_level: bool,
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn get_bool(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn is_null_or_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

impl HfTokenizer {
    /// Parses `tokenizer.json` contents. `source_name` names the file in errors.
    pub fn from_json(json: &str, source_name: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(json)
            .map_err(|e| Error::file(source_name, format!("not valid JSON: {e}")))?;
        let bad = |msg: String| Error::file(source_name, msg);
        if !root.is_object() {
            return Err(bad("expected a JSON object at the top level".into()));
        }

        // --- normalizer: byte-level BPE files have none.
        match root.get("normalizer") {
            None | Some(Value::Null) => {}
            Some(n) => {
                return Err(unsupported(format!(
                    "normalizer {:?} (only byte-level BPE without a normalizer is supported)",
                    get_str(n, "type").unwrap_or("?")
                )))
            }
        }
        for key in ["truncation", "padding"] {
            if !matches!(root.get(key), None | Some(Value::Null)) {
                return Err(unsupported(format!("{key} settings in the file")));
            }
        }

        // --- model
        let model = root.get("model").ok_or_else(|| bad("no \"model\" section".into()))?;
        let model_type = get_str(model, "type").unwrap_or(if model.get("merges").is_some() { "BPE" } else { "?" });
        if model_type != "BPE" {
            return Err(unsupported(format!("model type {model_type} (only BPE is supported)")));
        }
        if !matches!(model.get("dropout"), None | Some(Value::Null)) {
            return Err(unsupported("BPE dropout (non-deterministic)"));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if !is_null_or_empty(model.get(key)) {
                return Err(unsupported(format!("BPE {key}")));
            }
        }
        if get_bool(model, "byte_fallback", false) {
            return Err(unsupported("BPE byte_fallback (not a byte-level BPE)"));
        }
        let ignore_merges = get_bool(model, "ignore_merges", false);
        let vocab_obj = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("model.vocab is missing or not an object".into()))?;

        let mut str_to_id = FxHashMap::with_capacity_and_hasher(vocab_obj.len(), Default::default());
        let mut byte_vocab = Vec::with_capacity(vocab_obj.len());
        let mut max_id = 0usize;
        for (token, id) in vocab_obj {
            let id = id
                .as_u64()
                .filter(|&i| i < u32::MAX as u64 / 2)
                .ok_or_else(|| bad(format!("model.vocab[{token:?}] is not a valid token id")))? as Rank;
            max_id = max_id.max(id as usize + 1);
            str_to_id.insert(token.clone(), id);
            // Strings outside the byte alphabet can never come out of byte-level
            // pre-tokenization; they stay addressable by id but take no part in merging.
            if let Some(bytes) = bytes_unicode::decode_token(token) {
                byte_vocab.push((bytes, id));
            }
        }
        let mut id_to_str: Vec<Option<String>> = vec![None; max_id];
        for (s, &id) in &str_to_id {
            if let Some(prev) = &id_to_str[id as usize] {
                return Err(bad(format!("model.vocab: tokens {prev:?} and {s:?} share id {id}")));
            }
            id_to_str[id as usize] = Some(s.clone());
        }

        let merges_val = model.get("merges").and_then(Value::as_array).ok_or_else(|| bad("model.merges is missing or not a list".into()))?;
        let mut merges = Vec::with_capacity(merges_val.len());
        let mut skipped_unreachable = 0usize;
        for (i, m) in merges_val.iter().enumerate() {
            let (l, r) = match m {
                Value::String(s) => {
                    let mut it = s.splitn(2, ' ');
                    match (it.next(), it.next()) {
                        (Some(l), Some(r)) if !r.contains(' ') => (l.to_string(), r.to_string()),
                        _ => return Err(bad(format!("model.merges[{i}] = {s:?} is not two tokens separated by a space"))),
                    }
                }
                Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_string) => {
                    (a[0].as_str().unwrap_or_default().to_string(), a[1].as_str().unwrap_or_default().to_string())
                }
                _ => return Err(bad(format!("model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]"))),
            };
            for t in [&l, &r] {
                if !str_to_id.contains_key(t.as_str()) {
                    return Err(bad(format!("model.merges[{i}] ({l} {r}) names unknown token {t:?}")));
                }
            }
            let merged = format!("{l}{r}");
            if !str_to_id.contains_key(&merged) {
                return Err(bad(format!("model.merges[{i}] ({l} {r}) produces {merged:?}, which is not in model.vocab")));
            }
            match (bytes_unicode::decode_token(&l), bytes_unicode::decode_token(&r)) {
                (Some(lb), Some(rb)) => merges.push((lb, rb)),
                _ => skipped_unreachable += 1,
            }
        }
        let _ = skipped_unreachable;
        let missing = match get_str(model, "unk_token") {
            Some(unk) => MissingByte::Unk {
                id: *str_to_id.get(unk).ok_or_else(|| bad(format!("model.unk_token {unk:?} is not in model.vocab")))?,
                fuse: get_bool(model, "fuse_unk", false),
            },
            None => MissingByte::Drop,
        };
        let bpe = Bpe::from_merges(byte_vocab, &merges, ignore_merges, missing, source_name)?;

        // --- pre-tokenizer: must end up byte-level.
        let mut pre = Vec::new();
        match root.get("pre_tokenizer") {
            None | Some(Value::Null) => {}
            Some(p) => Self::parse_pre(p, &mut pre)?,
        }
        let byte_level_steps = pre.iter().filter(|s| matches!(s, PreStep::ByteLevel { .. })).count();
        if byte_level_steps != 1 || !matches!(pre.last(), Some(PreStep::ByteLevel { .. })) {
            return Err(unsupported(
                "a pre_tokenizer that does not end in exactly one ByteLevel step (not a byte-level BPE)",
            ));
        }

        // --- added tokens
        let mut added = Vec::new();
        let mut added_by_content = FxHashMap::default();
        let mut added_by_id = FxHashMap::default();
        if let Some(list) = root.get("added_tokens") {
            let list = list.as_array().ok_or_else(|| bad("added_tokens is not a list".into()))?;
            for (i, t) in list.iter().enumerate() {
                let content = get_str(t, "content").ok_or_else(|| bad(format!("added_tokens[{i}] has no content")))?;
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .filter(|&i| i < u32::MAX as u64 / 2)
                    .ok_or_else(|| bad(format!("added_tokens[{i}] has no valid id")))? as Rank;
                if content.is_empty() {
                    return Err(bad(format!("added_tokens[{i}] has empty content")));
                }
                if get_bool(t, "single_word", false) {
                    return Err(unsupported(format!("added token {content:?} with single_word")));
                }
                let special = get_bool(t, "special", false);
                let tok = AddedToken {
                    content: content.to_string(),
                    id,
                    special,
                    lstrip: get_bool(t, "lstrip", false),
                    rstrip: get_bool(t, "rstrip", false),
                };
                added_by_content.insert(tok.content.clone(), added.len());
                added_by_id.insert(id, added.len());
                let _normalized = get_bool(t, "normalized", !special);
                added.push(tok);
            }
        }
        // Without a normalizer, "normalized" and raw matching see the same text; HF still runs
        // the two passes separately, and so do we.
        let raw_idx: Vec<usize> = (0..added.len())
            .filter(|&i| !get_bool(&root["added_tokens"][i], "normalized", !added[i].special))
            .collect();
        let norm_idx: Vec<usize> = (0..added.len()).filter(|i| !raw_idx.contains(i)).collect();
        let build = |idx: Vec<usize>| -> Result<Option<AddedMatcher>> {
            if idx.is_empty() {
                return Ok(None);
            }
            let ac = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(idx.iter().map(|&i| added[i].content.as_str()))
                .map_err(|e| Error::file(source_name, format!("added_tokens: {e}")))?;
            Ok(Some(AddedMatcher { ac, tokens: idx }))
        };
        let raw_matcher = build(raw_idx)?;
        let normalized_matcher = build(norm_idx)?;

        // --- post-processor
        let mut post = Vec::new();
        match root.get("post_processor") {
            None | Some(Value::Null) => {}
            Some(p) => Self::parse_post(p, &str_to_id, &added_by_content, &added, &mut post, source_name)?,
        }

        // --- decoder
        let decoder_byte_level = match root.get("decoder") {
            None | Some(Value::Null) => false,
            Some(d) => match get_str(d, "type") {
                Some("ByteLevel") => true,
                other => return Err(unsupported(format!("decoder {:?}", other.unwrap_or("?")))),
            },
        };

        let mut decoded = FxHashMap::with_capacity_and_hasher(str_to_id.len() + added.len(), Default::default());
        for (s, &id) in &str_to_id {
            decoded.insert(id, Self::decode_token_str(s, decoder_byte_level));
        }
        for t in &added {
            decoded.insert(t.id, Self::decode_token_str(&t.content, decoder_byte_level));
        }

        Ok(HfTokenizer {
            pre,
            bpe,
            post,
            added,
            added_by_content,
            added_by_id,
            raw_matcher,
            normalized_matcher,
            id_to_str,
            str_to_id,
            decoded,
            decoder_byte_level,
        })
    }

    fn decode_token_str(s: &str, byte_level: bool) -> Vec<u8> {
        if byte_level {
            // Like the ByteLevel decoder: a token with any char outside the alphabet is kept
            // as its own UTF-8.
            bytes_unicode::decode_token(s).unwrap_or_else(|| s.as_bytes().to_vec())
        } else {
            s.as_bytes().to_vec()
        }
    }

    fn parse_pre(p: &Value, out: &mut Vec<PreStep>) -> Result<()> {
        match get_str(p, "type") {
            Some("Sequence") => {
                let steps = p
                    .get("pretokenizers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| unsupported("Sequence pre_tokenizer without a pretokenizers list"))?;
                for s in steps {
                    Self::parse_pre(s, out)?;
                }
            }
            Some("ByteLevel") => {
                let regex = if get_bool(p, "use_regex", true) { Some(Pretokenizer::new(GPT2_PATTERN)?) } else { None };
                out.push(PreStep::ByteLevel { add_prefix_space: get_bool(p, "add_prefix_space", true), regex });
            }
            Some("Split") => {
                let pattern = p.get("pattern").ok_or_else(|| unsupported("Split pre_tokenizer without a pattern"))?;
                let regex = if let Some(r) = get_str(pattern, "Regex") {
                    r.to_string()
                } else if let Some(s) = get_str(pattern, "String") {
                    fancy_regex::escape(s).into_owned()
                } else {
                    return Err(unsupported("Split pattern that is neither Regex nor String"));
                };
                let behavior = match get_str(p, "behavior") {
                    Some("Removed") => Behavior::Removed,
                    Some("Isolated") => Behavior::Isolated,
                    Some("MergedWithPrevious") => Behavior::MergedWithPrevious,
                    Some("MergedWithNext") => Behavior::MergedWithNext,
                    Some("Contiguous") => Behavior::Contiguous,
                    other => return Err(unsupported(format!("Split behavior {other:?}"))),
                };
                out.push(PreStep::Split {
                    matcher: Matcher::Regex(Pretokenizer::new(&regex)?),
                    behavior,
                    invert: get_bool(p, "invert", false),
                });
            }
            Some("Digits") => out.push(PreStep::Split {
                matcher: Matcher::Numeric,
                behavior: if get_bool(p, "individual_digits", false) { Behavior::Isolated } else { Behavior::Contiguous },
                invert: false,
            }),
            other => return Err(unsupported(format!("pre_tokenizer {:?}", other.unwrap_or("?")))),
        }
        Ok(())
    }

    fn parse_post(
        p: &Value,
        vocab: &FxHashMap<String, Rank>,
        added_by_content: &FxHashMap<String, usize>,
        added: &[AddedToken],
        out: &mut Vec<PostStep>,
        source_name: &str,
    ) -> Result<()> {
        match get_str(p, "type") {
            Some("Sequence") => {
                let steps = p
                    .get("processors")
                    .and_then(Value::as_array)
                    .ok_or_else(|| unsupported("Sequence post_processor without a processors list"))?;
                for s in steps {
                    Self::parse_post(s, vocab, added_by_content, added, out, source_name)?;
                }
            }
            Some("ByteLevel") => out.push(PostStep::ByteLevel {
                trim_offsets: get_bool(p, "trim_offsets", true),
                add_prefix_space: get_bool(p, "add_prefix_space", true),
            }),
            Some("TemplateProcessing") => {
                let single = p
                    .get("single")
                    .and_then(Value::as_array)
                    .ok_or_else(|| Error::file(source_name, "TemplateProcessing without a single template"))?;
                let specials = p.get("special_tokens");
                let mut pieces = Vec::new();
                for piece in single {
                    if let Some(s) = piece.get("SpecialToken") {
                        let name = get_str(s, "id").unwrap_or_default();
                        let type_id = s.get("type_id").and_then(Value::as_u64).unwrap_or(0) as u32;
                        let entry = specials.and_then(|m| m.get(name)).ok_or_else(|| {
                            Error::file(source_name, format!("template names special token {name:?}, missing from special_tokens"))
                        })?;
                        let ids: Vec<Rank> = entry
                            .get("ids")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_u64).map(|i| i as Rank).collect())
                            .unwrap_or_default();
                        let tokens: Vec<String> = entry
                            .get("tokens")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                            .unwrap_or_default();
                        if ids.len() != tokens.len() {
                            return Err(Error::file(source_name, format!("special token {name:?}: ids and tokens differ in length")));
                        }
                        pieces.push(TemplatePiece::Special { ids, tokens, type_id });
                    } else if let Some(s) = piece.get("Sequence") {
                        if get_str(s, "id") != Some("A") {
                            return Err(unsupported("single-sequence template referring to sequence B"));
                        }
                        let type_id = s.get("type_id").and_then(Value::as_u64).unwrap_or(0) as u32;
                        pieces.push(TemplatePiece::Sequence { type_id });
                    } else {
                        return Err(Error::file(source_name, "template piece is neither SpecialToken nor Sequence"));
                    }
                }
                let _ = (vocab, added_by_content, added);
                out.push(PostStep::Template { single: pieces });
            }
            other => return Err(unsupported(format!("post_processor {:?}", other.unwrap_or("?")))),
        }
        Ok(())
    }

    // ------------------------------------------------------------------ accessors

    pub fn vocab_size(&self, with_added_tokens: bool) -> usize {
        if with_added_tokens {
            let extra = self.added.iter().filter(|t| !self.str_to_id.contains_key(&t.content)).count();
            self.str_to_id.len() + extra
        } else {
            self.str_to_id.len()
        }
    }

    /// The vocabulary: model tokens, then added tokens (which win on conflicts, as in HF).
    pub fn vocab(&self, with_added_tokens: bool) -> Vec<(&str, Rank)> {
        let mut v: Vec<(&str, Rank)> = self.str_to_id.iter().map(|(s, &i)| (s.as_str(), i)).collect();
        if with_added_tokens {
            v.extend(self.added.iter().map(|t| (t.content.as_str(), t.id)));
        }
        v
    }

    pub fn token_to_id(&self, token: &str) -> Option<Rank> {
        match self.added_by_content.get(token) {
            Some(&i) => Some(self.added[i].id),
            None => self.str_to_id.get(token).copied(),
        }
    }

    pub fn id_to_token(&self, id: Rank) -> Option<&str> {
        if let Some(&i) = self.added_by_id.get(&id) {
            return Some(&self.added[i].content);
        }
        self.id_to_str.get(id as usize).and_then(|s| s.as_deref())
    }

    pub fn is_special(&self, id: Rank) -> bool {
        self.added_by_id.get(&id).is_some_and(|&i| self.added[i].special)
    }

    pub fn added_tokens(&self) -> impl Iterator<Item = (&str, Rank, bool)> + '_ {
        self.added.iter().map(|t| (t.content.as_str(), t.id, t.special))
    }

    // ------------------------------------------------------------------ encoding

    /// Cuts added tokens out of `text`: (start, end, Some(added index)) for tokens, None for text.
    fn split_added(&self, text: &str) -> Vec<(usize, usize, Option<usize>)> {
        let mut segments = vec![(0, text.len(), None)];
        for matcher in [&self.raw_matcher, &self.normalized_matcher].into_iter().flatten() {
            let mut next = Vec::with_capacity(segments.len());
            for seg in segments {
                if seg.2.is_some() {
                    next.push(seg);
                    continue;
                }
                let (s0, e0) = (seg.0, seg.1);
                let sub = &text[s0..e0];
                let mut cursor = 0;
                for m in matcher.ac.find_iter(sub) {
                    let idx = matcher.tokens[m.pattern().as_usize()];
                    let tok = &self.added[idx];
                    let (mut start, mut stop) = (m.start(), m.end());
                    if tok.lstrip {
                        let trimmed = sub[..start].trim_end_matches(char::is_whitespace).len();
                        start = trimmed.max(cursor);
                    }
                    if tok.rstrip {
                        stop += sub[stop..].len() - sub[stop..].trim_start_matches(char::is_whitespace).len();
                    }
                    if cursor < start {
                        next.push((s0 + cursor, s0 + start, None));
                    }
                    next.push((s0 + start, s0 + stop, Some(idx)));
                    cursor = stop;
                }
                if cursor < sub.len() {
                    next.push((s0 + cursor, e0, None));
                }
            }
            segments = next;
        }
        segments
    }

    /// Runs the pre-tokenizer steps over one segment `[start, end)` of `text`.
    fn pre_tokenize(&self, text: &str, start: usize, end: usize) -> Result<Vec<Piece>> {
        let mut pieces = vec![Piece { start, end, prefix: None }];
        for step in &self.pre {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                match step {
                    PreStep::Split { matcher, behavior, invert } => {
                        let s = piece.string(text);
                        let mut matches = Vec::new();
                        find_matches(matcher, &s, &mut matches)?;
                        if *invert {
                            for m in &mut matches {
                                m.2 = !m.2;
                            }
                        }
                        for (a, b, _) in apply_behavior(matches, *behavior) {
                            if a < b {
                                next.push(piece.sub(a, b, text));
                            }
                        }
                    }
                    PreStep::ByteLevel { add_prefix_space, regex } => {
                        let mut piece = piece;
                        if *add_prefix_space && piece.prefix.is_none() && !text[piece.start..piece.end].starts_with(' ') {
                            // HF prepends to every split, aligned with the split's first char.
                            if let Some(c) = text[piece.start..piece.end].chars().next() {
                                piece.prefix = Some((piece.start, piece.start + c.len_utf8()));
                            }
                        }
                        match regex {
                            None => next.push(piece),
                            Some(re) => {
                                let s = piece.string(text);
                                let mut failure = None;
                                re.for_each_match(&s, |a, b| {
                                    if a < b {
                                        next.push(piece.sub(a, b, text));
                                    }
                                })
                                .unwrap_or_else(|e| failure = Some(e));
                                if let Some(e) = failure {
                                    return Err(e);
                                }
                            }
                        }
                    }
                }
            }
            pieces = next;
        }
        Ok(pieces)
    }

    /// Encodes `text` like `tokenizers.Tokenizer.encode(text, add_special_tokens)`.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<HfEncoding> {
        let mut enc = HfEncoding::default();
        // Byte offsets first; converted to char offsets at the end.
        let mut spans = Vec::new();
        for (start, end, added) in self.split_added(text) {
            if let Some(i) = added {
                let t = &self.added[i];
                enc.ids.push(t.id);
                enc.tokens.push(t.content.clone());
                enc.offsets.push((start, end));
                continue;
            }
            for piece in self.pre_tokenize(text, start, end)? {
                let bytes = piece.bytes(text);
                spans.clear();
                self.bpe.encode_piece_spans(&bytes, &mut spans)?;
                for Span { id, start: a, end: b } in spans.iter().copied() {
                    enc.ids.push(id);
                    enc.tokens.push(self.id_to_token(id).unwrap_or_default().to_string());
                    enc.offsets.push((piece.align(a as usize, text).0, piece.align(b as usize - 1, text).1));
                }
            }
        }
        let n = enc.ids.len();
        enc.type_ids = vec![0; n];
        enc.special_tokens_mask = vec![0; n];

        for step in &self.post {
            match step {
                PostStep::ByteLevel { trim_offsets, add_prefix_space } => {
                    if *trim_offsets {
                        trim_offsets_like_hf(&mut enc, *add_prefix_space);
                    }
                }
                PostStep::Template { single } => {
                    if add_special_tokens {
                        apply_template(&mut enc, single);
                    }
                }
            }
        }
        enc.attention_mask = vec![1; enc.ids.len()];
        // Byte offsets to char offsets.
        let mut byte_to_char = vec![0usize; text.len() + 1];
        let mut c = 0;
        for (i, _) in text.char_indices() {
            byte_to_char[i] = c;
            c += 1;
        }
        byte_to_char[text.len()] = c;
        for o in &mut enc.offsets {
            *o = (byte_to_char[o.0], byte_to_char[o.1]);
        }
        Ok(enc)
    }

    /// Ids only: the same pipeline without strings and offsets.
    pub fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Rank>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        for (start, end, added) in self.split_added(text) {
            if let Some(i) = added {
                ids.push(self.added[i].id);
                continue;
            }
            for piece in self.pre_tokenize(text, start, end)? {
                match piece.prefix {
                    None => self.bpe.encode_piece(&text.as_bytes()[piece.start..piece.end], &mut ids)?,
                    Some(_) => self.bpe.encode_piece(&piece.bytes(text), &mut ids)?,
                }
            }
        }
        if add_special_tokens {
            for step in &self.post {
                if let PostStep::Template { single } = step {
                    let mut out = Vec::with_capacity(ids.len() + 2);
                    for p in single {
                        match p {
                            TemplatePiece::Special { ids: sids, .. } => out.extend_from_slice(sids),
                            TemplatePiece::Sequence { .. } => out.extend_from_slice(&ids),
                        }
                    }
                    ids = out;
                }
            }
        }
        Ok(ids)
    }

    pub fn encode_batch(&self, texts: &[&str], add_special_tokens: bool, threads: usize) -> Result<Vec<HfEncoding>> {
        par_map(texts, threads, |t| self.encode(t, add_special_tokens)).into_iter().collect()
    }

    /// Like `tokenizers.Tokenizer.decode`: unknown ids are skipped, as HF does.
    pub fn decode(&self, ids: &[Rank], skip_special_tokens: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut first = true;
        for &id in ids {
            if skip_special_tokens && self.is_special(id) {
                continue;
            }
            let Some(b) = self.decoded.get(&id) else { continue };
            if !self.decoder_byte_level && !first {
                bytes.push(b' ');
            }
            bytes.extend_from_slice(b);
            first = false;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A tiktoken-style [`Encoding`] with the same ids, where the pipeline allows it: no added
    /// tokens outside the specials, a single regex split then ByteLevel without prefix space.
    pub fn to_encoding(&self) -> Result<Encoding> {
        let pattern = match self.pre.as_slice() {
            [PreStep::ByteLevel { add_prefix_space: false, regex: Some(re) }] => re.clone(),
            [PreStep::Split { matcher: Matcher::Regex(re), behavior: Behavior::Isolated, invert: false }, PreStep::ByteLevel { add_prefix_space: false, regex: None }] => {
                re.clone()
            }
            _ => {
                return Err(unsupported(
                    "conversion to Encoding needs a single regex Split (Isolated) + ByteLevel without prefix space",
                ))
            }
        };
        if self.added.iter().any(|t| t.lstrip || t.rstrip) {
            return Err(unsupported("conversion to Encoding with lstrip/rstrip added tokens"));
        }
        let specials = self.added.iter().map(|t| (t.content.clone(), t.id)).collect();
        Encoding::from_parts(pattern, self.bpe.clone(), SpecialTokens::new(specials)?)
    }
}

/// A pre-tokenized piece: `text[start..end]`, possibly behind a space that a ByteLevel step
/// prepended (aligned, for offsets, with the original char at `prefix`).
#[derive(Debug, Clone, Copy)]
struct Piece {
    start: usize,
    end: usize,
    prefix: Option<(usize, usize)>,
}

impl Piece {
    fn string<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        match self.prefix {
            None => std::borrow::Cow::Borrowed(&text[self.start..self.end]),
            Some(_) => std::borrow::Cow::Owned(format!(" {}", &text[self.start..self.end])),
        }
    }

    fn bytes(&self, text: &str) -> Vec<u8> {
        self.string(text).into_owned().into_bytes()
    }

    /// The sub-piece `[a, b)` of this piece's string.
    fn sub(&self, a: usize, b: usize, _text: &str) -> Piece {
        match self.prefix {
            None => Piece { start: self.start + a, end: self.start + b, prefix: None },
            Some(p) if a == 0 => Piece { start: self.start, end: self.start + b - 1, prefix: Some(p) },
            Some(_) => Piece { start: self.start + a - 1, end: self.start + b - 1, prefix: None },
        }
    }

    /// The original byte range a byte of this piece's string stands for: the whole char it is
    /// part of (HF aligns every byte of a char with the full char).
    fn align(&self, i: usize, text: &str) -> (usize, usize) {
        let i = match self.prefix {
            Some(p) if i == 0 => return p,
            Some(_) => i - 1,
            None => i,
        };
        let pos = self.start + i;
        let mut s = pos;
        while !text.is_char_boundary(s) {
            s -= 1;
        }
        let mut e = pos + 1;
        while e < text.len() && !text.is_char_boundary(e) {
            e += 1;
        }
        (s, e)
    }
}

/// Matches and the gaps between them, covering `s` (HF's `Pattern::find_matches`).
fn find_matches(matcher: &Matcher, s: &str, out: &mut Vec<(usize, usize, bool)>) -> Result<()> {
    if s.is_empty() {
        out.push((0, 0, false));
        return Ok(());
    }
    let mut prev = 0;
    match matcher {
        Matcher::Regex(re) => re.for_each_match(s, |a, b| {
            if prev != a {
                out.push((prev, a, false));
            }
            out.push((a, b, true));
            prev = b;
        })?,
        Matcher::Numeric => {
            for (i, c) in s.char_indices() {
                if c.is_numeric() {
                    if prev != i {
                        out.push((prev, i, false));
                    }
                    out.push((i, i + c.len_utf8(), true));
                    prev = i + c.len_utf8();
                }
            }
        }
    }
    if prev != s.len() {
        out.push((prev, s.len(), false));
    }
    Ok(())
}

/// HF's `SplitDelimiterBehavior`, applied to the output of [`find_matches`].
fn apply_behavior(matches: Vec<(usize, usize, bool)>, behavior: Behavior) -> Vec<(usize, usize, bool)> {
    match behavior {
        Behavior::Isolated => matches,
        Behavior::Removed => matches.into_iter().filter(|m| !m.2).collect(),
        Behavior::MergedWithPrevious => {
            let mut prev_match = false;
            let mut acc: Vec<(usize, usize, bool)> = Vec::new();
            for (a, b, is_match) in matches {
                match acc.last_mut() {
                    Some(last) if is_match && !prev_match => last.1 = b,
                    _ => acc.push((a, b, false)),
                }
                prev_match = is_match;
            }
            acc
        }
        Behavior::MergedWithNext => {
            let mut prev_match = false;
            let mut acc: Vec<(usize, usize, bool)> = Vec::new();
            for (a, b, is_match) in matches.into_iter().rev() {
                match acc.last_mut() {
                    Some(last) if is_match && !prev_match => last.0 = a,
                    _ => acc.push((a, b, false)),
                }
                prev_match = is_match;
            }
            acc.reverse();
            acc
        }
        Behavior::Contiguous => {
            let mut prev_match = false;
            let mut acc: Vec<(usize, usize, bool)> = Vec::new();
            for (a, b, is_match) in matches {
                match acc.last_mut() {
                    Some(last) if is_match == prev_match => last.1 = b,
                    _ => acc.push((a, b, false)),
                }
                prev_match = is_match;
            }
            acc
        }
    }
}

/// The ByteLevel post-processor's `trim_offsets` (HF `process_offsets`): leading and trailing
/// spaces of a token are cut off its offsets (byte offsets here; each space is one byte).
fn trim_offsets_like_hf(enc: &mut HfEncoding, add_prefix_space: bool) {
    let space = bytes_unicode::byte_to_char(b' ');
    for (i, (token, offsets)) in enc.tokens.iter().zip(enc.offsets.iter_mut()).enumerate() {
        let is_space = |c: &char| *c == space || c.is_whitespace();
        let mut leading = token.chars().take_while(is_space).count();
        let trailing = token.chars().rev().take_while(is_space).count();
        if leading > 0 || trailing > 0 {
            if leading > 0 {
                let is_first = i == 0 || offsets.0 == 0;
                if is_first && add_prefix_space && leading == 1 {
                    leading = 0;
                }
                offsets.0 = (offsets.0 + leading).min(offsets.1);
            }
            if trailing > 0 && offsets.1 >= trailing {
                offsets.1 = (offsets.1 - trailing).max(offsets.0);
            }
        }
    }
}

fn apply_template(enc: &mut HfEncoding, single: &[TemplatePiece]) {
    let mut out = HfEncoding::default();
    for p in single {
        match p {
            TemplatePiece::Special { ids, tokens, type_id } => {
                for (id, tok) in ids.iter().zip(tokens) {
                    out.ids.push(*id);
                    out.tokens.push(tok.clone());
                    out.offsets.push((0, 0));
                    out.type_ids.push(*type_id);
                    out.special_tokens_mask.push(1);
                }
            }
            TemplatePiece::Sequence { type_id } => {
                out.ids.extend_from_slice(&enc.ids);
                out.tokens.extend(enc.tokens.iter().cloned());
                out.offsets.extend_from_slice(&enc.offsets);
                out.type_ids.extend(std::iter::repeat_n(*type_id, enc.ids.len()));
                out.special_tokens_mask.extend_from_slice(&enc.special_tokens_mask);
            }
        }
    }
    *enc = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_json(pre: &str, post: &str) -> String {
        let mut vocab = serde_json::Map::new();
        for b in 0..=255u8 {
            vocab.insert(bytes_unicode::byte_to_char(b).to_string(), Value::from(b as u64));
        }
        for (i, t) in ["Ġh", "Ġhe", "ll", "Ġhell", "Ġhello"].iter().enumerate() {
            vocab.insert(t.to_string(), Value::from(256 + i as u64));
        }
        let v = serde_json::json!({
            "version": "1.0",
            "added_tokens": [{"id": 300, "content": "<s>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}],
            "normalizer": null,
            "pre_tokenizer": serde_json::from_str::<Value>(pre).unwrap(),
            "post_processor": serde_json::from_str::<Value>(post).unwrap(),
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": ["Ġ h", "Ġh e", "l l", "Ġhe ll", "Ġhell o"]}
        });
        v.to_string()
    }

    #[test]
    fn encodes_with_template_and_offsets() {
        let j = tiny_json(
            r#"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#,
            r#"{"type":"Sequence","processors":[{"type":"ByteLevel","trim_offsets":true,"add_prefix_space":false},
               {"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
                "pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[300],"tokens":["<s>"]}}}]}"#,
        );
        let t = HfTokenizer::from_json(&j, "tiny.json").unwrap();
        let e = t.encode("a hello<s>é", true).unwrap();
        assert_eq!(e.ids[0], 300);
        assert_eq!(e.tokens[1..3], ["a".to_string(), "Ġhello".to_string()]);
        // "Ġhello" covers " hello" (bytes 1..7); trim_offsets drops the space.
        assert_eq!(e.offsets[2], (2, 7));
        assert_eq!(e.ids[3], 300);
        // é is two bytes, two tokens, both aligned with the whole char.
        assert_eq!(e.offsets[4..], [(10, 11), (10, 11)]);
        assert_eq!(e.ids, {
            let mut v = vec![300];
            v.extend(t.encode_ids("a hello<s>é", false).unwrap());
            v
        });
        assert_eq!(t.decode(&e.ids, true), "a helloé");
        assert_eq!(t.decode(&e.ids, false), "<s>a hello<s>é");
    }

    #[test]
    fn refuses_what_it_cannot_reproduce() {
        let j = tiny_json(r#"{"type":"Whitespace"}"#, "null");
        assert!(matches!(HfTokenizer::from_json(&j, "x"), Err(Error::Unsupported(m)) if m.contains("Whitespace")));
        let j = j.replace(r#""type":"BPE""#, r#""type":"Unigram""#);
        assert!(matches!(HfTokenizer::from_json(&j, "x"), Err(Error::Unsupported(m)) if m.contains("Unigram")));
        assert!(matches!(HfTokenizer::from_json("{", "f.json"), Err(Error::InvalidFile { .. })));
    }

    #[test]
    fn split_behaviors_match_hf_definitions() {
        let m = vec![(0, 1, false), (1, 2, true), (2, 3, true), (3, 5, false)];
        assert_eq!(apply_behavior(m.clone(), Behavior::Removed), vec![(0, 1, false), (3, 5, false)]);
        assert_eq!(apply_behavior(m.clone(), Behavior::MergedWithPrevious), vec![(0, 2, false), (2, 3, false), (3, 5, false)]);
        assert_eq!(apply_behavior(m.clone(), Behavior::MergedWithNext), vec![(0, 1, false), (1, 2, false), (2, 5, false)]);
        assert_eq!(apply_behavior(m, Behavior::Contiguous), vec![(0, 1, false), (1, 3, false), (3, 5, false)]);
    }
}
