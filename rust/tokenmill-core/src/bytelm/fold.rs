//! The inner loop of a node that meets the whole vocabulary: e^(base + log P(t)) of every valid
//! token `t` added into the bin of its first byte.
//!
//! A node ending at the end of the prefix reads all of its row (the vocabulary: 4k to 128k
//! tokens), and on code most of the tokens are valid there, so this is one `exp` per token, a
//! few thousand per byte. `f64::exp` (libm) is a call per token that the compiler cannot
//! vectorise; [`exp_lanes`] is a branch-free polynomial that it can, lanes of eight tokens at
//! a time, with the validity table read as a select rather than a branch. Values outside the
//! polynomial's range (below -708, where the result leaves the normal numbers, above 709,
//! infinities and NaN) go to `f64::exp`, a lane group at a time, so those come out exactly as
//! before. The bins are summed in token-id order either way; invalid tokens add 0.0, which
//! changes no sum.

#[cfg(target_arch = "x86_64")]
use crate::simd::has_avx2;

use super::softmax::{exp_lanes, Logit, Norm, Row, Values, EXP_HI as HI, EXP_LO as LO, LANES};

/// `bins[first[t]] += e^(base + log P(t))` for every token `t` with `states[t] == 2` (valid),
/// in token-id order, over the tokens the row and both slices cover.
pub(super) fn fold_valid(row: Row<'_>, states: &[u8], first: &[u8], base: f64, bins: &mut [f64]) {
    match row.values {
        Values::F32(v) => fold_valid_t(v, row.norm, states, first, base, bins),
        Values::F64(v) => fold_valid_t(v, row.norm, states, first, base, bins),
    }
}

fn fold_valid_t<T: Logit>(
    row: &[T],
    norm: Norm,
    states: &[u8],
    first: &[u8],
    base: f64,
    bins: &mut [f64],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { fold_valid_avx2(row, norm, states, first, base, bins) };
    }
    fold_valid_with(row, norm, states, first, base, bins)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fold_valid_avx2<T: Logit>(
    row: &[T],
    norm: Norm,
    states: &[u8],
    first: &[u8],
    base: f64,
    bins: &mut [f64],
) {
    fold_valid_with(row, norm, states, first, base, bins)
}

#[inline(always)]
fn fold_valid_with<T: Logit>(
    row: &[T],
    norm: Norm,
    states: &[u8],
    first: &[u8],
    base: f64,
    bins: &mut [f64],
) {
    let n = row.len().min(states.len()).min(first.len());
    let (row, states, first) = (&row[..n], &states[..n], &first[..n]);
    let split = n - n % LANES;
    let mut x = [0.0f64; LANES];
    for ((r, s), f) in row[..split]
        .chunks_exact(LANES)
        .zip(states[..split].chunks_exact(LANES))
        .zip(first[..split].chunks_exact(LANES))
    {
        // Invalid lanes compute e^0 and add nothing: no branch per token. Each step is a loop
        // over the lanes of its own, so that the compiler turns it into vector operations
        // (the range test too: a reduction over `bool`s stays scalar, one over masks does not).
        let s: &[u8; LANES] = s.try_into().expect("chunks of LANES");
        let mut keep = [0u64; LANES];
        for l in 0..LANES {
            keep[l] = if s[l] == 2 { u64::MAX } else { 0 };
        }
        for l in 0..LANES {
            let v = base + norm.apply(r[l].widen());
            x[l] = f64::from_bits(v.to_bits() & keep[l]);
        }
        let mut out = 0u64;
        for &v in &x {
            out |= u64::from(!(LO..=HI).contains(&v));
        }
        let e = if out == 0 {
            exp_lanes(&x)
        } else {
            x.map(f64::exp)
        };
        for l in 0..LANES {
            bins[f[l] as usize] += f64::from_bits(e[l].to_bits() & keep[l]);
        }
    }
    for t in split..n {
        if states[t] == 2 {
            bins[first[t] as usize] += (base + norm.apply(row[t].widen())).exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::xorshift;
    use super::*;

    #[test]
    fn fold_equals_the_plain_loop_with_libm() {
        let vocab = 1000 + LANES / 2; // a remainder after the lanes
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..6 {
            let mut row: Vec<f64> = (0..vocab)
                .map(|_| -((next() % 40_000) as f64) / 1000.0)
                .collect();
            let states: Vec<u8> = (0..vocab).map(|_| (next() % 3) as u8).collect();
            let first: Vec<u8> = (0..vocab).map(|_| next() as u8).collect();
            // Values the polynomial must leave to libm: masked tokens, underflow, NaN, +inf.
            match case {
                1 => row[17] = f64::NEG_INFINITY,
                2 => row[3] = -800.0,
                3 => row[500] = f64::NAN,
                4 => row[9] = f64::INFINITY,
                _ => {}
            }
            let base = if case == 5 { -690.0 } else { -1.5 };
            let mut fast = vec![0.0f64; 256];
            fold_valid(Row::log_probs(&row), &states, &first, base, &mut fast);
            let mut plain = vec![0.0f64; 256];
            for t in 0..vocab {
                if states[t] == 2 {
                    plain[first[t] as usize] += (base + row[t]).exp();
                }
            }
            for (b, (&f, &p)) in fast.iter().zip(&plain).enumerate() {
                let close = (f.is_nan() && p.is_nan())
                    || f == p
                    || ((f - p).abs() <= 1e-15 * p.abs() && p.is_finite());
                assert!(close, "case {case}, bin {b}: {f} against {p}");
            }
        }
    }
}
