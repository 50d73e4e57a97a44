//! Proof of exactness: the scanners against fancy-regex (what tiktoken runs), differentially.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex_syntax::hir::{ClassUnicode, ClassUnicodeRange};

use super::classes::{self, class_ranges, Text};
use super::*;

type Matches = Vec<(usize, usize)>;

struct Case {
    name: &'static str,
    fast: Pretokenizer,
    reference: fancy_regex::Regex,
}

fn cases() -> Vec<Case> {
    let names = ["r50k", "gpt2", "cl100k", "llama3", "qwen2", "o200k"];
    names
        .iter()
        .zip(KNOWN_PATTERNS)
        .map(|(&name, pattern)| {
            let fast = Pretokenizer::new(pattern).unwrap();
            assert!(fast.is_fast(), "{name} is not recognised");
            Case {
                name,
                fast,
                reference: compile_regex(pattern).unwrap(),
            }
        })
        .collect()
}

fn ours(p: &Pretokenizer, text: &str) -> Matches {
    let mut v = Vec::new();
    p.for_each_match(text, |s, e| v.push((s, e))).unwrap();
    v
}

fn reference(re: &fancy_regex::Regex, text: &str) -> Matches {
    re.find_iter(text)
        .map(|m| m.unwrap())
        .map(|m| (m.start(), m.end()))
        .collect()
}

fn pieces<'a>(text: &'a str, m: &Matches) -> Vec<&'a str> {
    m.iter().map(|&(s, e)| &text[s..e]).collect()
}

/// Panics with a readable report if the scanner and fancy-regex disagree on `text`.
fn check(case: &Case, text: &str) {
    let got = ours(&case.fast, text);
    let want = reference(&case.reference, text);
    if got != want {
        panic!(
            "{}: scanner and fancy-regex disagree on {text:?}\n  scanner: {:?}\n  regex:   {:?}",
            case.name,
            pieces(text, &got),
            pieces(text, &want),
        );
    }
}

/// The matches must tile the text: contiguous, non-empty, from 0 to the end.
fn assert_tiles(name: &str, text: &str, m: &Matches) {
    let mut at = 0;
    for &(s, e) in m {
        assert!(
            s == at && e > s,
            "{name}: gap or empty match at {s}..{e} (expected start {at})"
        );
        at = e;
    }
    assert_eq!(at, text.len(), "{name}: matches stop before the end");
}

/// Characters covering every class boundary the patterns care about.
const ADVERSARIAL: &[&str] = &[
    // ASCII letters, including every contraction letter in both cases, and k/K (Kelvin's fold).
    "a",
    "b",
    "x",
    "z",
    "s",
    "d",
    "m",
    "t",
    "l",
    "v",
    "e",
    "r",
    "k",
    "S",
    "D",
    "M",
    "T",
    "L",
    "V",
    "E",
    "R",
    "K",
    "A",
    "Z", // digits
    "0",
    "1",
    "7",
    "9", // the contraction apostrophe, and the space that prefixes pieces
    "'",
    "'",
    "'",
    " ",
    " ",
    " ", // ASCII whitespace
    "\t",
    "\n",
    "\n",
    "\r",
    "\r\n",
    "\x0b",
    "\x0c", // Unicode whitespace
    "\u{85}",
    "\u{a0}",
    "\u{1680}",
    "\u{2028}",
    "\u{2029}",
    "\u{3000}",
    "\u{2009}",
    // punctuation, symbols, o200k's slash
    "/",
    "/",
    "!",
    ".",
    ",",
    "-",
    "(",
    ")",
    "\"",
    "_",
    "#",
    "\\",
    "`",
    "~",
    "$",
    "^",
    "|",
    // Latin letters beyond ASCII, case-folding oddities
    "é",
    "É",
    "ß",
    "ſ",
    "\u{212a}",
    "ı",
    "İ",
    "\u{1e9e}", // combining and other marks
    "\u{301}",
    "\u{301}",
    "\u{903}",
    "\u{20dd}",
    "\u{fe0f}", // titlecase (Lt)
    "\u{1c5}",
    "\u{1c8}", // modifier letters (Lm)
    "\u{2b0}",
    "\u{30fc}", // other letters (Lo)
    "\u{4e2d}",
    "\u{5d0}",
    "\u{e01}", // numbers: Arabic-Indic digit, fraction, Roman numeral, superscript
    "\u{663}",
    "\u{bd}",
    "\u{2167}",
    "\u{b2}",
    "\u{1d7ce}", // 4-byte letter (math bold A)
    "\u{1d400}", // emoji, ZWJ, BOM, variation selector
    "\u{1f600}",
    "\u{1f600}",
    "\u{200d}",
    "\u{feff}",
    "\u{200b}", // controls, private use
    "\u{0}",
    "\u{1}",
    "\u{1b}",
    "\u{7f}",
    "\u{9f}",
    "\u{e000}",
    "\u{10fffd}",
    // contraction shapes
    "'s",
    "'S",
    "'\u{17f}",
    "'t",
    "'re",
    "'RE",
    "'rE",
    "'ve",
    "'Ve",
    "'m",
    "'ll",
    "'Ll",
    "'lL",
    "'d",
    "'D",
];

fn random_adversarial(rng: &mut StdRng, max_len: usize) -> String {
    let len = rng.random_range(0..=max_len);
    let mut s = String::new();
    let mut last = "";
    for _ in 0..len {
        // Runs of the same char are where the whitespace and letter alternatives differ.
        let piece = if !last.is_empty() && rng.random_bool(0.3) {
            last
        } else {
            ADVERSARIAL[rng.random_range(0..ADVERSARIAL.len())]
        };
        s.push_str(piece);
        last = piece;
    }
    s
}

#[test]
fn tables_match_regex_syntax() {
    let t = classes::tables();
    let sets: [(u8, &str); 6] = [
        (classes::WS, r"\s"),
        (classes::LETTER, r"\p{L}"),
        (classes::NUM, r"\p{N}"),
        (classes::UPPERISH, r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"),
        (classes::LOWERISH, r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"),
        (classes::NEWLINE, r"[\r\n]"),
    ];
    for (flag, re) in sets {
        let ranges = class_ranges(re);
        let mut members = 0usize;
        for cp in 0..=0x10FFFFu32 {
            let inside = ranges
                .iter()
                .any(|&(lo, hi)| (lo as u32..=hi as u32).contains(&cp));
            assert_eq!(t.of_char(cp) & flag != 0, inside, "{re} at U+{cp:04X}");
            members += inside as usize;
        }
        assert!(members > 0, "{re} is empty");
    }
    // The per-char decoding path agrees with the direct lookup.
    for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
        let s = c.to_string();
        assert_eq!(
            Text::new(&s).at(0),
            (t.of_char(c as u32), c.len_utf8()),
            "U+{:04X}",
            c as u32
        );
    }
    // \s, \p{L} and \p{N} are disjoint, which the "each char is one of four kinds" reasoning
    // of the scanners relies on.
    for cp in 0..=0x10FFFFu32 {
        let f = t.of_char(cp) & (classes::WS | classes::LETTER | classes::NUM);
        assert!(
            f.count_ones() <= 1,
            "U+{cp:04X} is in two of \\s, \\p{{L}}, \\p{{N}}"
        );
    }
}

/// The scanners only look at a char's flags (plus a few ASCII literals and U+017F), so the fuzz
/// alphabet covers every behaviour if it holds a char of every flag combination that exists.
#[test]
fn fuzz_alphabet_covers_every_class_combination() {
    let t = classes::tables();
    let mut existing: Vec<u8> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .map(|c| t.of_char(c as u32))
        .collect();
    existing.sort();
    existing.dedup();
    let covered: Vec<u8> = ADVERSARIAL
        .iter()
        .flat_map(|s| s.chars())
        .map(|c| t.of_char(c as u32))
        .collect();
    for f in &existing {
        assert!(
            covered.contains(f),
            "no fuzz char with class flags {f:#08b}"
        );
    }
    eprintln!(
        "{} class combinations, all in the fuzz alphabet",
        existing.len()
    );
}

#[test]
fn contraction_case_folding_is_what_the_engine_uses() {
    // Every char that `(?i)` makes equivalent to a contraction letter, per regex_syntax.
    for letter in ['s', 't', 'r', 'e', 'v', 'm', 'l', 'd'] {
        let mut folded: Vec<char> = Vec::new();
        for (lo, hi) in class_ranges(&format!("(?i:[{letter}])")) {
            folded.extend(lo..=hi);
        }
        let mut expected = vec![letter, letter.to_ascii_uppercase()];
        if letter == 's' {
            expected.push('\u{17f}');
        }
        folded.sort();
        expected.sort();
        assert_eq!(folded, expected, "case folding of {letter:?}");
        for c in folded {
            for (rest, len) in [("", 2), ("e", 3), ("l", 3)] {
                let text = format!("'{c}{rest}");
                let e = Text::new(&text).contraction_ci(0);
                let want = match letter {
                    's' | 't' | 'm' | 'd' => Some(1 + c.len_utf8()),
                    'r' | 'v' if rest == "e" => Some(1 + c.len_utf8() + 1),
                    'l' if rest == "l" => Some(1 + c.len_utf8() + 1),
                    _ => None,
                };
                assert_eq!(e, want, "{text:?} (len {len})");
            }
        }
    }
    // The apostrophe folds to nothing else.
    let mut apostrophe = ClassUnicode::new([ClassUnicodeRange::new('\'', '\'')]);
    apostrophe.case_fold_simple();
    assert_eq!(apostrophe.ranges(), [ClassUnicodeRange::new('\'', '\'')]);
}

#[test]
fn known_patterns_are_recognised_and_others_fall_back() {
    for p in KNOWN_PATTERNS {
        let t = Pretokenizer::new(p).unwrap();
        assert!(t.is_fast());
        assert_eq!(t.pattern(), p);
    }
    // A near miss is not a known pattern; it must still work, through fancy-regex.
    let near = format!("{R50K_PATTERN}|x");
    let t = Pretokenizer::new(&near).unwrap();
    assert!(!t.is_fast());
    let text = "Hello world's 123  !!\n";
    assert_eq!(
        ours(&t, text),
        reference(&compile_regex(R50K_PATTERN).unwrap(), text)
    );

    let t = Pretokenizer::new(r"\w+|[^\w\s]+(?=\s)|\s").unwrap();
    assert!(!t.is_fast());
    assert_eq!(
        pieces("ab, cd!", &ours(&t, "ab, cd!")),
        vec!["ab", ",", " ", "cd"]
    );

    match Pretokenizer::new(r"(unclosed|\p{NotAClass}") {
        Err(Error::InvalidPattern { pattern, message }) => {
            assert_eq!(pattern, r"(unclosed|\p{NotAClass}");
            assert!(!message.is_empty());
        }
        other => panic!("expected InvalidPattern, got {other:?}"),
    }

    fn assert_send_sync_clone<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync_clone::<Pretokenizer>();
}

#[test]
fn hand_picked_cases() {
    let samples = [
        "",
        "hello world",
        "Hello, World! It's 2024: don't we'LL see?",
        "   leading and trailing   ",
        "a  b\t\tc\n\nd\r\n\r\ne",
        "line one\n   \nline two\n  ",
        "trailing newline then spaces\n  ",
        "trailing spaces then newline  \n",
        "x\n \n",
        "'s'S'\u{17f}'ll'LL'lL'\u{212a}",
        "HELLOworld HELLOWorld Hello hELLO HELLO's ǅemal",
        "\u{2b0}AAAA \u{301}HELLO \u{301}'s !\u{301} !!\u{301}",
        "path/to/file\n/next //comment\r\n/x",
        "1234567 ½Ⅷ٣٣٣٣",
        "\u{1f600}\u{200d}\u{1f600} \u{1f600}x",
        "\u{a0}word\u{3000}word\u{85}word\u{2028}",
        "café naïve cafe\u{301}",
        "    def f(x):\n        return x  # comment\n",
    ];
    for case in cases() {
        for s in samples {
            check(&case, s);
        }
    }
}

/// The less obvious behaviours, spelled out (and checked against fancy-regex too).
#[test]
fn surprising_cases_pinned() {
    let cases = cases();
    let by_name = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let expect = |name: &str, text: &str, want: &[&str]| {
        let case = by_name(name);
        check(case, text);
        assert_eq!(
            pieces(text, &ours(&case.fast, text)),
            want,
            "{name} on {text:?}"
        );
    };
    // `\s+(?!\S)` gives the last space to the next word; at the end of the text it keeps it.
    expect("r50k", "a   b  ", &["a", "  ", " b", "  "]);
    // cl100k's `\s++$` comes before `\s*[\r\n]`: trailing whitespace with a newline is one
    // piece; Llama-3 (same alternatives otherwise) splits after the last newline.
    expect("cl100k", "a\n  ", &["a", "\n  "]);
    expect("llama3", "a\n  ", &["a", "\n", "  "]);
    // Elsewhere `\s*[\r\n]` stops at the last newline, and the spaces after it split as usual.
    expect("cl100k", "a\n  b", &["a", "\n", " ", " b"]);
    // Case-insensitive contractions include U+017F (long s); GPT-2's are case-sensitive.
    expect("cl100k", "x'\u{17f}'LL", &["x", "'\u{17f}", "'LL"]);
    expect("o200k", "X'\u{17f}", &["X'\u{17f}"]);
    expect("r50k", "x'S'll", &["x", "'", "S", "'ll"]);
    // Any non-letter, non-number, non-newline char prefixes a word in cl100k and o200k.
    expect(
        "cl100k",
        "\u{a0}word\t\"quote",
        &["\u{a0}word", "\t", "\"quote"],
    );
    expect("o200k", "(x) !y", &["(x", ")", " !", "y"]);
    // o200k: a mark is both UPPER and LOWER and a prefix; before an all-caps word it matches
    // alone, while after a space it joins the space.
    expect("o200k", "\u{301}HELLO", &["\u{301}", "HELLO"]);
    expect("o200k", " \u{301}HELLO", &[" \u{301}", "HELLO"]);
    expect(
        "o200k",
        "HELLOworld HELLOWorld",
        &["HELLOworld", " HELLOWorld"],
    );
    // o200k: `/` after punctuation and newlines.
    expect("o200k", "a.\n/b", &["a", ".\n/", "b"]);
    // Digits in threes (cl100k, o200k) or ones (Qwen2).
    expect("cl100k", "1234567", &["123", "456", "7"]);
    expect("qwen2", "123", &["1", "2", "3"]);
}

#[test]
fn fuzz_adversarial_short() {
    const PER_PATTERN: usize = 40_000;
    let mut total = 0;
    for (i, case) in cases().iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0x5EED_0000 + i as u64);
        for _ in 0..PER_PATTERN {
            let s = random_adversarial(&mut rng, 40);
            check(case, &s);
            total += 1;
        }
    }
    eprintln!("fuzz_adversarial_short: {total} strings");
}

#[test]
fn fuzz_adversarial_long() {
    const PER_PATTERN: usize = 300;
    let mut total = 0;
    for (i, case) in cases().iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0x10A6_0000 + i as u64);
        for _ in 0..PER_PATTERN {
            let s = random_adversarial(&mut rng, 3000);
            check(case, &s);
            total += 1;
        }
    }
    eprintln!("fuzz_adversarial_long: {total} strings");
}

/// Every string of length <= 4 over one representative of each class distinction.
#[test]
fn exhaustive_short_strings() {
    const ALPHABET: &[char] = &[
        'a', 'A', 's', 'e', '\u{17f}', '\'', '0', ' ', '\t', '\n', '\r', '!', '/', '\u{301}',
        '\u{2b0}', '\u{1c5}',
    ];
    let cases = cases();
    let mut total = 0;
    let mut s = String::new();
    let mut idx = [0usize; 4];
    for len in 0..=4 {
        let count = ALPHABET.len().pow(len as u32);
        for mut n in 0..count {
            s.clear();
            for slot in idx.iter_mut().take(len) {
                *slot = n % ALPHABET.len();
                n /= ALPHABET.len();
                s.push(ALPHABET[*slot]);
            }
            for case in &cases {
                check(case, &s);
            }
            total += 1;
        }
    }
    eprintln!(
        "exhaustive_short_strings: {total} strings x {} patterns",
        cases.len()
    );
}

const PROSE: &str = "The quick brown fox jumps over the lazy dog. It's not that we'd \
    planned it; they've said THEY'LL come, and I'm sure you're right.\n\n\
    \"Quoted\" text -- with dashes, (parentheses) & ampersands... 3.14159 and 1,000,000!\r\n\
    Façade, naïve, coöperate, Ångström, Straße, ΑΘΗΝΑ, Москва, 東京都, 서울, مرحبا بالعالم ١٢٣, \
    हिन्दी भाषा, ไทย, עברית.\n   Indented line with trailing spaces   \n\t\ttabbed\n\
    Emoji: 😀👍🏽👨‍👩‍👧 flags 🇫🇷; math 𝐀𝐁𝐂 𝟎𝟏; fractions ½ ¾; roman ⅧⅫ.\u{a0}nbsp\u{3000}ideographic\n";

const CODE: &str = "import os, sys\n\ndef main(argv: list[str]) -> int:\n    \
    \"\"\"Docstring with 'quotes' and \"double quotes\".\"\"\"\n    \
    for i, arg in enumerate(argv[1:]):\n        if arg.startswith('--'):\n            \
    print(f\"{i:>3}: {arg!r}\")  # comment\n        elif arg == \"\":\n            \
    continue\n    return 0\r\n\r\nif __name__ == '__main__':\n    sys.exit(main(sys.argv))\n\
    // C++: std::vector<int> v{1, 2, 3}; auto x = v[0] >> 2; /* block */\n\
    fn f<'a>(x: &'a str) -> Option<&'a str> { x.split('/').next() }\n\
    {\"key\": [1, 2.5e-3, null, true], \"url\": \"https://example.com/a/b?c=d\"}\n\
    <div class=\"x\">&nbsp;</div>\n    \n\t\n$ ls -la /usr/bin | grep -E '^d' > out.txt\n";

fn random_slice<'a>(rng: &mut StdRng, text: &'a str) -> &'a str {
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let a = rng.random_range(0..bounds.len());
    let b = (a + rng.random_range(0..200)).min(bounds.len() - 1);
    &text[bounds[a]..bounds[b]]
}

#[test]
fn fuzz_ordinary_text() {
    const PER_PATTERN: usize = 5_000;
    let mut total = 0;
    for (i, case) in cases().iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(0x7E47_0000 + i as u64);
        check(case, PROSE);
        check(case, CODE);
        for _ in 0..PER_PATTERN {
            let mut s = String::new();
            for _ in 0..rng.random_range(1..5) {
                let source = if rng.random_bool(0.5) { PROSE } else { CODE };
                s.push_str(random_slice(&mut rng, source));
                if rng.random_bool(0.3) {
                    s.push_str(ADVERSARIAL[rng.random_range(0..ADVERSARIAL.len())]);
                }
            }
            check(case, &s);
            total += 1;
        }
    }
    eprintln!("fuzz_ordinary_text: {total} strings");
}

/// Large inputs of the shapes that make backtracking engines slow (or deep) must be scanned in
/// one pass; the matches must still tile the text, and agree with fancy-regex on a smaller copy.
#[test]
fn long_runs_are_linear_and_tile() {
    const MB: usize = 1 << 20;
    let units = [
        " ",
        "a",
        "A",
        "7",
        "\n",
        "\r\n",
        "!",
        "\u{1f600}",
        "\t",
        " \n",
        "\n ",
        "\u{301}",
        "\u{2b0}A",
        "A\u{2b0}",
        "\u{a0}",
        "'s",
        "'",
        "/",
        "\n/",
        "a1",
        " a",
        "\u{3000}",
    ];
    let tails = ["", "x", " ", "\n", "!"];
    let cases = cases();
    for unit in units {
        for tail in tails {
            let text = unit.repeat(MB / unit.len()) + tail;
            let small = unit.repeat(4096 / unit.len()) + tail;
            for case in &cases {
                let m = ours(&case.fast, &text);
                assert_tiles(case.name, &text, &m);
                check(case, &small);
            }
        }
    }
}
