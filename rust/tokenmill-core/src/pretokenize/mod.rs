//! Pre-tokenization: splitting text into the pieces BPE runs on.
//!
//! Design. tiktoken spends most of its encode time inside fancy-regex, which runs these patterns
//! as a backtracking VM: every piece pays for trying the alternatives one by one, and on long
//! whitespace runs `\s+(?!\S)` / `\s*[\r\n]` backtrack over the whole run (against a backtrack
//! limit that long inputs can hit). Yet the handful of patterns used in practice (GPT-2,
//! cl100k, Llama-3, Qwen2, o200k) are simple enough that their exact match sequence can be
//! computed by a direct left-to-right scan over character classes. So [`Pretokenizer::new`]
//! recognises those pattern strings and uses a hand-written scanner for them, one per pattern
//! family (`gpt2`, `cl100k`, `o200k`); any other pattern goes to fancy-regex.
//!
//! Exactness is the contract: a scanner must report exactly the matches fancy-regex's `find_iter`
//! reports, for every string. To make that checkable rather than hoped for:
//! - the character classes come from `regex_syntax`'s own Unicode tables (`classes`);
//! - each scanner reproduces the engine's order of trying alternatives and its backtracking,
//!   with the reasoning written next to the code;
//! - `tests` fuzzes every scanner against fancy-regex on adversarial and ordinary text.
//!
//! Every one of the known patterns matches at any position (each character is whitespace, a
//! letter, a number or "other", and each kind starts some alternative), so their matches tile
//! the text; the scanners compute one match end per step, allocation-free, in time linear in the
//! text (no step rescans more than a constant number of times what the previous one scanned).

mod cl100k;
pub(crate) mod classes;
mod gpt2;
mod o200k;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};

/// tiktoken's r50k_base / p50k_base / gpt2 pattern.
pub const R50K_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";
/// The original GPT-2 pattern, built into Hugging Face's ByteLevel pre-tokenizer.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// tiktoken's cl100k_base pattern.
pub const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";
/// Llama-3's pattern (also the older spelling of cl100k_base's).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern.
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// tiktoken's o200k_base pattern.
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+",
);

/// The patterns that have a hand-written scanner.
pub const KNOWN_PATTERNS: [&str; 6] = [
    R50K_PATTERN,
    GPT2_PATTERN,
    CL100K_PATTERN,
    LLAMA3_PATTERN,
    QWEN2_PATTERN,
    O200K_PATTERN,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scanner {
    Gpt2,
    Cl100k(cl100k::Variant),
    O200k,
}

impl Scanner {
    fn for_pattern(pattern: &str) -> Option<Scanner> {
        Some(match pattern {
            R50K_PATTERN | GPT2_PATTERN => Scanner::Gpt2,
            CL100K_PATTERN => Scanner::Cl100k(cl100k::CL100K),
            LLAMA3_PATTERN => Scanner::Cl100k(cl100k::LLAMA3),
            QWEN2_PATTERN => Scanner::Cl100k(cl100k::QWEN2),
            O200K_PATTERN => Scanner::O200k,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Engine {
    Scanner(Scanner),
    Regex(Box<fancy_regex::Regex>),
}

/// A compiled pre-tokenizer pattern.
#[derive(Debug, Clone)]
pub struct Pretokenizer {
    pattern: String,
    engine: Engine,
}

impl Pretokenizer {
    pub fn new(pattern: &str) -> Result<Self> {
        let engine = match Scanner::for_pattern(pattern) {
            Some(scanner) => {
                // Build the class tables now rather than inside the first encode call.
                classes::tables();
                Engine::Scanner(scanner)
            }
            None => Engine::Regex(Box::new(compile_regex(pattern)?)),
        };
        Ok(Pretokenizer {
            pattern: pattern.to_string(),
            engine,
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// True when a hand-written exact scanner is used instead of the general regex engine.
    pub fn is_fast(&self) -> bool {
        matches!(self.engine, Engine::Scanner(_))
    }

    /// Calls `f(start, end)` for every match of the pattern in `text`, left to right, with byte
    /// offsets. Matches never overlap; text between matches is not reported.
    pub fn for_each_match(&self, text: &str, mut f: impl FnMut(usize, usize)) -> Result<()> {
        match &self.engine {
            Engine::Scanner(scanner) => {
                let t = classes::Text::new(text);
                // One loop per scanner so the per-match step is inlined, not dispatched.
                match *scanner {
                    Scanner::Gpt2 => tile(&t, f, gpt2::next_end),
                    Scanner::Cl100k(v) => tile(&t, f, |t, p| cl100k::next_end(t, p, v)),
                    Scanner::O200k => tile(&t, f, o200k::next_end),
                }
                Ok(())
            }
            Engine::Regex(regex) => {
                for m in regex.find_iter(text) {
                    let m = m.map_err(|e| Error::RegexRuntime(e.to_string()))?;
                    f(m.start(), m.end());
                }
                Ok(())
            }
        }
    }
}

/// Compiles `pattern` with fancy-regex the way tiktoken would, but without a practical
/// backtracking limit (a limit turns slow inputs into errors, which exact tokenization can't
/// afford).
fn compile_regex(pattern: &str) -> Result<fancy_regex::Regex> {
    fancy_regex::RegexBuilder::new(pattern)
        .backtrack_limit(usize::MAX)
        .build()
        .map_err(|e| Error::InvalidPattern {
            pattern: pattern.to_string(),
            message: e.to_string(),
        })
}

/// Reports the matches of a pattern whose matches tile the text, given its step function.
#[inline(always)]
fn tile(
    t: &classes::Text<'_>,
    mut f: impl FnMut(usize, usize),
    next_end: impl Fn(&classes::Text<'_>, usize) -> usize,
) {
    let mut p = 0;
    while p < t.len() {
        let e = next_end(t, p);
        debug_assert!(e > p && e <= t.len());
        f(p, e);
        p = e;
    }
}
