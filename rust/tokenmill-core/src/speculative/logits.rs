//! What a step needs from the target's logits, computed in one place straight from the
//! logits buffer (handed over from torch without a copy): the argmax at the nodes greedy
//! verification visits, and Token Recycling's top-k candidates with their softmax
//! probabilities.
//!
//! Done with torch ops, this was the largest per-step cost outside the forward: argmax, top-k
//! and logsumexp over every node's row are three full passes each with its own dispatch, plus
//! numpy round trips (about 2 ms for a 64-node tree over a 4k vocabulary on one CPU thread).
//! Here greedy verification reads a row only when the walk reaches its node (a handful of the
//! tree's nodes), and the top-k is computed once per distinct token of the tree (Token
//! Recycling overwrites a token's row at each node holding it, so only its last node counts).
//!
//! Exactness: the argmax must be torch's (greedy output must equal `model.generate`'s, which
//! takes `torch.argmax` over float32 logits): the first index of the maximum, a NaN counting as
//! greater than any number (the first NaN wins). The probabilities stored in the adjacency
//! matrix are only drafting scores (they order and size draft trees, never decide what is
//! output), so the softmax normaliser uses a fast `exp` accurate to a few float32 ulps.
//!
//! Speed: the normaliser's `exp` over the whole vocabulary is most of the work. The loops are
//! written so that the compiler vectorises them, but the baseline x86-64 target has only SSE2
//! (4 lanes); on CPUs with AVX2 (8 lanes) the same code compiled for it is selected at run time
//! ([`crate::simd`]), which roughly halves the time per row. Both builds give bit-identical
//! results (the lane structure is explicit).

#[cfg(target_arch = "x86_64")]
use crate::simd::has_avx2;
use crate::Rank;

/// Lanes of the vectorisable loops (two SSE / one AVX register of f32).
const LANES: usize = 8;

/// The row's maximum and whether it holds a NaN, in one vectorisable pass.
#[inline(always)]
fn max_and_nan(row: &[f32]) -> (f32, bool) {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut nan = [false; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            // A select rather than `f32::max` (whose NaN rule blocks vectorisation); NaNs are
            // tracked separately.
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
            nan[l] |= c[l].is_nan();
        }
    }
    let mut best = f32::NEG_INFINITY;
    let mut any_nan = false;
    for l in 0..LANES {
        best = if m[l] > best { m[l] } else { best };
        any_nan |= nan[l];
    }
    for &x in rest {
        best = if x > best { x } else { best };
        any_nan |= x.is_nan();
    }
    (best, any_nan)
}

/// `torch.argmax` of one row: the first index of the maximum; with NaNs, the first NaN. An
/// empty row gives 0.
pub fn argmax(row: &[f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { argmax_avx2(row) };
    }
    argmax_portable(row)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn argmax_avx2(row: &[f32]) -> usize {
    argmax_portable(row)
}

#[inline(always)]
fn argmax_portable(row: &[f32]) -> usize {
    let (m, nan) = max_and_nan(row);
    if nan {
        return row.iter().position(|x| x.is_nan()).unwrap_or(0);
    }
    // `m` is one of the row's values (or -inf for an all -inf row, which `==` finds at 0).
    row.iter().position(|&x| x == m).unwrap_or(0)
}

/// e^x for x <= 0 (x below -87 gives e^-87, about 1.6e-38, instead of a subnormal or 0),
/// branch-free so that loops over it vectorise: x = n ln 2 + r with |r| <= ln2 / 2, e^r as
/// 1 + r + r^2 p(r) with Cephes' degree-5 minimax p (`expf`; relative error below 1e-7, and
/// two operations fewer than the Taylor polynomial of the same accuracy), 2^n built in the
/// exponent bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    (p * (r * r) + r + 1.0) * scale
}

/// Sum of e^(x - m) over the row (m: its maximum), vectorisable.
#[inline(always)]
fn sum_exp(row: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp_nonpositive(c[l] - m);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &x in rest {
        s += exp_nonpositive(x - m);
    }
    s
}

/// The `k` largest entries of `row` (best first, equal values in index order) into `ids`, and their softmax probabilities over the
/// whole row into `probs`. A row holding a NaN or no finite maximum gives no candidates
/// (both vectors empty): there is nothing sensible to recycle from it.
pub fn top_k_probs(row: &[f32], k: usize, ids: &mut Vec<Rank>, probs: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { top_k_probs_avx2(row, k, ids, probs) };
    }
    top_k_probs_portable(row, k, ids, probs)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn top_k_probs_avx2(row: &[f32], k: usize, ids: &mut Vec<Rank>, probs: &mut Vec<f32>) {
    top_k_probs_portable(row, k, ids, probs)
}

/// Values per block of the threshold pass (eight vectors of `LANES`).
const BLOCK: usize = 8 * LANES;

#[inline(always)]
fn top_k_probs_portable(row: &[f32], k: usize, ids: &mut Vec<Rank>, probs: &mut Vec<f32>) {
    ids.clear();
    probs.clear();
    if k == 0 {
        return;
    }
    // The top k without keeping a sorted buffer over the whole row (inserting into it, about
    // k ln(n / k) times for a row in random order, cost more than the rest of the function):
    // the k-th largest of the blocks' maxima is a threshold that at least k values reach (one
    // per block), so the top k are among the values reaching it, which in a row of logits are
    // few. No NaN ever reaches it (comparisons with NaN are false); a NaN anywhere makes the
    // normaliser NaN, checked at the end.
    let blocks = row.chunks_exact(BLOCK);
    let mut threshold = f32::NEG_INFINITY;
    if blocks.len() >= k {
        let mut maxima: Vec<f32> = blocks.map(max_of_block).collect();
        let (_, kth, _) = maxima.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        threshold = *kth;
    }
    let mut cands: Vec<(u32, f32)> = Vec::new();
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.len() * LANES;
    for (ci, c) in chunks.enumerate() {
        let mut reach = false;
        for &x in c {
            reach |= x >= threshold;
        }
        if reach {
            for (l, &x) in c.iter().enumerate() {
                if x >= threshold {
                    cands.push(((ci * LANES + l) as u32, x));
                }
            }
        }
    }
    for (i, &x) in row[tail..].iter().enumerate() {
        if x >= threshold {
            cands.push(((tail + i) as u32, x));
        }
    }
    // Stable, by decreasing value: equal values keep index order. No NaN among candidates.
    cands.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    cands.truncate(k);
    ids.extend(cands.iter().map(|&(i, _)| i as Rank));
    let m = cands.first().map_or(f32::NEG_INFINITY, |c| c.1);
    let total = if m.is_finite() {
        sum_exp(row, m)
    } else {
        f32::NAN
    };
    if total.is_nan() {
        ids.clear();
        return;
    }
    probs.extend(cands.iter().map(|&(_, v)| exp_nonpositive(v - m) / total));
}

/// The largest value of a block (NaNs ignored), vectorisable.
#[inline(always)]
fn max_of_block(block: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    for c in block.chunks_exact(LANES) {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    m.iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive_argmax(row: &[f32]) -> usize {
        if let Some(i) = row.iter().position(|x| x.is_nan()) {
            return i;
        }
        let mut best = 0;
        for (i, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = i;
            }
        }
        best
    }

    #[test]
    fn argmax_follows_torch_rules() {
        let nan = f32::NAN;
        let inf = f32::INFINITY;
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[nan, 1.0, nan, 5.0]), 0);
        assert_eq!(argmax(&[1.0, nan, 9.0, inf]), 1);
        assert_eq!(argmax(&[-0.0, 0.0, -1.0, -0.0]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 11]), 0);
        assert_eq!(argmax(&[]), 0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let n = rng.random_range(1..70);
            // Few distinct values, so that ties (across lanes and the remainder) are common.
            let mut row: Vec<f32> = (0..n).map(|_| rng.random_range(0..6) as f32).collect();
            if rng.random_bool(0.1) {
                let i = rng.random_range(0..n);
                row[i] = nan;
            }
            assert_eq!(argmax(&row), naive_argmax(&row), "{row:?}");
        }
    }

    /// The AVX2 build (selected at run time where the CPU has it) gives exactly what the
    /// baseline build gives: the same values, ties, NaN handling and probabilities, bit for bit.
    /// A row of logits (lengths around the lane count, some up to `max_len`; coarse values
    /// that tie, or spread ones) and a k to take from it.
    fn random_row(rng: &mut rand::rngs::StdRng, max_len: usize) -> (Vec<f32>, usize) {
        let n = if rng.random_bool(0.8) {
            rng.random_range(0..70)
        } else {
            rng.random_range(70..max_len)
        };
        let k = rng.random_range(0..12);
        let coarse = rng.random_bool(0.4);
        let row = (0..n)
            .map(|_| {
                if coarse {
                    rng.random_range(0..5) as f32
                } else {
                    rng.random_range(-120.0..30.0)
                }
            })
            .collect();
        (row, k)
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_build_equals_the_portable_one() {
        if !has_avx2() {
            eprintln!("no AVX2 on this CPU: only the portable build can run");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut ids_a, mut probs_a) = (Vec::new(), Vec::new());
        let (mut ids_b, mut probs_b) = (Vec::new(), Vec::new());
        for _ in 0..3000 {
            let (mut row, k) = random_row(&mut rng, 5000);
            let n = row.len();
            if n > 0 && rng.random_bool(0.05) {
                let i = rng.random_range(0..n);
                row[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.random_range(0..3)];
            }
            // SAFETY: AVX2 and FMA were detected above.
            let fast = unsafe { argmax_avx2(&row) };
            assert_eq!(fast, argmax_portable(&row));
            assert_eq!(argmax(&row), fast);
            unsafe { top_k_probs_avx2(&row, k, &mut ids_a, &mut probs_a) };
            top_k_probs_portable(&row, k, &mut ids_b, &mut probs_b);
            assert_eq!(ids_a, ids_b);
            let bits = |p: &[f32]| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&probs_a), bits(&probs_b), "{row:?}");
        }
    }

    /// The previous computation (a separate pass for the maximum and NaNs; the top k by a
    /// stable sort, which the buffer was tested against), which the current one must
    /// reproduce bit for bit.
    fn top_k_probs_three_passes(row: &[f32], k: usize) -> (Vec<Rank>, Vec<f32>) {
        let (m, nan) = max_and_nan(row);
        if nan || !m.is_finite() || k == 0 {
            return (Vec::new(), Vec::new());
        }
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        let ids: Vec<Rank> = order[..k.min(row.len())]
            .iter()
            .map(|&i| i as Rank)
            .collect();
        let total = sum_exp(row, m);
        let probs = ids
            .iter()
            .map(|&i| exp_nonpositive(row[i as usize] - m) / total)
            .collect();
        (ids, probs)
    }

    #[test]
    fn top_k_without_a_max_pass_equals_three_passes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let (mut ids, mut probs) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            let (mut row, k) = random_row(&mut rng, 3000);
            let n = row.len();
            // Special values anywhere, early ones (met while the buffer fills) included.
            for _ in 0..rng.random_range(0..3) {
                if n > 0 && rng.random_bool(0.5) {
                    let i = if rng.random_bool(0.5) {
                        rng.random_range(0..n.min(k + 1))
                    } else {
                        rng.random_range(0..n)
                    };
                    row[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.random_range(0..3)];
                }
            }
            if rng.random_bool(0.02) {
                row.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
            }
            top_k_probs(&row, k, &mut ids, &mut probs);
            let (want_ids, want_probs) = top_k_probs_three_passes(&row, k);
            assert_eq!(ids, want_ids, "{row:?}");
            let bits = |p: &[f32]| p.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&probs), bits(&want_probs), "{row:?}");
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!((got - want).abs() <= 4e-7 * want, "{x}: {got} vs {want}");
            x += 0.001_3;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) > 0.0 && exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn top_k_matches_a_sort_and_softmax() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut ids, mut probs) = (Vec::new(), Vec::new());
        for _ in 0..500 {
            let n = rng.random_range(1..300);
            let k = rng.random_range(1..10);
            let coarse = rng.random_bool(0.5);
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    if coarse {
                        rng.random_range(0..5) as f32
                    } else {
                        rng.random_range(-20.0..20.0)
                    }
                })
                .collect();
            top_k_probs(&row, k, &mut ids, &mut probs);
            // A stable sort by decreasing value: ties in index order.
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
            let want: Vec<Rank> = order[..k.min(n)].iter().map(|&i| i as Rank).collect();
            assert_eq!(ids, want);
            let m = row[order[0]] as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - m).exp()).sum();
            for (&i, &p) in ids.iter().zip(&probs) {
                let want = (row[i as usize] as f64 - m).exp() / z;
                assert!(
                    (p as f64 - want).abs() <= 1e-6 * want.max(1e-3),
                    "{p} vs {want}"
                );
            }
        }
        top_k_probs(&[1.0, f32::NAN], 2, &mut ids, &mut probs);
        assert!(ids.is_empty() && probs.is_empty());
        top_k_probs(&[f32::NEG_INFINITY; 3], 2, &mut ids, &mut probs);
        assert!(ids.is_empty());
    }
}
