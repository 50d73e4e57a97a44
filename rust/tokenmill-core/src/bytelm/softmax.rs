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

use super::fold::LO as EXP_LO;

const LANES: usize = 8;

/// e^x for each lane, `EXP_LO <= x <= 0` (and NaN for NaN), without a division
/// ([`super::fold::exp`]'s dominated this loop), each step a loop over the lanes so that the
/// compiler vectorises it, the polynomial in fused multiply-adds (`mul_add`: one `vfmadd` in
/// the AVX2 build, the same correctly rounded result in the portable one): x = n ln 2 + r with
/// |r| <= ln 2 / 2 (Cody-Waite, `n * C1` exact), e^r by its Taylor polynomial of degree 13
/// (the remainder is below 1e-17 relative), 2^n into the exponent bits. Within a few ulps of
/// `f64::exp` (tested); these terms only form a row's normaliser.
#[inline(always)]
fn exp_lanes(x: &[f64; LANES]) -> [f64; LANES] {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const C1: f64 = 6.931_457_519_531_25e-1;
    const C2: f64 = 1.428_606_820_309_417_3e-6;
    // 1.5 * 2^52: adding it rounds to an integer, which then sits in the low mantissa bits.
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    // 1/k! for k = 13 down to 2.
    const INV_FACT: [f64; 12] = [
        1.0 / 6_227_020_800.0,
        1.0 / 479_001_600.0,
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
    ];
    let mut t = [0.0; LANES];
    let mut r = [0.0; LANES];
    for l in 0..LANES {
        t[l] = x[l] * LOG2E + MAGIC;
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
        let ni = t[l].to_bits().wrapping_sub(MAGIC.to_bits());
        e[l] = p[l].mul_add(r[l], 1.0).mul_add(r[l], 1.0)
            * f64::from_bits(ni.wrapping_add(1023) << 52);
    }
    e
}

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
    fn exp_is_close_to_libm_over_its_range() {
        let mut worst = 0;
        for i in 0..=2_000_000u64 {
            let x = EXP_LO * i as f64 / 2e6;
            let (a, b) = (exp_lanes(&[x; LANES])[0], x.exp());
            worst = worst.max(ulps(a, b));
        }
        assert!(worst <= 4, "{worst} ulps");
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
