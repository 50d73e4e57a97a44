use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::pretokenize::{GPT2_PATTERN, LLAMA3_PATTERN};

/// Marsaglia's xorshift64, for the float tests' samples (cheap, and the same sequence for a
/// seed whatever the `rand` version).
pub(super) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The distance between two floats in units in the last place.
pub(super) fn ulps(a: f64, b: f64) -> u64 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
}

/// A small vocabulary: all bytes plus merges that make the interesting cases happen (tokens
/// across what would be piece boundaries, contractions, whitespace runs).
fn toy(pattern: &str) -> ByteLm {
    let mut ranks: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
    for t in [
        "ab", " a", "  ", "ba", "aa", "'s", "'l", "ll", "'ll", " b", "\n ", " \n", "..", ".a",
        "12", "123", "abc", "bc", "a ", "\n\n", "s ", "e",
    ] {
        if !ranks.iter().any(|(b, _)| b == t.as_bytes()) {
            let r = ranks.len() as Rank;
            ranks.push((t.as_bytes().to_vec(), r));
        }
    }
    ByteLm::new(Encoding::new(pattern, ranks, vec![]).unwrap()).unwrap()
}

const ALPHABET: [&str; 14] = [
    "a",
    "b",
    "c",
    "s",
    "l",
    "'",
    " ",
    "\n",
    ".",
    "1",
    "2",
    "é",
    "\u{3000}",
    "\u{20000}",
];

/// Up to `max` characters drawn from `alphabet`, as bytes.
fn chars_from(rng: &mut StdRng, alphabet: &[&str], max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(alphabet[rng.random_range(0..alphabet.len())].as_bytes());
    }
    out
}

fn random_text(rng: &mut StdRng, max_chars: usize) -> Vec<u8> {
    let mut out = chars_from(rng, &ALPHABET, max_chars);
    if rng.random_bool(0.1) {
        out.push(0xc3); // an incomplete character at the end
    }
    out
}

#[test]
fn canonical_matches_encode_ordinary_on_text() {
    for pattern in [GPT2_PATTERN, LLAMA3_PATTERN] {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2000 {
            let x = random_text(&mut rng, 12);
            if let Ok(s) = std::str::from_utf8(&x) {
                assert_eq!(
                    lm.canonical(&x).unwrap(),
                    lm.enc.encode_ordinary(s).unwrap()
                );
            }
        }
    }
}

#[test]
fn stable_point_holds_for_extensions() {
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..20_000 {
            let x = random_text(&mut rng, 10);
            let e = random_text(&mut rng, 6);
            let sigma = lm.stable_point(&x).unwrap();
            let head = lm.stable_head(&x, sigma).unwrap();
            // The tree's one-pass form gives the same.
            assert_eq!(lm.stable(&x).unwrap(), (sigma, head.clone()));
            let full = [&x[..], &e[..]].concat();
            let mut pieces = Vec::new();
            lm.pieces(&full, &mut pieces).unwrap();
            assert!(
                sigma == 0 || pieces.iter().any(|&(a, _)| a == sigma),
                "{pattern}: no boundary at {sigma} in {:?} + {:?}",
                String::from_utf8_lossy(&x),
                String::from_utf8_lossy(&e)
            );
            assert!(
                lm.canonical(&full).unwrap().starts_with(&head),
                "{pattern}: {:?} + {:?} at {sigma}",
                String::from_utf8_lossy(&x),
                String::from_utf8_lossy(&e)
            );
        }
    }
}

#[test]
fn prefixes_of_canonical_encodings_are_valid() {
    for pattern in [GPT2_PATTERN, LLAMA3_PATTERN] {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let x = random_text(&mut rng, 10);
            let c = lm.canonical(&x).unwrap();
            for k in 0..=c.len() {
                assert!(
                    lm.is_valid(&c[..k]).unwrap(),
                    "{:?} {k}",
                    String::from_utf8_lossy(&x)
                );
            }
        }
    }
}

#[test]
fn tree_contains_every_cover_from_extensions() {
    // Every cover of x found by encoding an extension of x must be in the tree.
    for pattern in [GPT2_PATTERN, LLAMA3_PATTERN] {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..300 {
            let x = random_text(&mut rng, 8);
            let tree = lm.tree(&x).unwrap();
            for _ in 0..30 {
                let e = random_text(&mut rng, 4);
                let full = [&x[..], &e[..]].concat();
                let c = lm.canonical(&full).unwrap();
                assert!(c.starts_with(&tree.trunk));
                // The longest prefix of c inside x, minus nothing: a node unless it ends too early.
                let mut len = 0;
                let mut k = tree.trunk.len();
                while k < c.len() {
                    let l = lm.token_bytes(c[k]).unwrap().len();
                    if tree.sigma + len + l > x.len() {
                        break;
                    }
                    len += l;
                    k += 1;
                }
                let local = c[tree.trunk.len()..k].to_vec();
                if x.len() - tree.sigma - len < lm.vocab.max_len() {
                    assert!(tree.nodes.contains(&local), "missing node {local:?}");
                    assert!(lm
                        .is_valid(&c[tree.trunk.len()..(k + 1).min(c.len())])
                        .unwrap());
                }
            }
        }
    }
}

#[test]
fn marginal_sums_to_prefix_mass_for_uniform_model() {
    // With a model that puts no mass on anything (all -inf), bins are empty; with uniform
    // log-probabilities the EOS bin is nonzero only at the canonical node.
    let lm = toy(GPT2_PATTERN);
    let x = b"ab a";
    let tree = lm.tree(x).unwrap();
    let n_cols = lm.enc.bpe().n_slots() + 1;
    let n = tree.nodes.len();
    let lp = -(n_cols as f64).ln();
    let node_logp = vec![0.0; n];
    let next = vec![lp; n * n_cols];
    let m = lm
        .marginalize(
            x,
            &tree,
            &node_logp,
            &next,
            n_cols,
            Some((n_cols - 1) as Rank),
        )
        .unwrap();
    assert!(m.log_bins[256].is_finite());
    assert!(m.log_bins.iter().take(256).any(|v| v.is_finite()));
    let bad = lm.marginalize(x, &tree, &node_logp, &next[1..], n_cols, None);
    assert!(bad.is_err());
}

/// Characters for the cut tests: the toy alphabet plus upper case, more digits, symbols and
/// whitespace kinds, so that every alternative of the known patterns meets the cut.
const CUT_ALPHABET: [&str; 22] = [
    "a", "b", "s", "l", "e", "A", "B", "S", "'", " ", "  ", "\n", "\t", "\r", ".", "(", "/", "1",
    "2", "3", "é", "\u{3000}",
];

fn random_cut_text(rng: &mut StdRng, max_chars: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max_chars);
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend_from_slice(CUT_ALPHABET[rng.random_range(0..CUT_ALPHABET.len())].as_bytes());
    }
    out
}

#[test]
fn quick_cuts_equal_full_cuts() {
    // `cut_at` runs eight probes when the key decides the cut; it must agree with all probes.
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(7);
        let (mut quick, mut ws_keys, mut apostrophes) = (0, 0, 0);
        for _ in 0..30_000 {
            let head = random_cut_text(&mut rng, 6);
            let token = random_cut_text(&mut rng, 3);
            let Some(key) = fast::lookahead_key(&token) else {
                continue;
            };
            // Token ends: the canonical encoding's (the usual case) or every position.
            let c = lm.canonical(&head).unwrap();
            let mut ends: Vec<usize> = c
                .iter()
                .scan(0, |at, &id| {
                    *at += lm.token_bytes(id).unwrap().len();
                    Some(*at)
                })
                .collect();
            if rng.random_bool(0.3) {
                ends = (1..=head.len()).collect();
            }
            quick += fast::decided_by_key(&head, key) as usize;
            let suffix = pattern == crate::pretokenize::O200K_PATTERN;
            let new = fast::quick_cut(&head, key, suffix) && !fast::decided_by_key(&head, key);
            ws_keys += (new && !key.contains(&b'\'')) as usize;
            apostrophes += (new && key.contains(&b'\'')) as usize;
            assert_eq!(
                lm.cut_at(&head, key, &ends).unwrap(),
                lm.cut_at_full(&head, key, &ends).unwrap(),
                "{pattern}: {:?} + {:?}",
                String::from_utf8_lossy(&head),
                String::from_utf8_lossy(key)
            );
        }
        assert!(quick > 2000, "the quick path was rarely taken: {quick}");
        assert!(
            ws_keys > 300,
            "whitespace keys after a closed head: only {ws_keys}"
        );
        assert!(
            apostrophes > 150,
            "{pattern}: apostrophe keys: only {apostrophes}"
        );
    }
}

/// Characters for [`class_keys_give_the_same_cuts`]: several of each ASCII class (the
/// contraction letters among them, and those the patterns name literally) and a few others.
const CLASS_ALPHABET: [&str; 30] = [
    "a",
    "z",
    "s",
    "t",
    "l",
    "e",
    "A",
    "Z",
    "S",
    "L",
    "'",
    " ",
    "\n",
    "\r",
    "\t",
    "\x0b",
    "0",
    "7",
    ".",
    "#",
    "/",
    "(",
    "_",
    "\u{1F600}",
    "\u{C5}",
    "\u{17F}",
    "\u{3000}",
    "\u{4E00}",
    "\u{300}",
    "\u{1}",
];

#[test]
fn class_keys_give_the_same_cuts() {
    // A key and its class key: the same cut analysis after every head, with all probes and
    // with the quick ones (`cut_at` picks by the key, and the class key keeps that choice).
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(11);
        let mut replaced = 0;
        let mut class = Vec::new();
        for _ in 0..6_000 {
            let mut head = chars_from(&mut rng, &CLASS_ALPHABET, 6);
            let token = chars_from(&mut rng, &CLASS_ALPHABET, 4);
            if rng.random_bool(0.15) {
                head.push(0xc3); // a character cut at the end of the node
            }
            let Some(key) = fast::lookahead_key(&token) else {
                continue;
            };
            replaced += usize::from(class_key_cuts_alike(&lm, pattern, &head, key, &mut class));
        }
        assert!(replaced > 2000, "{pattern}: few keys replaced: {replaced}");
    }
}

/// Asserts that after `head`, `key` and its class key are cut alike (`assert_same_cuts`);
/// false, with nothing compared, when the class key is the key itself.
fn class_key_cuts_alike(
    lm: &ByteLm,
    pattern: &str,
    head: &[u8],
    key: &[u8],
    class: &mut Vec<u8>,
) -> bool {
    fast::class_key(fast::apostrophe_near(head), key, class);
    if class[..] == *key {
        return false;
    }
    assert_same_cuts(lm, head, key, class, &|| {
        format!(
            "{pattern}: {:?} + {:?} ({key:?}) as {:?}",
            String::from_utf8_lossy(head),
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(class)
        )
    });
    true
}

/// After `head`, `key` and its class key `class` are cut alike: by the quick test, by the
/// analysis with all probes, and by `cut_at`'s choice.
fn assert_same_cuts(lm: &ByteLm, head: &[u8], key: &[u8], class: &[u8], what: &dyn Fn() -> String) {
    let ends: Vec<usize> = (1..=head.len()).collect();
    assert_eq!(
        fast::decided_by_key(head, key),
        fast::decided_by_key(head, class),
        "{}",
        what()
    );
    assert_eq!(
        lm.cut_at_full(head, key, &ends).unwrap(),
        lm.cut_at_full(head, class, &ends).unwrap(),
        "{}",
        what()
    );
    assert_eq!(
        lm.cut_at(head, key, &ends).unwrap(),
        lm.cut_at(head, class, &ends).unwrap(),
        "{}",
        what()
    );
}

/// Characters for [`apostrophe_and_byte_class_keys_give_the_same_cuts`]: every letter of the
/// contractions in both cases and U+017F (folds to `s`), other letters, apostrophes and a few
/// characters of the other classes.
const CONTRACTION_ALPHABET: [&str; 32] = [
    "'", "'", "'", "s", "t", "r", "e", "v", "m", "l", "d", "S", "T", "R", "E", "V", "M", "L", "D",
    "\u{17F}", "a", "k", "K", "z", "\u{E9}", "\u{3A9}", " ", "\n", "\t", "0", ".", "\u{300}",
];

#[test]
fn apostrophe_and_byte_class_keys_give_the_same_cuts() {
    // After a node with an apostrophe near its end, letters other than those of the
    // contractions go by class; a key of one byte of 0x80 or more stands for all of them
    // (after a head that does not end inside a character). Both against the plain keys, with
    // all probes and with `cut_at`'s choice.
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(13);
        let mut replaced = 0;
        let mut class = Vec::new();
        for round in 0..8_000 {
            let mut head = chars_from(&mut rng, &CONTRACTION_ALPHABET, 5);
            if rng.random_bool(0.7) {
                head.push(b'\'');
                let tail = chars_from(&mut rng, &CONTRACTION_ALPHABET, 1);
                head.extend_from_slice(&tail);
            }
            if rng.random_bool(0.1) {
                head.push(0xff); // a stray byte inside the node
            }
            let token = if round % 4 == 0 {
                vec![rng.random_range(0x80..=0xffu8)]
            } else {
                chars_from(&mut rng, &CONTRACTION_ALPHABET, 3)
            };
            let key = if token.len() == 1 && token[0] >= 0x80 {
                &token[..]
            } else {
                let Some(key) = fast::lookahead_key(&token) else {
                    continue;
                };
                key
            };
            replaced += usize::from(class_key_cuts_alike(&lm, pattern, &head, key, &mut class));
        }
        assert!(replaced > 3000, "{pattern}: few keys replaced: {replaced}");
    }
}

#[test]
fn whitespace_class_keys_give_the_same_cuts() {
    // Tokens that are whitespace runs (shortened to two characters by `class_key`), after
    // heads that end in every way: with all probes (these keys never take the quick path).
    const WS: [&str; 7] = [" ", " ", " ", "\n", "\r", "\t", "\u{3000}"];
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(12);
        let mut shortened = 0;
        let mut class = Vec::new();
        for _ in 0..4_000 {
            let mut head: Vec<u8> = (0..rng.random_range(0..=5))
                .flat_map(|_| {
                    let pick = if rng.random_bool(0.4) {
                        WS[rng.random_range(0..WS.len())]
                    } else {
                        CLASS_ALPHABET[rng.random_range(0..CLASS_ALPHABET.len())]
                    };
                    pick.as_bytes().to_vec()
                })
                .collect();
            if rng.random_bool(0.1) {
                head.push(0xc3);
            }
            let token: Vec<u8> = (0..rng.random_range(1..=6))
                .flat_map(|_| WS[rng.random_range(0..WS.len())].as_bytes().to_vec())
                .collect();
            let key = fast::lookahead_key(&token).expect("whole characters");
            fast::class_key(fast::apostrophe_near(&head), key, &mut class);
            if class.len() < key.len() {
                shortened += 1;
            }
            let ends: Vec<usize> = (1..=head.len()).collect();
            assert_eq!(
                lm.cut_at(&head, key, &ends).unwrap(),
                lm.cut_at(&head, &class, &ends).unwrap(),
                "{pattern}: {:?} + {:?} as {:?}",
                String::from_utf8_lossy(&head),
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(&class)
            );
        }
        assert!(
            shortened > 1500,
            "{pattern}: few keys shortened: {shortened}"
        );
    }
}

#[test]
fn shortcut_checks_equal_plain_validity() {
    // Every (node, token) pair the marginalisation meets: the shortcuts (lookahead keys,
    // quick and cached cuts, the start table, the per-node tables kept across texts) against
    // the plain extension-probe test. Texts share the caches, as successive bytes do.
    for pattern in [GPT2_PATTERN, LLAMA3_PATTERN] {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(8);
        let mut pairs = 0;
        for _ in 0..400 {
            let x = random_cut_text(&mut rng, 8);
            let tree = lm.tree(&x).unwrap();
            let window = &x[tree.sigma..];
            let mut check = marginal::Check::new(&lm, window);
            for (node, &end) in tree.nodes.iter().zip(&tree.ends) {
                check.enter(node, end).unwrap();
                for j in lm.vocab.prefix_range(&window[end..]) {
                    let id = lm.vocab.id(j);
                    let path = [&node[..], &[id]].concat();
                    pairs += 1;
                    assert_eq!(
                        check.valid(id, lm.vocab.bytes(j)).unwrap(),
                        lm.is_valid_uncached(&path).unwrap(),
                        "{pattern}: {:?} node {node:?} token {id}",
                        String::from_utf8_lossy(&x)
                    );
                }
            }
        }
        assert!(pairs > 10_000, "{pairs}");
    }
}

/// A vocabulary of all bytes plus `n` random merges over a few letters (some making a token
/// that already exists by another split), in a random order of priority: HF semantics with
/// priorities that need not grow along a token's merges.
fn shuffled_merges(seed: u64, n: usize) -> ByteLm {
    use crate::bpe::{Bpe, MissingByte};
    use crate::encoding::SpecialTokens;
    use crate::pretokenize::Pretokenizer;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vocab: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
    let mut pool: Vec<Rank> = b"abc ".iter().map(|&b| b as Rank).collect();
    let mut merges = Vec::new();
    while merges.len() < n {
        let l = pool[rng.random_range(0..pool.len())];
        let r = pool[rng.random_range(0..pool.len())];
        let bytes = [&vocab[l as usize].0[..], &vocab[r as usize].0[..]].concat();
        if bytes.len() > 6 || merges.iter().any(|&(a, b, _)| (a, b) == (l, r)) {
            continue;
        }
        let m = match vocab.iter().find(|(b, _)| *b == bytes) {
            Some(&(_, id)) => id,
            None => {
                let id = vocab.len() as Rank;
                vocab.push((bytes, id));
                pool.push(id);
                id
            }
        };
        merges.push((l, r, m));
    }
    for i in (1..merges.len()).rev() {
        merges.swap(i, rng.random_range(0..=i));
    }
    let bpe = Bpe::from_merge_ids(vocab, &merges, false, MissingByte::Error).unwrap();
    let pretok = Pretokenizer::new(GPT2_PATTERN).unwrap();
    let enc = Encoding::from_parts(pretok, bpe, SpecialTokens::new(vec![]).unwrap()).unwrap();
    ByteLm::new(enc).unwrap()
}

#[test]
fn canonical_pairs_from_priorities_equal_the_merge_loop() {
    // Every pair of tokens: the walk over the two merge histories against the merge loop on
    // the concatenated bytes. Tiktoken ranks (toy vocabularies) and HF merge lists in random
    // priority order.
    let mut lms = vec![toy(GPT2_PATTERN)];
    lms.extend((0..6).map(|seed| shuffled_merges(seed, 60)));
    let (mut yes, mut no) = (0, 0);
    for lm in &lms {
        let ids: Vec<Rank> = lm.enc.bpe().vocab().map(|(_, id)| id).collect();
        for &a in &ids {
            for &b in &ids {
                let v = lm.is_canonical_pair_by_merging(a, b).unwrap();
                assert_eq!(lm.is_canonical_pair(a, b).unwrap(), v, "{a} {b}");
                if v {
                    yes += 1;
                } else {
                    no += 1;
                }
            }
        }
    }
    assert!(yes > 100_000 && no > 5_000, "{yes} canonical, {no} not");
}

#[test]
fn unknown_patterns_are_refused() {
    let ranks: Vec<(Vec<u8>, Rank)> = (0..=255u8).map(|b| (vec![b], b as Rank)).collect();
    let e = ByteLm::new(Encoding::new(r"\w+|\W", ranks, vec![]).unwrap()).unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)));
}

#[test]
fn every_character_after_an_apostrophe_gives_the_same_cuts() {
    // `apostrophe_near` lets the contraction letters go by class after a head that ends with
    // an apostrophe and one more character other than `r`, `v` or `l` (either case): every
    // such second character, every short key of contraction letters and others, against the
    // plain keys with all probes and with `cut_at`'s choice.
    let keys: Vec<Vec<u8>> = {
        let one: Vec<&str> = CONTRACTION_ALPHABET[2..26].to_vec();
        let mut out: Vec<Vec<u8>> = one.iter().map(|c| c.as_bytes().to_vec()).collect();
        for a in &one[1..] {
            for b in &one {
                out.push([a.as_bytes(), b.as_bytes()].concat());
            }
        }
        out
    };
    let mut class = Vec::new();
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut replaced = 0;
        for second in CONTRACTION_ALPHABET {
            let head = ["x'", second].concat().into_bytes();
            for key in &keys {
                let Some(key) = fast::lookahead_key(key) else {
                    continue;
                };
                replaced += usize::from(class_key_cuts_alike(&lm, pattern, &head, key, &mut class));
            }
        }
        assert!(replaced > 5000, "{pattern}: few keys replaced: {replaced}");
    }
}

/// A segmentation of `x` into tokens, each chosen at random among the tokens that start there
/// (not only the merges' choice).
fn random_segmentation(lm: &ByteLm, rng: &mut StdRng, x: &[u8]) -> Vec<Rank> {
    let bpe = lm.enc.bpe();
    let mut path = Vec::new();
    let mut at = 0;
    while at < x.len() {
        let ids: Vec<Rank> = (1..=x.len() - at)
            .filter_map(|n| bpe.token_id(&x[at..at + n]))
            .collect();
        let id = ids[rng.random_range(0..ids.len())];
        at += lm.token_bytes(id).unwrap().len();
        path.push(id);
    }
    path
}

#[test]
fn shortcut_checks_equal_plain_validity_after_any_valid_node() {
    // Nodes that are any valid segmentation of a text into tokens (not only the tree's
    // nodes: paths that are not the merges of their bytes, across several pieces), then every
    // token of the vocabulary: the shortcuts against the plain test. The joined rule's merge
    // check reads which of the node's tokens share the last piece in every continuation.
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(21);
        let (mut nodes, mut pairs) = (0, 0);
        for round in 0..3_000 {
            // First a text where the joined rule must not take the node's first tokens
            // into the merge check: with cl100k's pattern, `1\n \t` then two spaces is
            // valid (`\s*[\r\n]` ends a piece after the line break in some continuations),
            // though the merges of all the bytes are not those tokens (found by a search
            // with the check on every token of the node).
            let mut x = if round < 50 {
                b"1\n \t".to_vec()
            } else {
                random_cut_text(&mut rng, 6)
            };
            if round % 4 == 3 {
                // A node that ends inside a character: a stray byte may complete it.
                let c = ["é", "\u{3000}", "\u{1F600}"][rng.random_range(0..3)].as_bytes();
                x.extend_from_slice(&c[..rng.random_range(1..c.len())]);
            }
            let path = random_segmentation(&lm, &mut rng, &x);
            if path.is_empty() || !lm.is_valid_uncached(&path).unwrap() {
                continue;
            }
            nodes += 1;
            let mut check = marginal::Check::new(&lm, &x);
            check.enter(&path, x.len()).unwrap();
            if round % 2 == 1 {
                // Most tokens then come from the key-by-key pass, the rest one by one.
                check.settle_by_key().unwrap();
            }
            for j in 0..lm.vocab.len() {
                let id = lm.vocab.id(j);
                let full = [&path[..], &[id]].concat();
                pairs += 1;
                assert_eq!(
                    check.valid(id, lm.vocab.bytes(j)).unwrap(),
                    lm.is_valid_uncached(&full).unwrap(),
                    "{pattern}: {:?} node {path:?} token {:?}",
                    String::from_utf8_lossy(&x),
                    String::from_utf8_lossy(lm.vocab.bytes(j))
                );
            }
        }
        assert!(nodes > 1000, "{pattern}: {nodes} nodes, {pairs} pairs");
    }
}

#[test]
fn canonical_at_end_is_the_canonical_encoding() {
    // The end-of-text witness of `Check::check` for tokens that end inside their first
    // character: where it says yes, the node's path and the token must be exactly the
    // canonical encoding of their bytes, and it must say yes often. Nodes are any valid
    // segmentation of random texts, as above, so many are not the encoding of their bytes.
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let bpe = lm.enc.bpe();
        let partial: Vec<Rank> = (0..bpe.n_slots() as Rank)
            .filter(|&id| {
                bpe.token_bytes(id)
                    .is_some_and(|b| fast::incomplete_char_len(b).is_some())
            })
            .collect();
        assert!(
            partial.len() >= 50,
            "{pattern}: {} partial tokens",
            partial.len()
        );
        let mut rng = StdRng::seed_from_u64(33);
        let (mut yes, mut no) = (0, 0);
        for _ in 0..1_500 {
            let x = random_cut_text(&mut rng, 6);
            let path = random_segmentation(&lm, &mut rng, &x);
            if path.is_empty() || !lm.is_valid_uncached(&path).unwrap() {
                continue;
            }
            let mut check = marginal::Check::new(&lm, &x);
            check.enter(&path, x.len()).unwrap();
            for &id in &partial {
                let bytes = lm.token_bytes(id).unwrap();
                let full = [&path[..], &[id]].concat();
                let encoded = lm.canonical(&[&x[..], bytes].concat()).unwrap() == full;
                if check.canonical_at_end(0, id, bytes).unwrap() {
                    assert!(encoded, "{pattern}: {:?} node {path:?} + {id}", x);
                    yes += 1;
                } else {
                    no += 1;
                }
            }
        }
        assert!(yes > 10_000 && no > 1_000, "{pattern}: {yes} yes, {no} no");
    }
}

#[test]
fn validity_inside_a_character_has_a_real_witness() {
    // Paths whose bytes end inside a character: where the plain test says valid, some
    // completion of the character (every one of them, one or two bytes missing) followed by
    // the end of text or a neutral character must have a canonical encoding that starts with
    // the path. This checks the witnesses found through the completions, which the
    // brute-force comparison (whole characters only) does not reach.
    for pattern in KNOWN_PATTERNS {
        let lm = toy(pattern);
        let mut rng = StdRng::seed_from_u64(5);
        let (mut valid, mut invalid, mut completed) = (0, 0, 0);
        for round in 0..1_500 {
            // Half of them after whitespace, where a cut lead byte is often valid only as
            // the start of a whitespace character (U+1680, U+3000).
            let mut x = random_cut_text(&mut rng, 4);
            if round % 2 == 0 {
                for _ in 0..rng.random_range(1..4) {
                    x.extend_from_slice([" ", "\n", "\t"][rng.random_range(0..3)].as_bytes());
                }
            }
            let c = ["é", "\u{3000}", "\u{1F600}", "\u{1680}"][rng.random_range(0..4)].as_bytes();
            let keep = rng.random_range(c.len().saturating_sub(2).max(1)..c.len());
            x.extend_from_slice(&c[..keep]);
            let path = random_segmentation(&lm, &mut rng, &x);
            if !lm.is_valid_uncached(&path).unwrap() {
                invalid += 1;
                continue;
            }
            valid += 1;
            let by_probe = lm.probes.iter().any(|e| {
                let z = [&x[..], e].concat();
                lm.canonical(&z).unwrap().starts_with(&path)
            });
            completed += !by_probe as usize;
            let missing = c.len() - keep;
            let witness = by_probe
                || (0..64u32.pow(missing as u32)).any(|k| {
                    let mut y = x.clone();
                    for slot in 0..missing {
                        y.push(0x80 | (k >> (6 * slot) & 0x3f) as u8);
                    }
                    lm.probes[..1 + canon::NEUTRAL.len()].iter().any(|e| {
                        let z = [&y[..], e].concat();
                        lm.canonical(&z).unwrap().starts_with(&path)
                    })
                });
            assert!(
                witness,
                "{pattern}: {:?} as {path:?} has no witness",
                String::from_utf8_lossy(&x)
            );
        }
        assert!(
            valid > 500 && invalid > 10 && completed > 15,
            "{pattern}: {valid} valid ({completed} through a completion), {invalid} not"
        );
    }
}

/// `fast::completion_keys` against the enumeration it replaced: every completion as bytes,
/// through `from_utf8`, for every incomplete prefix of a character (each lead byte alone, with
/// one continuation byte, with two).
#[test]
fn completion_keys_equal_the_byte_enumeration() {
    fn by_bytes(bytes: &[u8]) -> Vec<Vec<u8>> {
        let Some(need) = fast::incomplete_char_len(bytes) else {
            return Vec::new();
        };
        let mut seen = [false; 256];
        let mut keys = vec![bytes[..1].to_vec()];
        let mut c = bytes.to_vec();
        c.resize(need, 0x80);
        for k in 0..64usize.pow((need - bytes.len()) as u32) {
            let mut k = k;
            for slot in c[bytes.len()..].iter_mut() {
                *slot = 0x80 | (k % 64) as u8;
                k /= 64;
            }
            if let Ok(s) = std::str::from_utf8(&c) {
                let f = fast::char_flags(s.chars().next().expect("one character"));
                if !seen[f as usize] {
                    seen[f as usize] = true;
                    keys.push(c.clone());
                }
            }
        }
        keys
    }
    let mut prefixes: Vec<Vec<u8>> = (0x80..=0xffu8).map(|b| vec![b]).collect();
    for lead in 0xe0..=0xf7u8 {
        for b1 in 0x80..=0xbfu8 {
            prefixes.push(vec![lead, b1]);
            if lead >= 0xf0 {
                for b2 in 0x80..=0xbfu8 {
                    prefixes.push(vec![lead, b1, b2]);
                }
            }
        }
    }
    let mut nonempty = 0;
    for p in &prefixes {
        let want = by_bytes(p);
        assert_eq!(fast::completion_keys(p), want, "prefix {p:x?}");
        nonempty += usize::from(!want.is_empty());
    }
    // Lead bytes, and prefixes that some character continues (E0 9F, ED A0, F4 90 do not).
    assert!(nonempty > 1500, "{nonempty}");
    // After a leading whitespace run the same keys, the run in front of each; after anything
    // else, none (the token has a key of its own, or none at all).
    for p in prefixes.iter().step_by(7) {
        for run in [&b" "[..], b"\n\t ", "\u{3000}\u{a0}".as_bytes()] {
            let want: Vec<Vec<u8>> = by_bytes(p)
                .into_iter()
                .map(|k| [run, &k[..]].concat())
                .collect();
            assert_eq!(
                fast::completion_keys(&[run, p].concat()),
                want,
                "{run:x?} {p:x?}"
            );
        }
        for head in [&b"a"[..], b" a", b"\xe4\xb8\x80"] {
            assert!(fast::completion_keys(&[head, p].concat()).is_empty());
        }
    }
}
