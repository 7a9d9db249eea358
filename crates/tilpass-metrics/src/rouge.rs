//! ROUGE-N, ROUGE-L and ROUGE-Lsum as rouge-score 0.1.2 computes them, with two tokenizers:
//!
//! - [`RougeTokenizer::Ascii`]: rouge-score's own (lower-case, every run of characters outside
//!   `[a-z0-9]` is a separator, optional Porter stemming of tokens longer than 3) — the numbers
//!   papers, HF `evaluate` and NorEval report. It **drops æ, ø and å**: "blåbær" becomes the
//!   tokens `bl`, `b`, `r`, so Norwegian scores are distorted.
//! - [`RougeTokenizer::Unicode`] (the default here): lower-case, split on every character that
//!   is not a Unicode letter or digit, optional Snowball stemming for Norwegian (Bokmål; the
//!   Snowball Norwegian stemmer also serves Nynorsk reasonably), Swedish, Danish or English.
//!
//! Scores record which tokenizer made them ([`RougeScores::tokenizer`]).

use std::collections::HashMap;

use rust_stemmers::{Algorithm, Stemmer};
use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};
use crate::porter::porter_stem;

/// Snowball stemmers for the Unicode tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StemLanguage {
    /// Norwegian (Snowball; written for Bokmål).
    Norwegian,
    /// Swedish.
    Swedish,
    /// Danish.
    Danish,
    /// English (Snowball's Porter2).
    English,
}

/// How texts become tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum RougeTokenizer {
    /// rouge-score's tokenizer (ASCII letters and digits only), with its Porter stemmer when
    /// `stem`.
    Ascii {
        /// Porter-stem tokens longer than three characters.
        stem: bool,
    },
    /// Unicode letters and digits, with a Snowball stemmer.
    Unicode {
        /// Stemmer (`None`: no stemming).
        stem: Option<StemLanguage>,
    },
}

impl Default for RougeTokenizer {
    fn default() -> Self {
        Self::Unicode { stem: None }
    }
}

impl RougeTokenizer {
    /// A short name for reports: `rouge-score` / `rouge-score+porter` / `unicode` /
    /// `unicode+norwegian`.
    pub fn name(&self) -> String {
        match self {
            Self::Ascii { stem: false } => "rouge-score".into(),
            Self::Ascii { stem: true } => "rouge-score+porter".into(),
            Self::Unicode { stem: None } => "unicode".into(),
            Self::Unicode { stem: Some(l) } => {
                format!("unicode+{}", format!("{l:?}").to_lowercase())
            }
        }
    }

    /// The tokens of `text`.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let lower = text.to_lowercase();
        match self {
            Self::Ascii { stem } => lower
                .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
                .filter(|t| !t.is_empty())
                .map(|t| {
                    if *stem && t.len() > 3 {
                        porter_stem(t)
                    } else {
                        t.to_string()
                    }
                })
                .filter(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
                .collect(),
            Self::Unicode { stem } => {
                let stemmer = stem.map(|l| {
                    Stemmer::create(match l {
                        StemLanguage::Norwegian => Algorithm::Norwegian,
                        StemLanguage::Swedish => Algorithm::Swedish,
                        StemLanguage::Danish => Algorithm::Danish,
                        StemLanguage::English => Algorithm::English,
                    })
                });
                lower
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|t| !t.is_empty())
                    .map(|t| match &stemmer {
                        Some(s) => s.stem(t).into_owned(),
                        None => t.to_string(),
                    })
                    .filter(|t| !t.is_empty())
                    .collect()
            }
        }
    }
}

/// A ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RougeType {
    /// ROUGE-N (n-gram overlap), n ≥ 1.
    N(usize),
    /// ROUGE-L: the longest common subsequence of the whole texts.
    L,
    /// ROUGE-Lsum: union LCS over newline-separated sentences.
    Lsum,
}

impl RougeType {
    /// Parses `rouge1`…`rouge9`, `rougeL`, `rougeLsum`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "rougeL" => Ok(Self::L),
            "rougeLsum" => Ok(Self::Lsum),
            _ => name
                .strip_prefix("rouge")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n >= 1)
                .map(Self::N)
                .ok_or_else(|| {
                    MetricsError::Invalid(format!(
                        "unknown ROUGE type `{name}`: expected rouge1..rouge9, rougeL or rougeLsum"
                    ))
                }),
        }
    }

    /// `rouge1`, `rougeL`, `rougeLsum`.
    pub fn name(&self) -> String {
        match self {
            Self::N(n) => format!("rouge{n}"),
            Self::L => "rougeL".into(),
            Self::Lsum => "rougeLsum".into(),
        }
    }
}

/// Precision, recall and F1 of one variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct PrfScore {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub fmeasure: f64,
}

impl PrfScore {
    fn new(precision: f64, recall: f64) -> Self {
        let fmeasure = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            fmeasure,
        }
    }
}

/// Scores of one target/prediction pair, or their mean over a corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RougeScores {
    /// Per variant name (`rouge1`, ...).
    pub scores: std::collections::BTreeMap<String, PrfScore>,
    /// The tokenizer that produced them ([`RougeTokenizer::name`]).
    pub tokenizer: String,
}

/// The ROUGE scorer (rouge-score's `RougeScorer`).
#[derive(Debug, Clone)]
pub struct Rouge {
    /// Variants to compute.
    pub types: Vec<RougeType>,
    /// Tokenizer.
    pub tokenizer: RougeTokenizer,
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut m = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

fn lcs_table(a: &[String], b: &[String]) -> Vec<Vec<u32>> {
    let mut t = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i][j] = if a[i - 1] == b[j - 1] {
                t[i - 1][j - 1] + 1
            } else {
                t[i - 1][j].max(t[i][j - 1])
            };
        }
    }
    t
}

/// rouge-score's `lcs_ind`: indices into `a` of one LCS (its backtracking order).
fn lcs_indices(a: &[String], b: &[String]) -> Vec<usize> {
    let t = lcs_table(a, b);
    let (mut i, mut j) = (a.len(), b.len());
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if t[i][j - 1] > t[i - 1][j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
    out.reverse();
    out
}

impl Rouge {
    /// A scorer for `types` with `tokenizer`.
    pub fn new(types: &[RougeType], tokenizer: RougeTokenizer) -> Self {
        Self {
            types: types.to_vec(),
            tokenizer,
        }
    }

    /// Scores `prediction` against `target`.
    pub fn score(&self, target: &str, prediction: &str) -> RougeScores {
        let t = self.tokenizer.tokenize(target);
        let p = self.tokenizer.tokenize(prediction);
        let mut scores = std::collections::BTreeMap::new();
        for ty in &self.types {
            let s = match ty {
                RougeType::N(n) => {
                    let (tn, pn) = (ngrams(&t, *n), ngrams(&p, *n));
                    let inter: usize = tn
                        .iter()
                        .map(|(k, c)| (*c).min(pn.get(k).copied().unwrap_or(0)))
                        .sum();
                    let tc: usize = tn.values().sum();
                    let pc: usize = pn.values().sum();
                    PrfScore::new(
                        inter as f64 / pc.max(1) as f64,
                        inter as f64 / tc.max(1) as f64,
                    )
                }
                RougeType::L => {
                    if t.is_empty() || p.is_empty() {
                        PrfScore::default()
                    } else {
                        let l = lcs_table(&t, &p)[t.len()][p.len()] as f64;
                        PrfScore::new(l / p.len() as f64, l / t.len() as f64)
                    }
                }
                RougeType::Lsum => self.lsum(target, prediction),
            };
            scores.insert(ty.name(), s);
        }
        RougeScores {
            scores,
            tokenizer: self.tokenizer.name(),
        }
    }

    /// rouge-score's `_summary_level_lcs` over newline-split sentences.
    fn lsum(&self, target: &str, prediction: &str) -> PrfScore {
        let sents = |s: &str| -> Vec<Vec<String>> {
            s.split('\n')
                .filter(|x| !x.is_empty())
                .map(|x| self.tokenizer.tokenize(x))
                .collect()
        };
        let (r, c) = (sents(target), sents(prediction));
        if r.is_empty() || c.is_empty() {
            return PrfScore::default();
        }
        let m: usize = r.iter().map(Vec::len).sum();
        let n: usize = c.iter().map(Vec::len).sum();
        if m == 0 || n == 0 {
            return PrfScore::default();
        }
        let mut cnt_r: HashMap<&str, usize> = HashMap::new();
        let mut cnt_c: HashMap<&str, usize> = HashMap::new();
        for s in &r {
            for t in s {
                *cnt_r.entry(t).or_insert(0) += 1;
            }
        }
        for s in &c {
            for t in s {
                *cnt_c.entry(t).or_insert(0) += 1;
            }
        }
        let mut hits = 0usize;
        for rs in &r {
            let mut union = std::collections::BTreeSet::new();
            for cs in &c {
                union.extend(lcs_indices(rs, cs));
            }
            for i in union {
                let t = rs[i].as_str();
                let (a, b) = (cnt_c.get(t).copied(), cnt_r.get(t).copied());
                if a.unwrap_or(0) > 0 && b.unwrap_or(0) > 0 {
                    hits += 1;
                    if let Some(x) = cnt_c.get_mut(t) {
                        *x -= 1;
                    }
                    if let Some(x) = cnt_r.get_mut(t) {
                        *x -= 1;
                    }
                }
            }
        }
        PrfScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
    }

    /// rouge-score's `score_multi`: per variant, the target with the best F1.
    pub fn score_multi(&self, targets: &[&str], prediction: &str) -> RougeScores {
        let mut best: Option<RougeScores> = None;
        for t in targets {
            let s = self.score(t, prediction);
            best = Some(match best {
                None => s,
                Some(mut b) => {
                    for (k, v) in s.scores {
                        let e = b.scores.entry(k).or_default();
                        if v.fmeasure > e.fmeasure {
                            *e = v;
                        }
                    }
                    b
                }
            });
        }
        best.unwrap_or_else(|| self.score("", prediction))
    }

    /// The mean of per-pair scores over a corpus (`refs[k][i]` as in BLEU; several references
    /// per segment take the best, as `score_multi`).
    pub fn corpus_mean<S: AsRef<str>>(
        &self,
        hyps: &[S],
        refs: &[Vec<Option<S>>],
    ) -> Result<RougeScores> {
        crate::streams::check_streams(hyps.len(), refs)?;
        if hyps.is_empty() {
            return Err(MetricsError::Invalid("no hypotheses to score".into()));
        }
        let mut sum: std::collections::BTreeMap<String, PrfScore> = Default::default();
        for (i, h) in hyps.iter().enumerate() {
            let s = self.score_multi(&crate::streams::segment_refs(refs, i), h.as_ref());
            for (k, v) in s.scores {
                let e = sum.entry(k).or_default();
                e.precision += v.precision;
                e.recall += v.recall;
                e.fmeasure += v.fmeasure;
            }
        }
        let n = hyps.len() as f64;
        for v in sum.values_mut() {
            v.precision /= n;
            v.recall /= n;
            v.fmeasure /= n;
        }
        Ok(RougeScores {
            scores: sum,
            tokenizer: self.tokenizer.name(),
        })
    }
}
