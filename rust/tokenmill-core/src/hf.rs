//! Hugging Face `tokenizer.json` files for byte-level BPE models.
//!
//! The pipeline mirrors `tokenizers` step by step, because ids *and* offsets must come out
//! identical: added tokens are cut out first; each remaining segment runs through the
//! pre-tokenizer steps (Split / Digits / ByteLevel, possibly in a Sequence); each piece is
//! BPE-encoded with Hugging Face merge priorities; post-processors add template tokens and trim
//! offsets. Whatever the file asks for that is not reproduced exactly is refused with
//! [`Error::Unsupported`] naming the feature, never approximated.

use std::borrow::Cow;

use aho_corasick::{AhoCorasick, MatchKind};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::bpe::{Bpe, MissingByte};
use crate::bytes_unicode;
use crate::encoding::{par_map, Encoding, SpecialTokens};
use crate::error::{Error, Result};
use crate::normalize;
use crate::pretokenize::Pretokenizer;
use crate::str_table::StrTable;
use crate::Rank;

/// The regex of the ByteLevel pre-tokenizer when `use_regex` is true.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

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
    Split {
        matcher: Matcher,
        behavior: Behavior,
        invert: bool,
    },
    ByteLevel {
        add_prefix_space: bool,
        regex: Option<Pretokenizer>,
    },
}

#[derive(Debug, Clone)]
enum TemplatePiece {
    Special {
        ids: Vec<Rank>,
        tokens: Vec<String>,
        type_id: u32,
    },
    Sequence {
        type_id: u32,
    },
}

#[derive(Debug, Clone)]
enum PostStep {
    ByteLevel {
        trim_offsets: bool,
        add_prefix_space: bool,
    },
    Template {
        single: Vec<TemplatePiece>,
    },
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
    /// (start, end) in characters (Unicode scalar values) of the input text.
    pub offsets: Vec<(usize, usize)>,
    pub special_tokens_mask: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// Token strings that do not come from the model vocabulary (added and template tokens),
    /// by position, in order; see [`HfTokenizer::tokens`].
    overrides: Vec<(usize, String)>,
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
    strings: StrTable,
    /// What the decoder turns each added token into (model tokens decode from `bpe`).
    decoded_added: FxHashMap<Rank, Vec<u8>>,
    decoder_byte_level: bool,
    /// The file's normalizer is NFC.
    nfc: bool,
}

/// Text between added tokens, or an added token, as [`HfTokenizer::walk`] reports them.
enum Part<'a> {
    /// `added[idx]`, matched as `matched` at original byte range `span`.
    Added {
        idx: usize,
        span: (usize, usize),
        matched: &'a str,
    },
    /// `view[start..end]` goes to the pre-tokenizer; `view` is the original text, or the
    /// normalized text of the segment with each byte's original range in `align`.
    Text {
        view: &'a str,
        start: usize,
        end: usize,
        align: Option<&'a [(usize, usize)]>,
    },
}

/// The original byte range of bytes `[a, b)` of a view (see [`Part::Text`]).
#[inline]
fn to_original(align: Option<&[(usize, usize)]>, a: usize, b: usize) -> (usize, usize) {
    match align {
        None => (a, b),
        Some(al) => (al[a].0, al[b - 1].1),
    }
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
        let bad = |msg: String| Error::file(source_name, msg);
        // serde would also accept a JSON array for a struct (fields by position).
        if !json.trim_start().starts_with('{') {
            return Err(bad("expected a JSON object at the top level".into()));
        }
        let root: RootRepr = serde_json::from_str(json)
            .map_err(|e| bad(format!("not a valid tokenizer.json: {e}")))?;

        // --- normalizer: none, or NFC (Qwen's files), alone or as a one-step Sequence.
        let norm = &root.normalizer;
        let nfc_only = |v: &Value| get_str(v, "type") == Some("NFC");
        let nfc = if norm.is_null() {
            false
        } else if nfc_only(norm)
            || (get_str(norm, "type") == Some("Sequence")
                && matches!(norm.get("normalizers").and_then(Value::as_array),
                    Some(steps) if steps.len() == 1 && nfc_only(&steps[0])))
        {
            true
        } else {
            return Err(unsupported(format!(
                "normalizer {:?} (only none or NFC is supported)",
                get_str(norm, "type").unwrap_or("?")
            )));
        };
        if !root.truncation.is_null() || !root.padding.is_null() {
            return Err(unsupported("truncation or padding settings in the file"));
        }

        // --- model: checked field by field before the large vocab and merges are parsed.
        let model_raw = root
            .model
            .ok_or_else(|| bad("no \"model\" section".into()))?;
        let model: ModelRepr =
            serde_json::from_str(model_raw.get()).map_err(|e| bad(format!("model: {e}")))?;
        let model_type =
            model
                .ty
                .as_deref()
                .unwrap_or(if model.merges.is_some() { "BPE" } else { "?" });
        if model_type != "BPE" {
            return Err(unsupported(format!(
                "model type {model_type} (only BPE is supported)"
            )));
        }
        if !model.dropout.is_null() {
            return Err(unsupported("BPE dropout (non-deterministic)"));
        }
        for (key, v) in [
            (
                "continuing_subword_prefix",
                &model.continuing_subword_prefix,
            ),
            ("end_of_word_suffix", &model.end_of_word_suffix),
        ] {
            if !is_null_or_empty(Some(v)) {
                return Err(unsupported(format!("BPE {key}")));
            }
        }
        if model.byte_fallback.unwrap_or(false) {
            return Err(unsupported("BPE byte_fallback (not a byte-level BPE)"));
        }
        let ignore_merges = model.ignore_merges.unwrap_or(false);
        let vocab: VocabRepr = serde_json::from_str(
            model
                .vocab
                .ok_or_else(|| bad("model.vocab is missing".into()))?
                .get(),
        )
        .map_err(|e| bad(format!("model.vocab: {e}")))?;
        let merges_list: Vec<MergeRepr> = serde_json::from_str(
            model
                .merges
                .ok_or_else(|| bad("model.merges is missing".into()))?
                .get(),
        )
        .map_err(|e| bad(format!("model.merges: {e}")))?;

        let max_id = vocab
            .0
            .iter()
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut strings = StrTable::new(vocab.0.iter().map(|(t, id)| (t.as_ref(), *id)), max_id)
            .map_err(|(id, prev, token)| {
                bad(format!(
                    "model.vocab: tokens {prev:?} and {token:?} share id {id}"
                ))
            })?;
        // A token listed twice keeps its later id, as serde's map does.
        strings.index(vocab.0.iter().map(|(_, id)| *id));
        let mut byte_vocab = Vec::with_capacity(vocab.0.len());
        for (token, id) in &vocab.0 {
            // Strings outside the byte alphabet can never come out of byte-level
            // pre-tokenization; they stay addressable by id but take no part in merging.
            if let Some(bytes) = bytes_unicode::decode_token(token) {
                byte_vocab.push((bytes, *id));
            }
        }
        drop(vocab);

        let mut merges = Vec::with_capacity(merges_list.len());
        let mut buf = String::new();
        for (i, m) in merges_list.iter().enumerate() {
            let (l, r) = match m {
                MergeRepr::Joined(s) => {
                    let mut it = s.splitn(2, ' ');
                    match (it.next(), it.next()) {
                        (Some(l), Some(r)) if !r.contains(' ') => (l, r),
                        _ => {
                            return Err(bad(format!(
                                "model.merges[{i}] = {s:?} is not two tokens separated by a space"
                            )))
                        }
                    }
                }
                MergeRepr::Pair(l, r) => (l.as_ref(), r.as_ref()),
            };
            let id = |t: &str| {
                strings.id_of(t).ok_or_else(|| {
                    bad(format!(
                        "model.merges[{i}] ({l} {r}) names unknown token {t:?}"
                    ))
                })
            };
            let (lid, rid) = (id(l)?, id(r)?);
            buf.clear();
            buf.push_str(l);
            buf.push_str(r);
            let mid = strings.id_of(buf.as_str()).ok_or_else(|| {
                bad(format!(
                    "model.merges[{i}] ({l} {r}) produces {buf:?}, which is not in model.vocab"
                ))
            })?;
            merges.push((lid, rid, mid));
        }
        let missing = match &model.unk_token {
            Some(unk) => MissingByte::Unk {
                id: strings
                    .id_of(unk.as_str())
                    .ok_or_else(|| bad(format!("model.unk_token {unk:?} is not in model.vocab")))?,
                fuse: model.fuse_unk.unwrap_or(false),
            },
            None => MissingByte::Drop,
        };
        let bpe = Bpe::from_merge_ids(byte_vocab, &merges, ignore_merges, missing)?;

        // --- pre-tokenizer: must end up byte-level.
        let mut pre = Vec::new();
        if !root.pre_tokenizer.is_null() {
            Self::parse_pre(&root.pre_tokenizer, &mut pre)?;
        }
        let byte_level_steps = pre
            .iter()
            .filter(|s| matches!(s, PreStep::ByteLevel { .. }))
            .count();
        if byte_level_steps != 1 || !matches!(pre.last(), Some(PreStep::ByteLevel { .. })) {
            return Err(unsupported(
                "a pre_tokenizer that does not end in exactly one ByteLevel step (not a byte-level BPE)",
            ));
        }

        // --- added tokens
        let mut added = Vec::new();
        let mut added_by_content = FxHashMap::default();
        let mut added_by_id = FxHashMap::default();
        let empty = Vec::new();
        let added_list = match &root.added_tokens {
            Value::Null => &empty,
            Value::Array(a) => a,
            _ => return Err(bad("added_tokens is not a list".into())),
        };
        let mut raw_idx = Vec::new();
        let mut norm_idx = Vec::new();
        {
            let list = added_list;
            for (i, t) in list.iter().enumerate() {
                let content = get_str(t, "content")
                    .ok_or_else(|| bad(format!("added_tokens[{i}] has no content")))?;
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .filter(|&i| i < u32::MAX as u64 / 2)
                    .ok_or_else(|| bad(format!("added_tokens[{i}] has no valid id")))?
                    as Rank;
                if content.is_empty() {
                    return Err(bad(format!("added_tokens[{i}] has empty content")));
                }
                if get_bool(t, "single_word", false) {
                    return Err(unsupported(format!(
                        "added token {content:?} with single_word"
                    )));
                }
                let special = get_bool(t, "special", false);
                let tok = AddedToken {
                    content: content.to_string(),
                    id,
                    special,
                    lstrip: get_bool(t, "lstrip", false),
                    rstrip: get_bool(t, "rstrip", false),
                };
                // Raw tokens are matched on the original text, normalized ones on the
                // normalized segments between them (HF's two passes; see `walk`).
                if get_bool(t, "normalized", !special) {
                    norm_idx.push(added.len());
                } else {
                    raw_idx.push(added.len());
                }
                added_by_content.insert(tok.content.clone(), added.len());
                added_by_id.insert(id, added.len());
                added.push(tok);
            }
        }
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
        if !root.post_processor.is_null() {
            Self::parse_post(&root.post_processor, &mut post, source_name)?;
        }

        // --- decoder
        let decoder_byte_level = match &root.decoder {
            Value::Null => false,
            d => match get_str(d, "type") {
                Some("ByteLevel") => true,
                other => return Err(unsupported(format!("decoder {:?}", other.unwrap_or("?")))),
            },
        };
        let decoded_added = added
            .iter()
            .map(|t| (t.id, Self::decode_token_str(&t.content, decoder_byte_level)))
            .collect();

        Ok(HfTokenizer {
            pre,
            bpe,
            post,
            added,
            added_by_content,
            added_by_id,
            raw_matcher,
            normalized_matcher,
            strings,
            decoded_added,
            decoder_byte_level,
            nfc,
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
                    .ok_or_else(|| {
                        unsupported("Sequence pre_tokenizer without a pretokenizers list")
                    })?;
                for s in steps {
                    Self::parse_pre(s, out)?;
                }
            }
            Some("ByteLevel") => {
                let regex = if get_bool(p, "use_regex", true) {
                    Some(Pretokenizer::new(GPT2_PATTERN)?)
                } else {
                    None
                };
                out.push(PreStep::ByteLevel {
                    add_prefix_space: get_bool(p, "add_prefix_space", true),
                    regex,
                });
            }
            Some("Split") => {
                let pattern = p
                    .get("pattern")
                    .ok_or_else(|| unsupported("Split pre_tokenizer without a pattern"))?;
                let regex = if let Some(r) = get_str(pattern, "Regex") {
                    onig_to_fancy(r)?
                } else if let Some(s) = get_str(pattern, "String") {
                    fancy_regex::escape(s).into_owned()
                } else {
                    return Err(unsupported(
                        "Split pattern that is neither Regex nor String",
                    ));
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
                behavior: if get_bool(p, "individual_digits", false) {
                    Behavior::Isolated
                } else {
                    Behavior::Contiguous
                },
                invert: false,
            }),
            other => {
                return Err(unsupported(format!(
                    "pre_tokenizer {:?}",
                    other.unwrap_or("?")
                )))
            }
        }
        Ok(())
    }

    fn parse_post(p: &Value, out: &mut Vec<PostStep>, source_name: &str) -> Result<()> {
        match get_str(p, "type") {
            Some("Sequence") => {
                let steps = p
                    .get("processors")
                    .and_then(Value::as_array)
                    .ok_or_else(|| {
                        unsupported("Sequence post_processor without a processors list")
                    })?;
                for s in steps {
                    Self::parse_post(s, out, source_name)?;
                }
            }
            Some("ByteLevel") => out.push(PostStep::ByteLevel {
                trim_offsets: get_bool(p, "trim_offsets", true),
                add_prefix_space: get_bool(p, "add_prefix_space", true),
            }),
            Some("TemplateProcessing") => {
                let single = p.get("single").and_then(Value::as_array).ok_or_else(|| {
                    Error::file(source_name, "TemplateProcessing without a single template")
                })?;
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
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_u64)
                                    .map(|i| i as Rank)
                                    .collect()
                            })
                            .unwrap_or_default();
                        let tokens: Vec<String> = entry
                            .get("tokens")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(String::from)
                                    .collect()
                            })
                            .unwrap_or_default();
                        if ids.len() != tokens.len() {
                            return Err(Error::file(
                                source_name,
                                format!("special token {name:?}: ids and tokens differ in length"),
                            ));
                        }
                        pieces.push(TemplatePiece::Special {
                            ids,
                            tokens,
                            type_id,
                        });
                    } else if let Some(s) = piece.get("Sequence") {
                        if get_str(s, "id") != Some("A") {
                            return Err(unsupported(
                                "single-sequence template referring to sequence B",
                            ));
                        }
                        let type_id = s.get("type_id").and_then(Value::as_u64).unwrap_or(0) as u32;
                        pieces.push(TemplatePiece::Sequence { type_id });
                    } else {
                        return Err(Error::file(
                            source_name,
                            "template piece is neither SpecialToken nor Sequence",
                        ));
                    }
                }
                out.push(PostStep::Template { single: pieces });
            }
            other => {
                return Err(unsupported(format!(
                    "post_processor {:?}",
                    other.unwrap_or("?")
                )))
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ accessors

    pub fn vocab_size(&self, with_added_tokens: bool) -> usize {
        if with_added_tokens {
            let extra = self
                .added
                .iter()
                .filter(|t| self.strings.id_of(&t.content).is_none())
                .count();
            self.strings.len() + extra
        } else {
            self.strings.len()
        }
    }

    /// The vocabulary: model tokens, then added tokens (which win on conflicts, as in HF).
    pub fn vocab(&self, with_added_tokens: bool) -> Vec<(&str, Rank)> {
        let mut v: Vec<(&str, Rank)> = self.strings.iter().collect();
        if with_added_tokens {
            v.extend(self.added.iter().map(|t| (t.content.as_str(), t.id)));
        }
        v
    }

    pub fn token_to_id(&self, token: &str) -> Option<Rank> {
        match self.added_by_content.get(token) {
            Some(&i) => Some(self.added[i].id),
            None => self.strings.id_of(token),
        }
    }

    pub fn id_to_token(&self, id: Rank) -> Option<&str> {
        if let Some(&i) = self.added_by_id.get(&id) {
            return Some(&self.added[i].content);
        }
        self.strings.str_of(id)
    }

    pub fn is_special(&self, id: Rank) -> bool {
        self.added_by_id
            .get(&id)
            .is_some_and(|&i| self.added[i].special)
    }

    pub fn added_tokens(&self) -> impl Iterator<Item = (&str, Rank, bool)> + '_ {
        self.added
            .iter()
            .map(|t| (t.content.as_str(), t.id, t.special))
    }

    // ------------------------------------------------------------------ encoding

    /// Cuts the added tokens of `matcher` out of `text[start..end]`: (start, end, Some(added
    /// index)) for tokens, None for text between them.
    fn split_with(
        &self,
        matcher: Option<&AddedMatcher>,
        text: &str,
        start: usize,
        end: usize,
    ) -> Vec<(usize, usize, Option<usize>)> {
        let Some(matcher) = matcher else {
            return vec![(start, end, None)];
        };
        let mut next = Vec::new();
        let sub = &text[start..end];
        let mut cursor = 0;
        for m in matcher.ac.find_iter(sub) {
            let idx = matcher.tokens[m.pattern().as_usize()];
            let tok = &self.added[idx];
            let (mut a, mut b) = (m.start(), m.end());
            if tok.lstrip {
                let trimmed = sub[..a].trim_end_matches(char::is_whitespace).len();
                a = trimmed.max(cursor);
            }
            if tok.rstrip {
                b += sub[b..].len() - sub[b..].trim_start_matches(char::is_whitespace).len();
            }
            if cursor < a {
                next.push((start + cursor, start + a, None));
            }
            next.push((start + a, start + b, Some(idx)));
            cursor = b;
        }
        if cursor < sub.len() {
            next.push((start + cursor, end, None));
        }
        next
    }

    /// HF's `extract_and_normalize`: added tokens with `normalized: false` are cut out of the
    /// original text, each remaining segment is normalized, and the `normalized: true` ones are
    /// cut out of that; `f` sees every part in order.
    fn walk(&self, text: &str, mut f: impl FnMut(Part<'_>) -> Result<()>) -> Result<()> {
        for (s, e, added) in self.split_with(self.raw_matcher.as_ref(), text, 0, text.len()) {
            if let Some(idx) = added {
                let matched = &text[s..e];
                f(Part::Added {
                    idx,
                    span: (s, e),
                    matched,
                })?;
                continue;
            }
            let norm = if self.nfc {
                normalize::nfc_aligned(&text[s..e], s)
            } else {
                None
            };
            let (view, vs, ve, align) = match &norm {
                Some((n, al)) => (n.as_str(), 0, n.len(), Some(al.as_slice())),
                None => (text, s, e, None),
            };
            for (a, b, added) in self.split_with(self.normalized_matcher.as_ref(), view, vs, ve) {
                f(match added {
                    Some(idx) => Part::Added {
                        idx,
                        span: to_original(align, a, b),
                        matched: &view[a..b],
                    },
                    None => Part::Text {
                        view,
                        start: a,
                        end: b,
                        align,
                    },
                })?;
            }
        }
        Ok(())
    }

    /// Runs the pre-tokenizer steps over one segment `[start, end)` of `text`.
    fn pre_tokenize(&self, text: &str, start: usize, end: usize) -> Result<Vec<Piece>> {
        let mut pieces = vec![Piece {
            start,
            end,
            prefix: None,
        }];
        for step in &self.pre {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                match step {
                    PreStep::Split {
                        matcher,
                        behavior,
                        invert,
                    } => {
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
                    PreStep::ByteLevel {
                        add_prefix_space,
                        regex,
                    } => {
                        let mut piece = piece;
                        if *add_prefix_space
                            && piece.prefix.is_none()
                            && !text[piece.start..piece.end].starts_with(' ')
                        {
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
        self.walk(text, |part| {
            let (view, start, end, align) = match part {
                Part::Added { idx, span, matched } => {
                    // HF reports the matched text, which includes whitespace taken by
                    // lstrip/rstrip.
                    enc.overrides.push((enc.ids.len(), matched.to_string()));
                    enc.ids.push(self.added[idx].id);
                    enc.offsets.push(span);
                    return Ok(());
                }
                Part::Text {
                    view,
                    start,
                    end,
                    align,
                } => (view, start, end, align),
            };
            for piece in self.pre_tokenize(view, start, end)? {
                spans.clear();
                match piece.prefix {
                    None => self
                        .bpe
                        .encode_piece_spans(&view.as_bytes()[piece.start..piece.end], &mut spans)?,
                    Some(_) => self
                        .bpe
                        .encode_piece_spans(&piece.bytes(view), &mut spans)?,
                }
                for sp in &spans {
                    enc.ids.push(sp.id);
                    let first = piece.align(sp.start as usize, view).0;
                    let last = piece.align(sp.end as usize - 1, view).1;
                    enc.offsets.push(to_original(align, first, last));
                }
            }
            Ok(())
        })?;
        let n = enc.ids.len();
        enc.type_ids = vec![0; n];
        enc.special_tokens_mask = vec![0; n];

        for step in &self.post {
            match step {
                PostStep::ByteLevel {
                    trim_offsets: true,
                    add_prefix_space,
                } => self.trim_offsets_like_hf(&mut enc, *add_prefix_space),
                PostStep::ByteLevel { .. } => {}
                PostStep::Template { single } => {
                    if add_special_tokens {
                        apply_template(&mut enc, single);
                    }
                }
            }
        }
        enc.attention_mask = vec![1; enc.ids.len()];
        if !text.is_ascii() {
            let mut byte_to_char = vec![0u32; text.len() + 1];
            let mut c = 0;
            for (i, _) in text.char_indices() {
                byte_to_char[i] = c;
                c += 1;
            }
            byte_to_char[text.len()] = c;
            for o in &mut enc.offsets {
                *o = (byte_to_char[o.0] as usize, byte_to_char[o.1] as usize);
            }
        }
        Ok(enc)
    }

    /// The token strings of an encoding, as `tokenizers` reports them.
    pub fn tokens<'a>(&'a self, enc: &'a HfEncoding) -> Vec<&'a str> {
        let mut overrides = enc.overrides.iter().peekable();
        (0..enc.ids.len())
            .map(|i| match overrides.peek() {
                Some((pos, s)) if *pos == i => {
                    overrides.next();
                    s.as_str()
                }
                _ => self.model_token_str(enc.ids[i]),
            })
            .collect()
    }

    fn model_token_str(&self, id: Rank) -> &str {
        self.strings.str_of(id).unwrap_or_default()
    }

    /// The ByteLevel post-processor's `trim_offsets` (HF `process_offsets`): leading and
    /// trailing spaces of a token are cut off its offsets (byte offsets here; a space is a byte).
    fn trim_offsets_like_hf(&self, enc: &mut HfEncoding, add_prefix_space: bool) {
        let space = bytes_unicode::byte_to_char(b' ');
        let is_space = |c: &char| *c == space || c.is_whitespace();
        let spaces: Vec<(usize, usize)> = self
            .tokens(enc)
            .iter()
            .map(|t| {
                (
                    t.chars().take_while(is_space).count(),
                    t.chars().rev().take_while(is_space).count(),
                )
            })
            .collect();
        for (i, ((mut leading, trailing), offsets)) in
            spaces.into_iter().zip(enc.offsets.iter_mut()).enumerate()
        {
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

    /// Ids only: the same pipeline without strings and offsets.
    pub fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<Rank>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        self.walk(text, |part| {
            let (view, start, end) = match part {
                Part::Added { idx, .. } => {
                    ids.push(self.added[idx].id);
                    return Ok(());
                }
                Part::Text {
                    view, start, end, ..
                } => (view, start, end),
            };
            for piece in self.pre_tokenize(view, start, end)? {
                match piece.prefix {
                    None => self
                        .bpe
                        .encode_piece(&view.as_bytes()[piece.start..piece.end], &mut ids)?,
                    Some(_) => self.bpe.encode_piece(&piece.bytes(view), &mut ids)?,
                }
            }
            Ok(())
        })?;
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

    pub fn encode_batch(
        &self,
        texts: &[&str],
        add_special_tokens: bool,
        threads: usize,
    ) -> Result<Vec<HfEncoding>> {
        par_map(texts, threads, |t| self.encode(t, add_special_tokens))
            .into_iter()
            .collect()
    }

    /// Like `tokenizers.Tokenizer.decode`: unknown ids are skipped, as HF does.
    pub fn decode(&self, ids: &[Rank], skip_special_tokens: bool) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut first = true;
        for &id in ids {
            if skip_special_tokens && self.is_special(id) {
                continue;
            }
            let b: &[u8] = if let Some(b) = self.decoded_added.get(&id) {
                b
            } else if let Some(tok) = self.strings.str_of(id) {
                match self.bpe.token_bytes(id) {
                    Some(b) if self.decoder_byte_level => b,
                    // Outside the byte alphabet, or no byte-level decoder: the string itself.
                    _ => tok.as_bytes(),
                }
            } else {
                continue;
            };
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
        if self.nfc {
            // An Encoding works on bytes as given; byte-level models need that too.
            return Err(unsupported(
                "conversion to Encoding of a tokenizer with a normalizer",
            ));
        }
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
            return Err(unsupported(
                "conversion to Encoding with lstrip/rstrip added tokens",
            ));
        }
        let specials = self
            .added
            .iter()
            .map(|t| (t.content.clone(), t.id))
            .collect();
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
            None => Piece {
                start: self.start + a,
                end: self.start + b,
                prefix: None,
            },
            Some(p) if a == 0 => Piece {
                start: self.start,
                end: self.start + b - 1,
                prefix: Some(p),
            },
            Some(_) => Piece {
                start: self.start + a - 1,
                end: self.start + b - 1,
                prefix: None,
            },
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

/// HF compiles `Split` regexes with Oniguruma, which reads a few constructs differently from
/// fancy-regex. The one that occurs in real files is `X{n,m}+`: possessive in fancy-regex, but
/// `(?:X{n,m})+` in Oniguruma; with n = 1 that is simply `X+`. Other n are refused.
fn onig_to_fancy(pattern: &str) -> Result<String> {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            let n = pattern[i..]
                .chars()
                .take(2)
                .map(char::len_utf8)
                .sum::<usize>();
            out.push_str(&pattern[i..i + n]);
            i += n;
            continue;
        }
        if c == b'[' {
            in_class = true;
        } else if c == b']' {
            in_class = false;
        } else if c == b'{' && !in_class {
            if let Some(len) = pattern[i..].find('}') {
                let body = &pattern[i + 1..i + len];
                let counted =
                    !body.is_empty() && body.bytes().all(|x| x.is_ascii_digit() || x == b',');
                if counted && b.get(i + len + 1) == Some(&b'+') {
                    if body.split(',').next() == Some("1") && body.contains(',') {
                        out.push('+');
                        i += len + 2;
                        continue;
                    }
                    return Err(unsupported(format!(
                        "Split regex {pattern:?}: `{{{body}}}+` means a repeated interval in Oniguruma"
                    )));
                }
            }
        }
        let n = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + n]);
        i += n;
    }
    Ok(out)
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
fn apply_behavior(
    matches: Vec<(usize, usize, bool)>,
    behavior: Behavior,
) -> Vec<(usize, usize, bool)> {
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

fn apply_template(enc: &mut HfEncoding, single: &[TemplatePiece]) {
    let mut out = HfEncoding::default();
    for p in single {
        match p {
            TemplatePiece::Special {
                ids,
                tokens,
                type_id,
            } => {
                for (id, tok) in ids.iter().zip(tokens) {
                    out.overrides.push((out.ids.len(), tok.clone()));
                    out.ids.push(*id);
                    out.offsets.push((0, 0));
                    out.type_ids.push(*type_id);
                    out.special_tokens_mask.push(1);
                }
            }
            TemplatePiece::Sequence { type_id } => {
                let shift = out.ids.len();
                out.overrides
                    .extend(enc.overrides.iter().map(|(p, s)| (p + shift, s.clone())));
                out.ids.extend_from_slice(&enc.ids);
                out.offsets.extend_from_slice(&enc.offsets);
                out.type_ids
                    .extend(std::iter::repeat_n(*type_id, enc.ids.len()));
                out.special_tokens_mask
                    .extend_from_slice(&enc.special_tokens_mask);
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
            vocab.insert(
                bytes_unicode::byte_to_char(b).to_string(),
                Value::from(b as u64),
            );
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
        assert_eq!(t.tokens(&e)[..3], ["<s>", "a", "Ġhello"]);
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
        assert!(
            matches!(HfTokenizer::from_json(&j, "x"), Err(Error::Unsupported(m)) if m.contains("Whitespace"))
        );
        let j = j.replace(r#""type":"BPE""#, r#""type":"Unigram""#);
        assert!(
            matches!(HfTokenizer::from_json(&j, "x"), Err(Error::Unsupported(m)) if m.contains("Unigram"))
        );
        assert!(matches!(
            HfTokenizer::from_json("{", "f.json"),
            Err(Error::InvalidFile { .. })
        ));
    }

    #[test]
    fn oniguruma_repeated_intervals_are_translated() {
        assert_eq!(onig_to_fancy(r"\p{N}{1,3}+|a").unwrap(), r"\p{N}+|a");
        assert_eq!(
            onig_to_fancy(r"\p{N}{1,3}|[{]+").unwrap(),
            r"\p{N}{1,3}|[{]+"
        );
        assert_eq!(onig_to_fancy(r"\{1,2}+").unwrap(), r"\{1,2}+");
        assert!(onig_to_fancy(r"a{2,3}+").is_err());
    }

    #[test]
    fn split_behaviors_match_hf_definitions() {
        let m = vec![(0, 1, false), (1, 2, true), (2, 3, true), (3, 5, false)];
        assert_eq!(
            apply_behavior(m.clone(), Behavior::Removed),
            vec![(0, 1, false), (3, 5, false)]
        );
        assert_eq!(
            apply_behavior(m.clone(), Behavior::MergedWithPrevious),
            vec![(0, 2, false), (2, 3, false), (3, 5, false)]
        );
        assert_eq!(
            apply_behavior(m.clone(), Behavior::MergedWithNext),
            vec![(0, 1, false), (1, 2, false), (2, 5, false)]
        );
        assert_eq!(
            apply_behavior(m, Behavior::Contiguous),
            vec![(0, 1, false), (1, 3, false), (3, 5, false)]
        );
    }
}

// ---------------------------------------------------------------------- file representation
//
// Typed and borrowing where the file is large (vocab, merges), so that loading a 128k-token
// tokenizer.json does not build a DOM of a million JSON values; the small sections stay
// `Value`s so that unknown or unsupported types can be named in errors.

#[derive(serde::Deserialize)]
struct RootRepr<'a> {
    #[serde(borrow, default)]
    model: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    #[serde(default)]
    post_processor: Value,
    #[serde(default)]
    decoder: Value,
    #[serde(default)]
    added_tokens: Value,
    #[serde(default)]
    truncation: Value,
    #[serde(default)]
    padding: Value,
}

#[derive(serde::Deserialize)]
struct ModelRepr<'a> {
    #[serde(rename = "type", default)]
    ty: Option<String>,
    #[serde(default)]
    dropout: Value,
    #[serde(default)]
    continuing_subword_prefix: Value,
    #[serde(default)]
    end_of_word_suffix: Value,
    #[serde(default)]
    byte_fallback: Option<bool>,
    #[serde(default)]
    ignore_merges: Option<bool>,
    #[serde(default)]
    unk_token: Option<String>,
    #[serde(default)]
    fuse_unk: Option<bool>,
    #[serde(borrow, default)]
    vocab: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    merges: Option<&'a serde_json::value::RawValue>,
}

/// `model.vocab`: a JSON object of token string -> id, kept in file order.
struct VocabRepr<'a>(Vec<(Cow<'a, str>, Rank)>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for VocabRepr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = VocabRepr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of token -> id")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some((k, v)) = m.next_entry::<BorrowedStr<'a>, u64>()? {
                    if v >= u32::MAX as u64 / 2 {
                        return Err(serde::de::Error::custom(format!(
                            "token {:?} has invalid id {v}",
                            k.0
                        )));
                    }
                    out.push((k.0, v as Rank));
                }
                Ok(VocabRepr(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A string borrowed from the file when it has no escapes.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(BorrowedStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// One entry of `model.merges`: `"a b"` (older files) or `["a", "b"]` (newer ones).
enum MergeRepr<'a> {
    Joined(Cow<'a, str>),
    Pair(Cow<'a, str>, Cow<'a, str>),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for MergeRepr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = MergeRepr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"a b\" or [\"a\", \"b\"]")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(MergeRepr::Joined(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(MergeRepr::Joined(Cow::Owned(v.to_string())))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut s: S,
            ) -> std::result::Result<Self::Value, S::Error> {
                let l: BorrowedStr<'a> = s
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(0, &self))?;
                let r: BorrowedStr<'a> = s
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(1, &self))?;
                if s.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(3, &self));
                }
                Ok(MergeRepr::Pair(l.0, r.0))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}
