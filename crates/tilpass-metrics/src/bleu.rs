//! BLEU exactly as sacrebleu 2.6.0 computes it: tokenizers `13a` / `intl` / `char` /
//! `none`, smoothing `exp` / `floor` / `add-k` / `none`, effective order, several references
//! (closest length, shorter on ties; clipped counts against the max over references), corpus
//! and sentence level, and sacrebleu's signature string.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::ngrams::{Interner, bits_for, count_ngrams};
use crate::sacre_tokenize::{SacreTokenizer, py_split};

/// sacrebleu's version the numbers and signatures follow.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// How zero n-gram matches are smoothed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Smooth {
    /// NIST geometric smoothing: the k-th zero-match order gets `1 / (2^k · total)`.
    #[default]
    Exp,
    /// A floor `value / total` for zero-match orders (default 0.1).
    Floor,
    /// Add `value` to matches and totals of orders 2 and up (default 1).
    #[serde(rename = "add-k")]
    AddK,
    /// No smoothing.
    None,
}

impl Smooth {
    /// sacrebleu's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exp => "exp",
            Self::Floor => "floor",
            Self::AddK => "add-k",
            Self::None => "none",
        }
    }

    /// Parses a sacrebleu name.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "exp" => Self::Exp,
            "floor" => Self::Floor,
            "add-k" => Self::AddK,
            "none" => Self::None,
            _ => return None,
        })
    }

    fn default_value(self) -> Option<f64> {
        match self {
            Self::Floor => Some(0.1),
            Self::AddK => Some(1.0),
            _ => None,
        }
    }
}

/// BLEU settings (sacrebleu's `BLEU(...)` arguments and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BleuConfig {
    /// Lower-case before tokenizing.
    pub lowercase: bool,
    /// Tokenizer.
    pub tokenize: SacreTokenizer,
    /// Smoothing.
    pub smooth_method: Smooth,
    /// Smoothing value for `floor` / `add-k` (`None`: 0.1 / 1).
    pub smooth_value: Option<f64>,
    /// Highest n-gram order.
    pub max_ngram_order: usize,
    /// Average only over orders with n-grams in the hypothesis (sentence BLEU).
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        Self {
            lowercase: false,
            tokenize: SacreTokenizer::Tok13a,
            smooth_method: Smooth::Exp,
            smooth_value: None,
            max_ngram_order: 4,
            effective_order: false,
        }
    }
}

/// A BLEU score with its statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleuScore {
    /// BLEU, 0–100.
    pub score: f64,
    /// Matched n-grams per order (after add-k smoothing, as sacrebleu reports them).
    pub counts: Vec<f64>,
    /// Hypothesis n-grams per order.
    pub totals: Vec<f64>,
    /// Precision per order, 0–100.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length (tokens).
    pub sys_len: usize,
    /// Closest reference length (tokens).
    pub ref_len: usize,
    /// sacrebleu's signature (`nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`).
    pub signature: String,
}

impl BleuScore {
    /// `sys_len / ref_len`.
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }
}

impl std::fmt::Display for BleuScore {
    /// sacrebleu's one-line form: `BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944
    /// hyp_len = 17 ref_len = 18)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        write!(
            f,
            "BLEU = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// Sufficient statistics of one segment: `[hyp_len, ref_len, correct_1..N, total_1..N]`.
type Stats = Vec<u64>;

/// The BLEU metric (sacrebleu's `BLEU`).
#[derive(Debug, Clone, Default)]
pub struct Bleu {
    /// Settings.
    pub config: BleuConfig,
}

impl Bleu {
    /// A metric with these settings.
    pub fn new(config: BleuConfig) -> Self {
        Self { config }
    }

    fn preprocess(&self, s: &str) -> String {
        let s = if self.config.lowercase {
            s.to_lowercase()
        } else {
            s.to_string()
        };
        self.config
            .tokenize
            .tokenize(s.trim_end_matches(crate::sacre_tokenize::is_py_space))
    }

    /// Statistics of one hypothesis against its references (already preprocessed).
    fn segment_stats(&self, hyp: &str, refs: &[String]) -> Stats {
        let order = self.config.max_ngram_order;
        let mut interner = Interner::default();
        let hyp_ids = interner.ids(py_split(hyp));
        let ref_ids: Vec<Vec<u32>> = refs.iter().map(|r| interner.ids(py_split(r))).collect();
        let bits = bits_for(order);
        let mut stats = vec![0u64; 2 + 2 * order];
        stats[0] = hyp_ids.len() as u64;
        stats[1] = closest_ref_len(hyp_ids.len(), ref_ids.iter().map(Vec::len)) as u64;
        if bits < 32 && (interner.len() as u64 + 1) >= (1u64 << bits) {
            // Too many distinct tokens in one segment to pack: count with vectors instead.
            return self.segment_stats_slow(&hyp_ids, &ref_ids, stats);
        }
        let hyp_counts = count_ngrams(&hyp_ids, order, bits);
        let mut ref_max: Vec<FxHashMap<u128, u32>> = vec![FxHashMap::default(); order];
        for r in &ref_ids {
            for (n, counts) in count_ngrams(r, order, bits).into_iter().enumerate() {
                for (k, c) in counts {
                    let e = ref_max[n].entry(k).or_insert(0);
                    *e = (*e).max(c);
                }
            }
        }
        for n in 0..order {
            for (k, &c) in &hyp_counts[n] {
                stats[2 + order + n] += u64::from(c);
                if let Some(&r) = ref_max[n].get(k) {
                    stats[2 + n] += u64::from(c.min(r));
                }
            }
        }
        stats
    }

    fn segment_stats_slow(&self, hyp: &[u32], refs: &[Vec<u32>], mut stats: Stats) -> Stats {
        let order = self.config.max_ngram_order;
        fn count(ids: &[u32], n: usize) -> FxHashMap<&[u32], u32> {
            let mut m: FxHashMap<&[u32], u32> = FxHashMap::default();
            for w in ids.windows(n) {
                *m.entry(w).or_insert(0) += 1;
            }
            m
        }
        for n in 1..=order {
            if hyp.len() < n {
                continue;
            }
            let h = count(hyp, n);
            let mut r: FxHashMap<&[u32], u32> = FxHashMap::default();
            for ids in refs {
                if ids.len() < n {
                    continue;
                }
                for (k, c) in count(ids, n) {
                    let e = r.entry(k).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            for (k, c) in h {
                stats[2 + order + n - 1] += u64::from(c);
                if let Some(&rc) = r.get(k) {
                    stats[2 + n - 1] += u64::from(c.min(rc));
                }
            }
        }
        stats
    }

    /// Corpus BLEU of `hyps` against reference streams `refs` (`refs[k][i]` is the k-th
    /// reference of segment i; `None` where a segment has fewer references).
    pub fn corpus_score<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
        refs: &[Vec<Option<S>>],
    ) -> Result<BleuScore> {
        let (per_segment, nrefs) = self.prepare(hyps, refs)?;
        let mut sum = vec![0u64; 2 + 2 * self.config.max_ngram_order];
        for s in per_segment {
            for (a, b) in sum.iter_mut().zip(s) {
                *a += b;
            }
        }
        Ok(self.compute(&sum, nrefs))
    }

    /// Per-segment statistics, in parallel over segments.
    fn prepare<S: AsRef<str> + Sync>(
        &self,
        hyps: &[S],
        refs: &[Vec<Option<S>>],
    ) -> Result<(Vec<Stats>, String)> {
        crate::streams::check_streams(hyps.len(), refs)?;
        if self.config.max_ngram_order == 0 {
            return Err(MetricsError::Invalid(
                "max_ngram_order must be at least 1".into(),
            ));
        }
        let nrefs = crate::streams::nrefs_label(hyps.len(), refs);
        use rayon::prelude::*;
        let stats = (0..hyps.len())
            .into_par_iter()
            .map(|i| {
                let r: Vec<String> = refs
                    .iter()
                    .filter_map(|s| s[i].as_ref().map(|x| self.preprocess(x.as_ref())))
                    .collect();
                self.segment_stats(&self.preprocess(hyps[i].as_ref()), &r)
            })
            .collect();
        Ok((stats, nrefs))
    }

    /// Sentence BLEU of one hypothesis against its references (sacrebleu's
    /// `sentence_score`; use `effective_order: true`, as sacrebleu recommends).
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<BleuScore> {
        let streams: Vec<Vec<Option<&str>>> = refs.iter().map(|r| vec![Some(*r)]).collect();
        self.corpus_score(&[hyp], &streams)
    }

    /// The signature string of a score over `nrefs` reference streams.
    pub fn signature(&self, nrefs: &str) -> String {
        let c = &self.config;
        let smooth = match (c.smooth_method.default_value(), c.smooth_value) {
            (Some(d), v) => format!("{}[{:.2}]", c.smooth_method.name(), v.unwrap_or(d)),
            (None, _) => c.smooth_method.name().to_string(),
        };
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|tok:{}|smooth:{smooth}|version:{SACREBLEU_VERSION}",
            if c.lowercase { "lc" } else { "mixed" },
            if c.effective_order { "yes" } else { "no" },
            c.tokenize.name()
        )
    }

    fn compute(&self, stats: &[u64], nrefs: String) -> BleuScore {
        let order = self.config.max_ngram_order;
        let (sys_len, ref_len) = (stats[0] as usize, stats[1] as usize);
        let mut correct: Vec<f64> = stats[2..2 + order].iter().map(|&x| x as f64).collect();
        let mut total: Vec<f64> = stats[2 + order..].iter().map(|&x| x as f64).collect();
        let r = compute_bleu(
            &mut correct,
            &mut total,
            sys_len,
            ref_len,
            self.config.smooth_method,
            self.config.smooth_value,
            self.config.effective_order,
        );
        BleuScore {
            score: r.0,
            counts: correct,
            totals: total,
            precisions: r.1,
            bp: r.2,
            sys_len,
            ref_len,
            signature: self.signature(&nrefs),
        }
    }
}

/// sacrebleu's `_get_closest_ref_len`: the reference length closest to the hypothesis
/// length, the shorter one on ties.
pub fn closest_ref_len(hyp_len: usize, ref_lens: impl Iterator<Item = usize>) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for r in ref_lens {
        let diff = hyp_len.abs_diff(r);
        best = match best {
            None => Some((diff, r)),
            Some((d, _)) if diff < d => Some((diff, r)),
            Some((d, l)) if diff == d && r < l => Some((diff, r)),
            b => b,
        };
    }
    best.map(|(_, l)| l).unwrap_or(0)
}

/// sacrebleu's `BLEU.compute_bleu`: `(score, precisions, bp)`; `correct` / `total` are
/// updated in place by add-k smoothing, as there.
pub fn compute_bleu(
    correct: &mut [f64],
    total: &mut [f64],
    sys_len: usize,
    ref_len: usize,
    smooth: Smooth,
    smooth_value: Option<f64>,
    effective_order: bool,
) -> (f64, Vec<f64>, f64) {
    let order = correct.len();
    let smooth_value = smooth_value.or(smooth.default_value()).unwrap_or(0.0);
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let mut precisions = vec![0.0; order];
    if correct.iter().all(|c| *c == 0.0) {
        return (0.0, precisions, bp);
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = order;
    for n in 1..=order {
        if smooth == Smooth::AddK && n > 1 {
            correct[n - 1] += smooth_value;
            total[n - 1] += smooth_value;
        }
        if total[n - 1] == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if correct[n - 1] == 0.0 {
            match smooth {
                Smooth::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
                }
                Smooth::Floor => precisions[n - 1] = 100.0 * smooth_value / total[n - 1],
                _ => {}
            }
        } else {
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
        }
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    let s: f64 = precisions[..eff_order].iter().map(|p| log(*p)).sum();
    (bp * (s / eff_order as f64).exp(), precisions, bp)
}
