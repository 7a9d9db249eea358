//! Hybrid search: fusing a BM25 list and a dense list of passages.
//!
//! - **RRF** (Cormack, Clarke, Buettcher 2009): `score(p) = Σ_lists 1 / (k + rank)`, 1-based
//!   ranks, `k` = 60, a passage missing from a list adds nothing
//!   ([`tilpass_metrics::reciprocal_rank_fusion`]); equal scores by passage key (`id`, then
//!   passage number).
//! - **Weighted**: `score(p) = alpha * dense'(p) + (1 - alpha) * bm25'(p)` where `x'` is the
//!   min-max normalisation of a retriever's scores over its own candidate list
//!   (`(x - min) / (max - min)`, 1 when all are equal) and a passage missing from a list gets 0
//!   there; equal scores by passage key.
//!
//! Each retriever contributes its top [`FusionConfig::depth`] passages.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{RagError, Result};
use crate::kb::Hit;

/// How lists are fused.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMethod {
    /// Reciprocal rank fusion with this `k` (60 in the paper).
    Rrf {
        /// The rank offset.
        k: f64,
    },
    /// Weighted sum of min-max normalised scores; `alpha` weighs the dense list.
    Weighted {
        /// Weight of the dense score, in `[0, 1]`.
        alpha: f64,
    },
}

/// Hybrid search settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionConfig {
    /// The fusion.
    pub method: FusionMethod,
    /// Passages each retriever contributes (at least the `k` asked for is used).
    pub depth: usize,
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            method: FusionMethod::Rrf { k: 60.0 },
            depth: 100,
        }
    }
}

impl FusionConfig {
    /// Checks `alpha` in `[0, 1]`, `k` finite and non-negative, `depth` at least 1.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: String| {
            Err(RagError::InvalidSetting {
                setting: setting.into(),
                message,
            })
        };
        match self.method {
            FusionMethod::Rrf { k } if !(k.is_finite() && k >= 0.0) => {
                bad("rrf_k", format!("{k}; expected a finite number >= 0"))
            }
            FusionMethod::Weighted { alpha } if !(0.0..=1.0).contains(&alpha) => {
                bad("alpha", format!("{alpha}; expected a weight in [0, 1]"))
            }
            _ if self.depth == 0 => bad("depth", "0; expected at least 1".into()),
            _ => Ok(()),
        }
    }
}

/// A hybrid hit: the passage with its fused score, and where each retriever ranked it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FusedHit {
    /// The passage; `score` is the fused score.
    #[serde(flatten)]
    pub hit: Hit,
    /// 1-based BM25 rank, if BM25 found it.
    pub bm25_rank: Option<usize>,
    /// 1-based dense rank, if dense search found it.
    pub dense_rank: Option<usize>,
    /// BM25 score, if found.
    pub bm25_score: Option<f32>,
    /// Dense (cosine) score, if found.
    pub dense_score: Option<f32>,
}

/// The key of a passage in fusion: id and passage number, `\u{0}`-separated (ids hold no NUL
/// in practice; the order is id, then number as zero-padded decimal).
fn key(h: &Hit) -> String {
    format!("{}\u{0}{:020}", h.id, h.ord)
}

/// Min-max normalised scores of a list (1 for all when they are equal).
fn min_max(hits: &[Hit]) -> Vec<f64> {
    let s: Vec<f64> = hits.iter().map(|h| f64::from(h.score)).collect();
    let lo = s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    s.iter()
        .map(|x| if hi > lo { (x - lo) / (hi - lo) } else { 1.0 })
        .collect()
}

/// Fuses `bm25` and `dense` (each best first) and keeps the best `k`.
pub fn fuse(bm25: &[Hit], dense: &[Hit], method: FusionMethod, k: usize) -> Vec<FusedHit> {
    let mut by_key: HashMap<String, FusedHit> = HashMap::new();
    for (list, is_dense) in [(bm25, false), (dense, true)] {
        for (i, h) in list.iter().enumerate() {
            let e = by_key.entry(key(h)).or_insert_with(|| FusedHit {
                hit: h.clone(),
                bm25_rank: None,
                dense_rank: None,
                bm25_score: None,
                dense_score: None,
            });
            if is_dense {
                e.dense_rank.get_or_insert(i + 1);
                e.dense_score.get_or_insert(h.score);
            } else {
                e.bm25_rank.get_or_insert(i + 1);
                e.bm25_score.get_or_insert(h.score);
            }
        }
    }
    let scored: Vec<(String, f64)> = match method {
        FusionMethod::Rrf { k: rk } => {
            let keys: Vec<Vec<String>> = [bm25, dense]
                .iter()
                .map(|l| l.iter().map(key).collect())
                .collect();
            let lists: Vec<Vec<&str>> = keys
                .iter()
                .map(|l| l.iter().map(String::as_str).collect())
                .collect();
            tilpass_metrics::reciprocal_rank_fusion(&lists, rk)
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect()
        }
        FusionMethod::Weighted { alpha } => {
            let mut s: HashMap<String, f64> = HashMap::new();
            for (list, w) in [(bm25, 1.0 - alpha), (dense, alpha)] {
                for (h, x) in list.iter().zip(min_max(list)) {
                    *s.entry(key(h)).or_insert(0.0) += w * x;
                }
            }
            let mut v: Vec<(String, f64)> = s.into_iter().collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        }
    };
    scored
        .into_iter()
        .take(k)
        .filter_map(|(kk, s)| {
            let mut f = by_key.remove(&kk)?;
            f.hit.score = s as f32;
            Some(f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            id: id.into(),
            score,
            passage: String::new(),
            start: 0,
            end: 0,
            title: None,
            ord: 0,
            meta: None,
        }
    }

    #[test]
    fn rrf_and_weighted_by_hand_formula() {
        let bm25 = [hit("a", 9.0), hit("b", 5.0), hit("c", 1.0)];
        let dense = [hit("c", 0.9), hit("d", 0.8), hit("a", 0.2)];
        let f = fuse(&bm25, &dense, FusionMethod::Rrf { k: 60.0 }, 10);
        let a = 1.0 / 61.0 + 1.0 / 63.0;
        let c = 1.0 / 63.0 + 1.0 / 61.0;
        assert_eq!(f.len(), 4);
        // a and c tie exactly; the key breaks the tie.
        assert_eq!((f[0].hit.id.as_str(), f[1].hit.id.as_str()), ("a", "c"));
        assert!((f64::from(f[0].hit.score) - a).abs() < 1e-7);
        assert!((f64::from(f[1].hit.score) - c).abs() < 1e-7);
        assert_eq!((f[0].bm25_rank, f[0].dense_rank), (Some(1), Some(3)));
        assert_eq!(f[2].hit.id, "b"); // 1/62 beats d's 1/62? equal: b < d by key
        assert_eq!(f[3].hit.id, "d");

        let w = fuse(&bm25, &dense, FusionMethod::Weighted { alpha: 0.5 }, 2);
        // a: 0.5*1 + 0.5*0 = 0.5; c: 0.5*0 + 0.5*1 = 0.5; b: 0.5*0.5 = 0.25; d: 0.5*6/7.
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].hit.id, "a");
        assert_eq!(w[1].hit.id, "c");
        let w1 = fuse(&bm25, &dense, FusionMethod::Weighted { alpha: 1.0 }, 4);
        let ids: Vec<&str> = w1.iter().map(|h| h.hit.id.as_str()).collect();
        assert_eq!(ids, ["c", "d", "a", "b"]);
        assert!(
            FusionConfig {
                method: FusionMethod::Weighted { alpha: 1.5 },
                depth: 10
            }
            .validate()
            .is_err()
        );
    }
}
