//! The model's logits as next-token log-probabilities, row by row.
//!
//! Every forward hands over one logits row per new node, the whole vocabulary each (4k to
//! 128k values), and each row needs its normaliser: one `exp` per value. Through torch
//! (`.to(float64)`, `log_softmax`, `.numpy()`) that was a fifth to a third of tokenmill's own
//! CPU time per byte on the benchmark models, most of it dispatch and two extra passes over
//! fresh float64 copies. Here the float32 (or float64) logits are read in place: [`row_norms`]
//! computes each row's [`Norm`] in two read-only passes, and the marginalisation applies it as
//! it reads a [`Row`], so no float64 copy of the rows is written (9 MB per byte on a 128k
//! vocabulary). [`log_softmax_rows`] writes the same values out where float64 rows are needed.
//!
//! The arithmetic is torch's `log_softmax` on the float64 values divided by the temperature:
//! `(x - max) - ln(sum(exp(x - max)))`, so a row holding NaN, or `+inf`, or only `-inf`
//! comes out all NaN, as there. Terms of the sum below e^-708 (where the polynomial would
//! leave the normal numbers) are counted as e^-708: the sum holds e^0 = 1 for the maximum, so
//! such a term is below half an ulp of it and changes nothing.

#[cfg(target_arch = "x86_64")]
use crate::simd::has_avx2;

pub(super) const LANES: usize = 8;
/// The range of [`exp_lanes`]: its results are normal numbers there.
pub(super) const EXP_LO: f64 = -708.0;
pub(super) const EXP_HI: f64 = 709.0;

/// e^x for each lane, `EXP_LO <= x <= EXP_HI` (and NaN for NaN), for the normalisers and the
/// fold. No division (Cephes' Padé form, used before in the fold, spent most of its time in
/// one); each step a loop over the lanes so that the compiler vectorises it; the polynomial in
/// fused multiply-adds (`mul_add`: one `vfmadd` in the AVX2 build, the same correctly rounded
/// result in the portable one). x = (32 n + j) ln 2 / 32 + r with |r| <= ln 2 / 64
/// (Cody-Waite, `n * C1` exact); e^r by its Taylor polynomial of degree 6 (the remainder is
/// below 4e-18 relative), times 2^(j / 32) from a table of 32 correctly rounded values, times
/// 2^n written into the exponent bits. Within 2 ulps of `f64::exp` (tested). A degree-13
/// polynomial over |r| <= ln 2 / 2, without the table, took twice the multiply-adds (a
/// 4096-wide normaliser: 1.32 -> 1.08 ns per value).
#[inline(always)]
pub(super) fn exp_lanes(x: &[f64; LANES]) -> [f64; LANES] {
    const K: f64 = 32.0 * std::f64::consts::LOG2_E;
    // ln 2 / 32 = C1 + C2, C1 with 38 significant bits so that n * C1 is exact for |n| < 2^15.
    const C1: f64 = 0.021_660_849_392_446_835;
    const C2: f64 = 5.145_609_244_655_338e-14;
    // 1.5 * 2^52: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    // 1/k! for k = 6 down to 2.
    const INV_FACT: [f64; 5] = [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];
    let mut t = [0.0; LANES];
    let mut r = [0.0; LANES];
    for l in 0..LANES {
        t[l] = x[l] * K + MAGIC;
        let n = t[l] - MAGIC;
        r[l] = x[l] - n * C1 - n * C2;
    }
    let mut p = [INV_FACT[0]; LANES];
    for c in &INV_FACT[1..] {
        for l in 0..LANES {
            p[l] = p[l].mul_add(r[l], *c);
        }
    }
    let mut e = [0.0; LANES];
    for l in 0..LANES {
        let ni = t[l].to_bits().wrapping_sub(MAGIC.to_bits()) as i64;
        let scale = f64::from_bits((((ni >> 5) + 1023) as u64) << 52);
        let two_j = f64::from_bits(EXP2_J[(ni & 31) as usize]);
        e[l] = p[l].mul_add(r[l], 1.0).mul_add(r[l], 1.0) * two_j * scale;
    }
    e
}

/// 2^(j / 32) for j = 0..32, correctly rounded (the bits of the f64 values).
const EXP2_J: [u64; 32] = [
    0x3ff0000000000000,
    0x3ff059b0d3158574,
    0x3ff0b5586cf9890f,
    0x3ff11301d0125b51,
    0x3ff172b83c7d517b,
    0x3ff1d4873168b9aa,
    0x3ff2387a6e756238,
    0x3ff29e9df51fdee1,
    0x3ff306fe0a31b715,
    0x3ff371a7373aa9cb,
    0x3ff3dea64c123422,
    0x3ff44e086061892d,
    0x3ff4bfdad5362a27,
    0x3ff5342b569d4f82,
    0x3ff5ab07dd485429,
    0x3ff6247eb03a5585,
    0x3ff6a09e667f3bcd,
    0x3ff71f75e8ec5f74,
    0x3ff7a11473eb0187,
    0x3ff82589994cce13,
    0x3ff8ace5422aa0db,
    0x3ff93737b0cdc5e5,
    0x3ff9c49182a3f090,
    0x3ffa5503b23e255d,
    0x3ffae89f995ad3ad,
    0x3ffb7f76f2fb5e47,
    0x3ffc199bdd85529c,
    0x3ffcb720dcef9069,
    0x3ffd5818dcfba487,
    0x3ffdfc97337b9b5f,
    0x3ffea4afa2a490da,
    0x3fff50765b6e4540,
];

/// A logits element: float32 or float64, widened exactly.
pub trait Logit: Copy {
    fn widen(self) -> f64;
}

impl Logit for f32 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self as f64
    }
}

impl Logit for f64 {
    #[inline(always)]
    fn widen(self) -> f64 {
        self
    }
}

/// A row's normaliser: log P(t) = (x_t - max) - log_sum, torch's `log_softmax` formula, where
/// x is a logit divided by the temperature (the rows handed to [`Row`] are at temperature 1).
/// [`Norm::NONE`] leaves values that already are log-probabilities as they are: (v - 0) - 0 = v.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Norm {
    pub max: f64,
    pub log_sum: f64,
}

impl Norm {
    pub const NONE: Norm = Norm {
        max: 0.0,
        log_sum: 0.0,
    };

    #[inline(always)]
    pub fn apply(self, x: f64) -> f64 {
        (x - self.max) - self.log_sum
    }
}

/// A row of the model's output as it came: float32 or float64 values.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

/// One node's next-token row: log P(t) = `norm.apply(values[t])`. The logits themselves with
/// their [`Norm`], read where the model left them, or float64 log-probabilities with
/// [`Norm::NONE`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    pub values: Values<'a>,
    pub norm: Norm,
}

impl<'a> Row<'a> {
    /// Log-probabilities as they are.
    pub fn log_probs(values: &'a [f64]) -> Self {
        Row {
            values: Values::F64(values),
            norm: Norm::NONE,
        }
    }

    pub fn len(&self) -> usize {
        match self.values {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// log P(t), `None` outside the row.
    #[inline]
    pub fn log_p(&self, t: usize) -> Option<f64> {
        let v = match self.values {
            Values::F32(v) => v.get(t)?.widen(),
            Values::F64(v) => *v.get(t)?,
        };
        Some(self.norm.apply(v))
    }
}

/// `out[r] = log_softmax(logits[r] / temperature)` for each row `r` of `n_cols` values (the
/// same `n_cols` in `out`); a temperature of 1 divides nothing.
pub fn log_softmax_rows<T: Logit>(logits: &[T], n_cols: usize, temperature: f64, out: &mut [f64]) {
    debug_assert_eq!(logits.len(), out.len());
    if n_cols == 0 {
        return;
    }
    for (z, o) in logits
        .chunks_exact(n_cols)
        .zip(out.chunks_exact_mut(n_cols))
    {
        let norm = norm_of(z, temperature);
        if temperature == 1.0 {
            for (o, &v) in o.iter_mut().zip(z) {
                *o = norm.apply(v.widen());
            }
        } else {
            for (o, &v) in o.iter_mut().zip(z) {
                *o = norm.apply(v.widen() / temperature);
            }
        }
    }
}

/// The [`Norm`] of each row of `n_cols` logits at temperature 1, without writing the rows: the
/// marginalisation reads the logits through [`Row`] instead (a float64 copy of every row is
/// written once and read once more, megabytes per byte on a large vocabulary).
pub fn row_norms<T: Logit>(logits: &[T], n_cols: usize) -> Vec<Norm> {
    if n_cols == 0 {
        return Vec::new();
    }
    logits
        .chunks_exact(n_cols)
        .map(|z| norm_of(z, 1.0))
        .collect()
}

fn norm_of<T: Logit>(z: &[T], temperature: f64) -> Norm {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { norm_avx2(z, temperature) };
    }
    norm_with(z, temperature)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn norm_avx2<T: Logit>(z: &[T], temperature: f64) -> Norm {
    norm_with(z, temperature)
}

#[inline(always)]
fn norm_with<T: Logit>(z: &[T], temperature: f64) -> Norm {
    if temperature == 1.0 {
        norm_scaled(z, |v: T| v.widen())
    } else {
        norm_scaled(z, |v: T| v.widen() / temperature)
    }
}

/// Two passes that only read the row, `x` the scaled value of a logit: the maximum, then the
/// sum of e^(x - max).
#[inline(always)]
fn norm_scaled<T: Logit>(z: &[T], x: impl Fn(T) -> f64) -> Norm {
    let split = z.len() - z.len() % LANES;
    // A NaN is skipped by the maximum and makes the sum NaN.
    let mut max = [f64::NEG_INFINITY; LANES];
    for c in z[..split].chunks_exact(LANES) {
        for l in 0..LANES {
            let v = x(c[l]);
            max[l] = if v > max[l] { v } else { max[l] };
        }
    }
    let m = z[split..]
        .iter()
        .map(|&v| x(v))
        .chain(max)
        .fold(f64::NEG_INFINITY, |a, b| if b > a { b } else { a });
    // NaN (from inf - inf) stays NaN: `d < EXP_LO` is false for it.
    let term = |v: T| {
        let d = x(v) - m;
        if d < EXP_LO {
            EXP_LO
        } else {
            d
        }
    };
    let mut sum = [0.0f64; LANES];
    for c in z[..split].chunks_exact(LANES) {
        let mut d = [0.0f64; LANES];
        for l in 0..LANES {
            d[l] = term(c[l]);
        }
        let e = exp_lanes(&d);
        for l in 0..LANES {
            sum[l] += e[l];
        }
    }
    let mut tail = [EXP_LO; LANES];
    for (d, &v) in tail.iter_mut().zip(&z[split..]) {
        *d = term(v);
    }
    let e = exp_lanes(&tail);
    let mut s: f64 = sum.iter().sum();
    // The unused lanes hold e^EXP_LO, below half an ulp of the sum.
    for e in &e[..z.len() - split] {
        s += e;
    }
    Norm {
        max: m,
        log_sum: s.ln(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ulps, xorshift};
    use super::*;

    /// torch's formula with libm, value by value.
    fn plain(z: &[f64], t: f64) -> Vec<f64> {
        let x: Vec<f64> = z.iter().map(|&v| v / t).collect();
        let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| {
            if b.is_nan() || a.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        });
        let s: f64 = x.iter().map(|&v| (v - m).exp()).sum();
        x.iter().map(|&v| (v - m) - s.ln()).collect()
    }

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
                EXP_LO + (EXP_HI - EXP_LO) * u
            };
            worst = worst.max(ulps(exp_lanes(&[x; LANES])[i as usize % LANES], x.exp()));
        }
        for x in [
            EXP_LO,
            EXP_HI,
            0.0,
            -0.0,
            1e-300,
            -1e-300,
            0.5 * std::f64::consts::LN_2,
            std::f64::consts::LN_2 / 64.0,
            -std::f64::consts::LN_2 / 64.0,
        ] {
            worst = worst.max(ulps(exp_lanes(&[x; LANES])[0], x.exp()));
        }
        assert!(worst <= 2, "{worst} ulps");
        assert!(exp_lanes(&[f64::NAN; LANES])[3].is_nan());
    }

    #[test]
    fn rows_equal_the_plain_formula() {
        let mut next = xorshift(0x51f1_5e11_d00d_f00d);
        let n_cols = 1003; // a remainder after the lanes
        for case in 0..8 {
            let mut z: Vec<f32> = (0..2 * n_cols)
                .map(|_| ((next() % 60_000) as f32 - 30_000.0) / 1000.0)
                .collect();
            match case {
                1 => z[17] = f32::NEG_INFINITY,
                2 => z[n_cols + 3] = f32::NAN,
                3 => z[1000] = f32::INFINITY,
                4 => z[..n_cols].fill(f32::NEG_INFINITY),
                5 => z[5] = 2000.0, // every other term below e^-708
                _ => {}
            }
            let t = if case == 6 { 0.7 } else { 1.0 };
            let mut got = vec![0.0; z.len()];
            log_softmax_rows(&z, n_cols, t, &mut got);
            let wide: Vec<f64> = z.iter().map(|&v| v as f64).collect();
            let mut as64 = vec![0.0; z.len()];
            log_softmax_rows(&wide, n_cols, t, &mut as64);
            for r in 0..2 {
                let cols = r * n_cols..(r + 1) * n_cols;
                let want = plain(&wide[cols.clone()], t);
                for ((&g, &g64), &w) in got[cols.clone()].iter().zip(&as64[cols]).zip(&want) {
                    assert_eq!(g.to_bits(), g64.to_bits(), "case {case}");
                    let close = (g.is_nan() && w.is_nan())
                        || g == w
                        || ((g - w).abs() <= 1e-14 * w.abs().max(1.0) && w.is_finite());
                    assert!(close, "case {case}, row {r}: {g} against {w}");
                }
            }
        }
    }
}
