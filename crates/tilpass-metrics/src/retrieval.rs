//! Retrieval metrics with trec_eval / pytrec_eval semantics: nDCG@k (linear gain = grade,
//! discount `1 / log2(rank + 1)`, ideal DCG from every judged document), MAP, reciprocal rank,
//! recall@k and precision@k (relevant = grade ≥ 1); documents ranked by score, ties by
//! document id **descending** (trec_eval's order). Queries without judgments are skipped, as
//! pytrec_eval does. Also reciprocal rank fusion.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// Judgments: query id → document id → grade.
pub type Qrels = BTreeMap<String, BTreeMap<String, i64>>;
/// A run: query id → document id → score.
pub type Run = BTreeMap<String, BTreeMap<String, f64>>;

/// Metrics of one query (or their mean).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RetrievalScores {
    /// `ndcg` (all retrieved documents).
    pub ndcg: f64,
    /// `ndcg_cut_k` per cutoff.
    pub ndcg_cut: BTreeMap<usize, f64>,
    /// `map` (average precision).
    pub map: f64,
    /// `recip_rank`.
    pub recip_rank: f64,
    /// `recall_k` per cutoff.
    pub recall: BTreeMap<usize, f64>,
    /// `P_k` per cutoff.
    pub precision: BTreeMap<usize, f64>,
}

/// The documents of one query's run in trec_eval order.
pub fn ranked(docs: &BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    let mut v: Vec<(&str, f64)> = docs.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    // NaN scores rank last (a comparison that is not a total order may panic in `sort_by`).
    v.sort_by(|a, b| {
        let by_score = match (a.1.is_nan(), b.1.is_nan()) {
            (false, false) => b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal),
            (x, y) => x.cmp(&y),
        };
        by_score.then_with(|| b.0.cmp(a.0))
    });
    v
}

fn dcg(gains: impl Iterator<Item = f64>) -> f64 {
    gains
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum()
}

/// The metrics of one query at `cutoffs`.
pub fn query_scores(
    judged: &BTreeMap<String, i64>,
    docs: &BTreeMap<String, f64>,
    cutoffs: &[usize],
) -> RetrievalScores {
    let ranking = ranked(docs);
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0);
    let gains: Vec<f64> = ranking
        .iter()
        .map(|(d, _)| grade(d).max(0) as f64)
        .collect();
    let mut ideal: Vec<f64> = judged
        .values()
        .filter(|g| **g > 0)
        .map(|g| *g as f64)
        .collect();
    ideal.sort_by(|a, b| b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal));
    let n_rel = judged.values().filter(|g| **g >= 1).count();
    let rel: Vec<bool> = ranking.iter().map(|(d, _)| grade(d) >= 1).collect();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let mut s = RetrievalScores {
        ndcg: ratio(dcg(gains.iter().copied()), dcg(ideal.iter().copied())),
        ..Default::default()
    };
    for &k in cutoffs {
        s.ndcg_cut.insert(
            k,
            ratio(
                dcg(gains.iter().take(k).copied()),
                dcg(ideal.iter().take(k).copied()),
            ),
        );
        let hits = rel.iter().take(k).filter(|r| **r).count() as f64;
        s.recall.insert(k, ratio(hits, n_rel as f64));
        s.precision.insert(k, hits / k as f64);
    }
    let mut found = 0.0;
    let mut ap = 0.0;
    for (i, r) in rel.iter().enumerate() {
        if *r {
            found += 1.0;
            ap += found / (i + 1) as f64;
            if found == 1.0 {
                s.recip_rank = 1.0 / (i + 1) as f64;
            }
        }
    }
    s.map = ratio(ap, n_rel as f64);
    s
}

/// Per-query metrics of `run` against `qrels` for the queries in both, and their mean.
pub fn evaluate_run(
    qrels: &Qrels,
    run: &Run,
    cutoffs: &[usize],
) -> Result<(BTreeMap<String, RetrievalScores>, RetrievalScores)> {
    if cutoffs.contains(&0) {
        return Err(MetricsError::Invalid("cutoffs must be at least 1".into()));
    }
    let per: BTreeMap<String, RetrievalScores> = run
        .iter()
        .filter_map(|(q, docs)| {
            qrels
                .get(q)
                .map(|j| (q.clone(), query_scores(j, docs, cutoffs)))
        })
        .collect();
    if per.is_empty() {
        return Err(MetricsError::Invalid(
            "no query of the run has judgments in the qrels".into(),
        ));
    }
    let n = per.len() as f64;
    let mut mean = RetrievalScores::default();
    for s in per.values() {
        mean.ndcg += s.ndcg / n;
        mean.map += s.map / n;
        mean.recip_rank += s.recip_rank / n;
        for (k, v) in &s.ndcg_cut {
            *mean.ndcg_cut.entry(*k).or_default() += v / n;
        }
        for (k, v) in &s.recall {
            *mean.recall.entry(*k).or_default() += v / n;
        }
        for (k, v) in &s.precision {
            *mean.precision.entry(*k).or_default() += v / n;
        }
    }
    Ok((per, mean))
}

/// Reciprocal rank fusion (Cormack et al. 2009): `Σ_lists 1 / (k + rank)` with 1-based ranks
/// (`k` = 60 in the paper); documents missing from a list add nothing. Returns documents by
/// fused score, best first (ties by id, ascending).
pub fn reciprocal_rank_fusion<'a>(lists: &[Vec<&'a str>], k: f64) -> Vec<(&'a str, f64)> {
    let mut score: BTreeMap<&str, f64> = BTreeMap::new();
    for list in lists {
        for (i, d) in list.iter().enumerate() {
            *score.entry(d).or_insert(0.0) += 1.0 / (k + (i + 1) as f64);
        }
    }
    let mut v: Vec<(&str, f64)> = score.into_iter().collect();
    v.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(b.0))
    });
    v
}
