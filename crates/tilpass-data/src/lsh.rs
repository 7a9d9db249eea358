//! MinHash LSH banding equal to datasketch's `MinHashLSH` (2.0.0): the optimal number of
//! bands `b` and rows per band `r` for a Jaccard threshold ([`optimal_params`], datasketch's
//! integral-based `_optimal_param`), and the candidate sets: two documents are candidates when
//! all `r` values of at least one of the `b` bands are equal.
//!
//! ```
//! use tilpass_data::lsh::optimal_params;
//! assert_eq!(optimal_params(0.8, 128, (0.5, 0.5)), (9, 13));
//! ```

use std::cmp::Ordering;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::minhash::Signatures;

/// Adaptive Gauss-Kronrod (7/15) integration of `f` over `[a, b]` to an absolute error of
/// about 1e-14 (scipy's `quad` agrees to ~1e-14 on these smooth integrands).
fn integrate(f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const XGK: [f64; 8] = [
        0.991_455_371_120_812_6,
        0.949_107_912_342_758_5,
        0.864_864_423_359_769_1,
        0.741_531_185_599_394_4,
        0.586_087_235_467_691_1,
        0.405_845_151_377_397_2,
        0.207_784_955_007_898_5,
        0.0,
    ];
    const WGK: [f64; 8] = [
        0.022_935_322_010_529_22,
        0.063_092_092_629_978_55,
        0.104_790_010_322_250_2,
        0.140_653_259_715_525_9,
        0.169_004_726_639_267_9,
        0.190_350_578_064_785_4,
        0.204_432_940_075_298_9,
        0.209_482_141_084_727_8,
    ];
    const WG: [f64; 4] = [
        0.129_484_966_168_869_7,
        0.279_705_391_489_276_7,
        0.381_830_050_505_118_9,
        0.417_959_183_673_469_4,
    ];
    fn rule(f: &dyn Fn(f64) -> f64, a: f64, b: f64) -> (f64, f64) {
        let c = 0.5 * (a + b);
        let h = 0.5 * (b - a);
        let fc = f(c);
        let mut k = WGK[7] * fc;
        let mut g = WG[3] * fc;
        for j in 0..7 {
            let x = h * XGK[j];
            let s = f(c - x) + f(c + x);
            k += WGK[j] * s;
            if j % 2 == 1 {
                g += WG[j / 2] * s;
            }
        }
        (k * h, ((k - g) * h).abs())
    }
    fn go(f: &dyn Fn(f64) -> f64, a: f64, b: f64, depth: u32) -> f64 {
        let (k, err) = rule(f, a, b);
        if err <= 1e-15 || depth >= 30 {
            return k;
        }
        let m = 0.5 * (a + b);
        go(f, a, m, depth + 1) + go(f, m, b, depth + 1)
    }
    if b <= a {
        return 0.0;
    }
    go(f, a, b, 0)
}

/// datasketch's `_false_positive_probability`: ∫₀ᵗ 1 - (1 - s^r)^b ds.
pub fn false_positive_probability(threshold: f64, b: usize, r: usize) -> f64 {
    let (bf, rf) = (b as f64, r as f64);
    integrate(&|s: f64| 1.0 - (1.0 - s.powf(rf)).powf(bf), 0.0, threshold)
}

/// datasketch's `_false_negative_probability`: ∫ₜ¹ (1 - s^r)^b ds.
pub fn false_negative_probability(threshold: f64, b: usize, r: usize) -> f64 {
    let (bf, rf) = (b as f64, r as f64);
    integrate(
        &|s: f64| 1.0 - (1.0 - (1.0 - s.powf(rf)).powf(bf)),
        threshold,
        1.0,
    )
}

/// datasketch's `_optimal_param`: the `(b, r)` with `b * r <= num_perm` minimising
/// `fp * weights.0 + fn * weights.1` (the first in `b`-then-`r` order on ties).
pub fn optimal_params(threshold: f64, num_perm: usize, weights: (f64, f64)) -> (usize, usize) {
    let mut min_error = f64::INFINITY;
    let mut opt = (0, 0);
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let fp = false_positive_probability(threshold, b, r);
            let fn_ = false_negative_probability(threshold, b, r);
            let error = fp * weights.0 + fn_ * weights.1;
            if error < min_error {
                min_error = error;
                opt = (b, r);
            }
        }
    }
    opt
}

/// LSH settings (datasketch's `MinHashLSH(threshold, num_perm, weights)`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LshConfig {
    /// Jaccard threshold in `[0, 1]`.
    pub threshold: f64,
    /// Signature length, >= 2.
    pub num_perm: usize,
    /// Weights of false positives and false negatives, each in `[0, 1]`, summing to 1.
    pub weights: (f64, f64),
}

impl Default for LshConfig {
    fn default() -> Self {
        Self {
            threshold: 0.8,
            num_perm: 128,
            weights: (0.5, 0.5),
        }
    }
}

/// A banded LSH over signatures: `bands` bands of `rows` values each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MinHashLsh {
    /// Number of bands (`b`).
    pub bands: usize,
    /// Values per band (`r`).
    pub rows: usize,
    /// Signature length.
    pub num_perm: usize,
}

impl MinHashLsh {
    /// Checks the settings as datasketch does (threshold and weights in `[0, 1]`, weights
    /// summing to 1, `num_perm >= 2`, at least 2 bands) and picks `(b, r)` with
    /// [`optimal_params`]. Errors are [`DataError::Invalid`] naming the setting.
    pub fn new(config: &LshConfig) -> Result<Self> {
        let bad = |s: String| Err(DataError::Invalid(s));
        if !(0.0..=1.0).contains(&config.threshold) {
            return bad(format!(
                "invalid setting `threshold` = {}: expected a value in [0, 1]",
                config.threshold
            ));
        }
        if config.num_perm < 2 {
            return bad(format!(
                "invalid setting `num_perm` = {}: expected at least 2 for LSH",
                config.num_perm
            ));
        }
        let (wf, wn) = config.weights;
        if !(0.0..=1.0).contains(&wf) || !(0.0..=1.0).contains(&wn) || wf + wn != 1.0 {
            return bad(format!(
                "invalid setting `weights` = ({wf}, {wn}): expected two values in [0, 1] summing to 1"
            ));
        }
        let (bands, rows) = optimal_params(config.threshold, config.num_perm, config.weights);
        if bands < 2 {
            return bad(format!(
                "invalid setting `threshold` = {}: with num_perm {} it gives {bands} band(s); \
                 expected at least 2 (lower the threshold or raise num_perm)",
                config.threshold, config.num_perm
            ));
        }
        Ok(Self {
            bands,
            rows,
            num_perm: config.num_perm,
        })
    }

    /// The buckets with at least two documents, per band: groups of document indices
    /// (ascending) whose band values are all equal. `sigs` must have `num_perm` values each.
    pub fn buckets(&self, sigs: &Signatures) -> Vec<Vec<u32>> {
        assert_eq!(sigs.num_perm, self.num_perm, "signature length");
        let n = sigs.len();
        let per_band: Vec<Vec<Vec<u32>>> = (0..self.bands)
            .into_par_iter()
            .map(|band| {
                let (lo, hi) = (band * self.rows, (band + 1) * self.rows);
                let slice = |i: u32| &sigs.get(i as usize)[lo..hi];
                let mut keyed: Vec<(u64, u32)> =
                    (0..n as u32).map(|i| (band_hash(slice(i)), i)).collect();
                keyed.sort_unstable_by(|x, y| {
                    x.0.cmp(&y.0)
                        .then_with(|| slice(x.1).cmp(slice(y.1)))
                        .then_with(|| x.1.cmp(&y.1))
                });
                let mut groups = Vec::new();
                let mut start = 0;
                for i in 1..=keyed.len() {
                    if i == keyed.len()
                        || keyed[i].0 != keyed[start].0
                        || slice(keyed[i].1).cmp(slice(keyed[start].1)) != Ordering::Equal
                    {
                        if i - start >= 2 {
                            groups.push(keyed[start..i].iter().map(|k| k.1).collect());
                        }
                        start = i;
                    }
                }
                groups
            })
            .collect();
        per_band.into_iter().flatten().collect()
    }

    /// datasketch's `query` of every inserted document: for each document, the sorted
    /// indices of the documents sharing at least one band with it (itself included).
    pub fn candidates(&self, sigs: &Signatures) -> Vec<Vec<usize>> {
        let mut out: Vec<Vec<usize>> = (0..sigs.len()).map(|i| vec![i]).collect();
        for g in self.buckets(sigs) {
            for &i in &g {
                out[i as usize].extend(g.iter().map(|&j| j as usize));
            }
        }
        for c in &mut out {
            c.sort_unstable();
            c.dedup();
        }
        out
    }
}

/// FNV-1a style mixing of a band's values into 64 bits (bucketing only; equal bands are
/// confirmed by comparing the values).
fn band_hash(v: &[u32]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in v {
        h = (h ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_integrate_the_s_curve() {
        // b = r = 1: ∫₀ᵗ s ds = t²/2 and ∫ₜ¹ (1 - s) ds = (1 - t)²/2.
        assert!((false_positive_probability(0.6, 1, 1) - 0.18).abs() < 1e-14);
        assert!((false_negative_probability(0.6, 1, 1) - 0.08).abs() < 1e-14);
    }

    #[test]
    fn settings_are_checked() {
        for cfg in [
            LshConfig {
                threshold: 1.5,
                ..Default::default()
            },
            LshConfig {
                num_perm: 1,
                ..Default::default()
            },
            LshConfig {
                weights: (0.5, 0.6),
                ..Default::default()
            },
            LshConfig {
                threshold: 0.95,
                num_perm: 16,
                ..Default::default()
            },
        ] {
            assert!(
                matches!(MinHashLsh::new(&cfg), Err(DataError::Invalid(_))),
                "{cfg:?}"
            );
        }
    }
}
