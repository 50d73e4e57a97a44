//! The inner loop of a node that meets the whole vocabulary: e^(base + log P(t)) of every valid
//! token `t` added into the bin of its first byte.
//!
//! A node ending at the end of the prefix reads all of its row (the vocabulary: 4k to 128k
//! tokens), and on code most of the tokens are valid there, so this is one `exp` per token, a
//! few thousand per byte. `f64::exp` (libm) is a call per token that the compiler cannot
//! vectorise; [`exp`] is a branch-free polynomial (Cephes' `exp`: a Padé form accurate to
//! about 1 ulp) that it can, lanes of eight tokens at a time, with the validity table read as a
//! select rather than a branch. Values outside the polynomial's range (below -708, where the
//! result leaves the normal numbers, above 709, infinities and NaN) go to `f64::exp`, a lane
//! group at a time, so those come out exactly as before. The bins are summed in token-id order
//! either way; invalid tokens add 0.0, which changes no sum.

#[cfg(target_arch = "x86_64")]
use crate::simd::has_avx2;

use super::softmax::{Logit, Norm, Row, Values};

const LANES: usize = 8;
/// The range where [`exp`] is used: its result is a normal number there.
pub(super) const LO: f64 = -708.0;
const HI: f64 = 709.0;

/// e^x for `LO <= x <= HI`, within about 1 ulp of `f64::exp`: x = n ln 2 + r with |r| <= ln 2 / 2
/// (Cody-Waite: `n * C1` is exact), e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) (Cephes), and
/// 2^n written into the exponent bits.
#[inline(always)]
pub(super) fn exp(x: f64) -> f64 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const C1: f64 = 6.931_457_519_531_25e-1;
    const C2: f64 = 1.428_606_820_309_417_3e-6;
    // 1.5 * 2^52: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * C1 - n * C2;
    let rr = r * r;
    let p = r * ((1.261_771_930_748_105_8e-4 * rr + 3.029_944_077_074_419_5e-2) * rr + 1.0);
    let q = ((3.001_985_051_386_644_6e-6 * rr + 2.524_483_403_496_841e-3) * rr
        + 2.272_655_482_081_550_3e-1)
        * rr
        + 2.0;
    let e = 1.0 + 2.0 * (p / (q - p));
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits());
    e * f64::from_bits(ni.wrapping_add(1023) << 52)
}

/// [`exp`] of each lane, the same operations staged lane by lane (vectorisable).
#[inline(always)]
fn exp_lanes(x: &[f64; LANES]) -> [f64; LANES] {
    let mut e = [0.0f64; LANES];
    for l in 0..LANES {
        e[l] = exp(x[l]);
    }
    e
}

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
        // over the lanes of its own, so that the compiler turns it into vector operations.
        let mut in_range = true;
        for l in 0..LANES {
            x[l] = if s[l] == 2 {
                base + norm.apply(r[l].widen())
            } else {
                0.0
            };
            in_range &= (x[l] >= LO) & (x[l] <= HI);
        }
        let e = if in_range {
            exp_lanes(&x)
        } else {
            x.map(f64::exp)
        };
        for l in 0..LANES {
            bins[f[l] as usize] += if s[l] == 2 { e[l] } else { 0.0 };
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
    use super::super::tests::{ulps, xorshift};
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_libm_over_its_range() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut worst = 0;
        for i in 0..2_000_000u64 {
            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
            // Half the samples where log-probabilities live, half over the whole range.
            let x = if i % 2 == 0 {
                -60.0 * u
            } else {
                LO + (HI - LO) * u
            };
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        for x in [
            LO,
            HI,
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            0.5 * std::f64::consts::LN_2,
        ] {
            worst = worst.max(ulps(exp(x), x.exp()));
        }
        assert!(worst <= 2, "{worst} ulps");
    }

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
