//! o200k_base: the alternatives, in order,
//!
//! 1. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
//! 2. `[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?`
//! 3. `\p{N}{1,3}`
//! 4. ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
//! 5. `\s*[\r\n]+`
//! 6. `\s+(?!\S)`
//! 7. `\s+`
//!
//! Call the two bracket classes UPPER and LOWER. They overlap (Lm, Lo, M), and marks are neither
//! letters nor numbers, so they are also in the optional prefix class: a mark can be the prefix,
//! part of UPPER* or the LOWER+. So the engine's order of trying has to be reproduced: 1 with the
//! prefix taken, 1 without it, then 2 likewise (skipping the forms the first char rules out);
//! within 1, UPPER* takes its longest run and gives chars back until LOWER+ can start. For
//! example a mark before `HELLO` matches alone (UPPER* swallows `HELLO` too, then gives back
//! everything but the mark, the only char LOWER+ accepts), and `HELLO` is left to 2.

use super::classes::{is_other, is_word_prefix, Text, LETTER, LOWERISH, NUM, UPPERISH};

#[inline(always)]
fn upper(f: u8) -> bool {
    f & UPPERISH != 0
}

#[inline(always)]
fn lower(f: u8) -> bool {
    f & LOWERISH != 0
}

/// The longest UPPER run from some position.
struct UpperRun {
    /// Where the run ends.
    end: usize,
    /// Whether the char at `end` is LOWER (false at the end of the text).
    lower_follows: bool,
    /// The end of the run's last char that is also LOWER (Lm, Lo, M), if any.
    last_lower: Option<usize>,
}

#[inline(always)]
fn upper_run(t: &Text<'_>, mut i: usize) -> UpperRun {
    let mut last_lower = None;
    while i < t.len() {
        let (f, n) = t.at(i);
        if !upper(f) {
            return UpperRun {
                end: i,
                lower_follows: lower(f),
                last_lower,
            };
        }
        if lower(f) {
            last_lower = Some(i + n);
        }
        i += n;
    }
    UpperRun {
        end: i,
        lower_follows: false,
        last_lower,
    }
}

/// Where alternative 1's `LOWER+` ends after UPPER* took `run`, if it can match at all.
#[inline(always)]
fn lower_plus_end(t: &Text<'_>, run: &UpperRun) -> Option<usize> {
    if run.lower_follows {
        // The char at `run.end` is LOWER but not UPPER (it ended the run): a Ll letter.
        let (_, n) = t.at(run.end);
        Some(t.run(run.end + n, lower))
    } else {
        // UPPER* gives chars back until LOWER+ can start: at the run's last LOWER char (giving
        // back further only reaches UPPER-only chars, which LOWER+ rejects), and LOWER+ then
        // ends right after it, since the rest of the run and the char after it are not LOWER.
        run.last_lower
    }
}

/// Alternative 1 without its prefix, `UPPER* LOWER+ C?`, anchored at `s`.
#[inline]
fn alt1(t: &Text<'_>, s: usize) -> Option<usize> {
    let end = lower_plus_end(t, &upper_run(t, s))?;
    Some(t.contraction_ci(end).unwrap_or(end))
}

/// Alternative 1 and then alternative 2, both without the prefix and anchored at `s`. When
/// alternative 1 fails, the UPPER run from `s` holds no LOWER char and is not followed by one,
/// so alternative 2's `UPPER+ LOWER*` is exactly that run.
#[inline(always)]
fn alt1_then_alt2(t: &Text<'_>, s: usize) -> Option<usize> {
    let run = upper_run(t, s);
    let end = match lower_plus_end(t, &run) {
        Some(e) => e,
        None if run.end > s => run.end,
        None => return None,
    };
    Some(t.contraction_ci(end).unwrap_or(end))
}

/// End of the match starting at `p` (`p < len`; some alternative always matches at `p`).
#[inline]
pub(super) fn next_end(t: &Text<'_>, p: usize) -> usize {
    let (f, n) = t.at(p);
    // The engine's order is 1 with prefix, 1 without, 2 with, 2 without. Which of these can
    // match depends on the first char:
    if f & LETTER != 0 {
        // A letter is not a prefix, and is UPPER or LOWER, so 1 or else 2 matches from it.
        if let Some(e) = alt1_then_alt2(t, p) {
            return e;
        }
    } else if f & UPPERISH != 0 {
        // A mark: a prefix, and both UPPER and LOWER, so 1 without the prefix always matches.
        if let Some(e) = alt1(t, p + n).or_else(|| alt1(t, p)) {
            return e;
        }
    } else if is_word_prefix(f) {
        // Any other prefix char is neither UPPER nor LOWER: only the "with prefix" forms.
        if let Some(e) = alt1_then_alt2(t, p + n) {
            return e;
        }
    }
    if f & NUM != 0 {
        return t.run_max(p, 3, |f| f & NUM != 0);
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n/]*`
    let other_start = if is_other(f) {
        Some(p)
    } else if t.b[p] == b' ' && p + 1 < t.len() && is_other(t.flags_at(p + 1)) {
        Some(p + 1)
    } else {
        None
    };
    if let Some(s) = other_start {
        let e = t.run(s, is_other);
        return t.run_bytes(e, b"\r\n/");
    }
    // Whitespace: `\s*[\r\n]+` ends after the run's last line break; otherwise `\s+(?!\S)`
    // takes a run that ends the text, or gives back its last char before a non-space; `\s+`
    // is left with a single space before a non-space.
    let r = t.ws_run(p);
    if let Some(e) = r.newline_end {
        e
    } else if r.end == t.len() {
        r.end
    } else if r.last > p {
        r.last
    } else {
        p + n
    }
}
