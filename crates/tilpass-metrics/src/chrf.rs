//! chrF and chrF++ exactly as sacrebleu 2.6.0 computes them: character n-grams up to
//! `char_order` (whitespace removed unless `whitespace`), word n-grams up to `word_order`
//! (chrF++: 2) after peeling one leading or trailing ASCII punctuation mark, β = 2, precision
//! and recall averaged over the orders present on both sides ("effective order"; or sacrebleu's
//! `eps_smoothing` form), the best reference per segment, corpus scores from summed
//! statistics.

use std::hash::Hash;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::bleu::SACREBLEU_VERSION;
use crate::error::{MetricsError, Result};
use crate::sacre_tokenize::{is_py_space, py_split};

/// chrF settings (sacrebleu's `CHRF(...)` arguments and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChrfConfig {
    /// Character n-gram order.
    pub char_order: usize,
    /// Word n-gram order (0: chrF, 2: chrF++).
    pub word_order: usize,
    /// β: recall weighs β times as much as precision.
    pub beta: u32,
    /// Lower-case first.
    pub lowercase: bool,
    /// Keep whitespace in character n-grams.
    pub whitespace: bool,
    /// The chrF++.py / NLTK form: mean of per-order F scores with ε = 1e-16.
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        Self {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfConfig {
    /// chrF++ (word order 2).
    pub fn chrf_plus_plus() -> Self {
        Self {
            word_order: 2,
            ..Self::default()
        }
    }
}

/// A chrF score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChrfScore {
    /// chrF, 0–100.
    pub score: f64,
    /// `chrF2` or `chrF2++`.
    pub name: String,
    /// sacrebleu's signature.
    pub signature: String,
}

/// The chrF metric.
#[derive(Debug, Clone, Default)]
pub struct Chrf {
    /// Settings.
    pub config: ChrfConfig,
}

const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn is_punct(c: char) -> bool {
    PUNCTS.contains(c)
}

/// sacrebleu's `_remove_punctuation`.
fn words(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        let first = chars.next();
        let last = w.chars().next_back();
        if w.chars().count() == 1 {
            out.push(w);
        } else if last.is_some_and(is_punct) {
            let cut = w.len() - last.map_or(0, char::len_utf8);
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if first.is_some_and(is_punct) {
            let cut = first.map_or(0, char::len_utf8);
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else {
            out.push(w);
        }
    }
    out
}

fn counts<K: Hash + Eq>(keys: impl Iterator<Item = K>) -> FxHashMap<K, u32> {
    let mut m = FxHashMap::default();
    for k in keys {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// The n-gram counters of one segment: char orders 1..=c, then word orders 1..=w.
struct Grams<'a> {
    /// Character n-grams packed 21 bits a character (n ≤ 6 fits a `u128` exactly), sorted
    /// (a multiset: merging two sorted lists counts the clipped matches without hashing).
    chars: Vec<Vec<u128>>,
    words: Vec<FxHashMap<&'a [&'a str], u32>>,
}

/// `[hyp, ref, match]` of one order, as `_get_match_statistics`.
fn match_stats<K: Hash + Eq>(hyp: &FxHashMap<K, u32>, r: &FxHashMap<K, u32>) -> [u64; 3] {
    let (mut m, mut h) = (0u64, 0u64);
    for (k, &c) in hyp {
        h += u64::from(c);
        if let Some(&rc) = r.get(k) {
            m += u64::from(c.min(rc));
        }
    }
    let rsum: u64 = r.values().map(|&c| u64::from(c)).sum();
    [if r.is_empty() { 0 } else { h }, rsum, m]
}

/// [`match_stats`] on sorted multisets.
fn sorted_match_stats(h: &[u128], r: &[u128]) -> [u64; 3] {
    let (mut i, mut j, mut m) = (0, 0, 0u64);
    while i < h.len() && j < r.len() {
        match h[i].cmp(&r[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                let k = h[i];
                let (i0, j0) = (i, j);
                while i < h.len() && h[i] == k {
                    i += 1;
                }
                while j < r.len() && r[j] == k {
                    j += 1;
                }
                m += (i - i0).min(j - j0) as u64;
            }
        }
    }
    [
        if r.is_empty() { 0 } else { h.len() as u64 },
        r.len() as u64,
        m,
    ]
}

impl Chrf {
    /// A metric with these settings.
    pub fn new(config: ChrfConfig) -> Self {
        Self { config }
    }

    fn grams<'a>(&self, text: &'a str, squeezed: &'a str, tokens: &'a [&'a str]) -> Grams<'a> {
        let line = if self.config.whitespace {
            text
        } else {
            squeezed
        };
        let cs: Vec<u32> = line.chars().map(u32::from).collect();
        let chars = (1..=self.config.char_order)
            .map(|n| {
                if cs.len() < n {
                    Vec::new()
                } else {
                    let mut keys: Vec<u128> = cs
                        .windows(n)
                        .map(|w| w.iter().fold(0u128, |k, &c| (k << 21) | u128::from(c)))
                        .collect();
                    keys.sort_unstable();
                    keys
                }
            })
            .collect();
        let words = (1..=self.config.word_order)
            .map(|n| counts(tokens.windows(n)))
            .collect();
        Grams { chars, words }
    }

    fn stats_against(&self, h: &Grams, r: &Grams) -> Vec<u64> {
        let mut s = Vec::with_capacity(3 * (self.config.char_order + self.config.word_order));
        for (a, b) in h.chars.iter().zip(&r.chars) {
            s.extend(sorted_match_stats(a, b));
        }
        for (a, b) in h.words.iter().zip(&r.words) {
            s.extend(match_stats(a, b));
        }
        s
    }

    /// sacrebleu's `_compute_f_score` on summed statistics.
    pub fn f_score(&self, stats: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = f64::from(self.config.beta).powi(2);
        let order = self.config.char_order + self.config.word_order;
        let (mut score, mut avg_p, mut avg_r, mut eff) = (0.0, 0.0, 0.0, 0usize);
        for i in 0..order {
            let (h, r, m) = (
                stats[3 * i] as f64,
                stats[3 * i + 1] as f64,
                stats[3 * i + 2] as f64,
            );
            let p = if h > 0.0 { m / h } else { eps };
            let rc = if r > 0.0 { m / r } else { eps };
            let denom = factor * p + rc;
            score += if denom > 0.0 {
                (1.0 + factor) * p * rc / denom
            } else {
                eps
            };
            if h > 0.0 && r > 0.0 {
                avg_p += p;
                avg_r += rc;
                eff += 1;
            }
        }
        if self.config.eps_smoothing {
            return 100.0 * score / order as f64;
        }
        if eff == 0 {
            avg_p = 0.0;
            avg_r = 0.0;
        } else {
            avg_p /= eff as f64;
            avg_r /= eff as f64;
        }
        if avg_p + avg_r != 0.0 {
            100.0 * (1.0 + factor) * avg_p * avg_r / (factor * avg_p + avg_r)
        } else {
            0.0
        }
    }

    fn segment_stats(&self, hyp: &str, refs: &[&str]) -> Vec<u64> {
        let prep = |s: &str| {
            if self.config.lowercase {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let squeeze = |s: &str| -> String { s.chars().filter(|c| !is_py_space(*c)).collect() };
        let hyp = prep(hyp);
        let hs = squeeze(&hyp);
        let hw = words(&hyp);
        let hg = self.grams(&hyp, &hs, &hw);
        let mut best: Option<(f64, Vec<u64>)> = None;
        for r in refs {
            let r = prep(r);
            let rs = squeeze(&r);
            let rw = words(&r);
            let rg = self.grams(&r, &rs, &rw);
            let stats = self.stats_against(&hg, &rg);
            let f = self.f_score(&stats);
            if best.as_ref().is_none_or(|(b, _)| f > *b) {
                best = Some((f, stats));
            }
        }
        best.map(|(_, s)| s)
            .unwrap_or_else(|| vec![0; 3 * (self.config.char_order + self.config.word_order)])
    }

    /// Corpus chrF of `hyps` against reference streams (`refs[k][i]`; `None` where a segment
    /// has fewer references).
    pub fn corpus_score<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
        refs: &[Vec<Option<S>>],
    ) -> Result<ChrfScore> {
        crate::streams::check_streams(hyps.len(), refs)?;
        if self.config.char_order + self.config.word_order == 0 {
            return Err(MetricsError::Invalid(
                "chrF needs a character or word order".into(),
            ));
        }
        use rayon::prelude::*;
        let per: Vec<Vec<u64>> = (0..hyps.len())
            .into_par_iter()
            .map(|i| self.segment_stats(hyps[i].as_ref(), &crate::streams::segment_refs(refs, i)))
            .collect();
        let order = self.config.char_order + self.config.word_order;
        let mut sum = vec![0u64; 3 * order];
        for s in per {
            for (a, b) in sum.iter_mut().zip(s) {
                *a += b;
            }
        }
        let nrefs = crate::streams::nrefs_label(hyps.len(), refs);
        Ok(ChrfScore {
            score: self.f_score(&sum),
            name: self.name(),
            signature: self.signature(&nrefs),
        })
    }

    /// Sentence chrF.
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<ChrfScore> {
        let streams: Vec<Vec<Option<&str>>> = refs.iter().map(|r| vec![Some(*r)]).collect();
        self.corpus_score(&[hyp], &streams)
    }

    /// `chrF2` / `chrF2++`.
    pub fn name(&self) -> String {
        format!(
            "chrF{}{}",
            self.config.beta,
            "+".repeat(self.config.word_order)
        )
    }

    /// sacrebleu's signature string.
    pub fn signature(&self, nrefs: &str) -> String {
        let c = &self.config;
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{SACREBLEU_VERSION}",
            if c.lowercase { "lc" } else { "mixed" },
            if c.eps_smoothing { "no" } else { "yes" },
            c.char_order,
            c.word_order,
            if c.whitespace { "yes" } else { "no" }
        )
    }
}
