//! BM25 scoring with configurable `k1` and `b` over tantivy's index (tantivy 0.27 fixes them at
//! 1.2 / 0.75). The statistics are tantivy's (and Lucene's): `N` = documents in the searched
//! segments including deleted ones not yet merged away (Lucene's `docCount`), `df` summed over
//! segments, `avgdl = total tokens / N`, and each document's length read back from its field
//! norm, quantised to 256 buckets like Lucene's `SmallFloat.intToByte4`. The score of a passage
//! is `sum over query terms of idf * (k1 + 1) * tf / (tf + k1 (1 - b + b dl / avgdl))` with
//! `idf = ln(1 + (N - df + 0.5) / (df + 0.5))`: Lucene's `BM25Similarity` times `k1 + 1` (the
//! same ranking), computed in `f32` with the same operations as tantivy's `Bm25Weight`, so with
//! k1 1.2 and b 0.75 the scores are tantivy's own.
//!
//! Scoring is term at a time: the postings of each query term are read once per segment and
//! accumulated into a per-segment score array; deleted passages are skipped; the `k` best are
//! kept in a heap (ties: lower segment, then lower document first, tantivy's order).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use serde::{Deserialize, Serialize};
use tantivy::fieldnorm::FieldNormReader;
use tantivy::postings::Postings;
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{DocAddress, DocSet, Searcher, TERMINATED, Term};

use crate::error::{RagError, Result};

/// BM25 parameters (stored in the manifest; a search may override them).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bm25Params {
    /// Term-frequency saturation: finite, `>= 0` (Lucene's default 1.2).
    pub k1: f32,
    /// Length normalisation: finite, in `[0, 1]` (Lucene's default 0.75).
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Self { k1: 1.2, b: 0.75 }
    }
}

impl Bm25Params {
    /// Checks the ranges (`k1` finite and `>= 0`, `b` finite and in `[0, 1]`).
    pub fn validate(&self) -> Result<()> {
        if !self.k1.is_finite() || self.k1 < 0.0 {
            return Err(RagError::InvalidSetting {
                setting: "bm25.k1".into(),
                message: format!("{}; expected a finite number >= 0", self.k1),
            });
        }
        if !self.b.is_finite() || !(0.0..=1.0).contains(&self.b) {
            return Err(RagError::InvalidSetting {
                setting: "bm25.b".into(),
                message: format!("{}; expected a finite number in [0, 1]", self.b),
            });
        }
        Ok(())
    }
}

/// One scored passage: score and address (for the heap: worst first).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, DocAddress);

impl Eq for Scored {}

impl Ord for Scored {
    // "Greater" = better: higher score, then lower address. The heap keeps the worst on top by
    // storing `Reverse`-like ordering through `cmp` below.
    fn cmp(&self, o: &Self) -> Ordering {
        self.0
            .total_cmp(&o.0)
            .then_with(|| o.1.cmp(&self.1))
            .reverse()
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The `k` best passages of `searcher` for query `terms` (analysed; a repeated term counts again)
/// on `field`, best first, with scores > 0 only when some term matches (a passage matching no
/// term is not returned). `params` must be valid.
pub(crate) fn top_k(
    searcher: &Searcher,
    field: Field,
    terms: &[String],
    params: Bm25Params,
    k: usize,
) -> tantivy::Result<Vec<(f32, DocAddress)>> {
    // Query terms with their multiplicity, in first-seen order.
    let mut counts: Vec<(Term, u32)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for t in terms {
        match at.get(t.as_str()) {
            Some(&i) => counts[i].1 += 1,
            None => {
                at.insert(t, counts.len());
                counts.push((Term::from_field_text(field, t), 1));
            }
        }
    }
    let mut total_docs = 0u64;
    let mut total_tokens = 0u64;
    for r in searcher.segment_readers() {
        total_docs += u64::from(r.max_doc());
        total_tokens += r.inverted_index(field)?.total_num_tokens();
    }
    if total_docs == 0 {
        return Ok(Vec::new());
    }
    let avgdl = total_tokens as f32 / total_docs as f32;
    let (k1, b) = (params.k1, params.b);
    let mut norm = [0f32; 256];
    for (id, n) in norm.iter_mut().enumerate() {
        let dl = FieldNormReader::id_to_fieldnorm(id as u8);
        *n = k1 * (1.0 - b + b * dl as f32 / avgdl);
    }
    // Per-term weight idf * (k1 + 1), as tantivy's Bm25Weight.
    let mut weights = Vec::with_capacity(counts.len());
    for (term, _) in &counts {
        let df = searcher.doc_freq(term)?;
        let x = ((total_docs - df) as f32 + 0.5) / (df as f32 + 0.5);
        weights.push((1.0 + x).ln() * (1.0 + k1));
    }
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    for (seg, r) in searcher.segment_readers().iter().enumerate() {
        let inv = r.inverted_index(field)?;
        let norms = r.get_fieldnorms_reader(field)?;
        let mut acc = vec![0f32; r.max_doc() as usize];
        let mut touched: Vec<u32> = Vec::new();
        for ((term, count), &w) in counts.iter().zip(&weights) {
            let Some(mut p) = inv.read_postings(term, IndexRecordOption::WithFreqs)? else {
                continue;
            };
            let mut doc = p.doc();
            while doc != TERMINATED {
                let tf = p.term_freq() as f32;
                let s = w * (tf / (tf + norm[norms.fieldnorm_id(doc) as usize]));
                let slot = &mut acc[doc as usize];
                if *slot == 0.0 {
                    touched.push(doc);
                }
                for _ in 0..*count {
                    *slot += s;
                }
                doc = p.advance();
            }
        }
        let alive = r.alive_bitset();
        for doc in touched {
            if alive.is_some_and(|a| !a.is_alive(doc)) {
                continue;
            }
            let cand = Scored(acc[doc as usize], DocAddress::new(seg as u32, doc));
            if heap.len() < k {
                heap.push(cand);
            } else if let Some(worst) = heap.peek()
                && cand < *worst
            {
                heap.pop();
                heap.push(cand);
            }
        }
    }
    // Ascending by `Ord` = best first.
    Ok(heap
        .into_sorted_vec()
        .into_iter()
        .map(|s| (s.0, s.1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        Bm25Params::default().validate().unwrap();
        for (k1, b) in [(0.0, 0.0), (0.0, 1.0), (3.5, 0.4)] {
            Bm25Params { k1, b }.validate().unwrap();
        }
        for (k1, b) in [
            (-0.1, 0.5),
            (f32::NAN, 0.5),
            (f32::INFINITY, 0.5),
            (1.2, -0.01),
            (1.2, 1.01),
            (1.2, f32::NAN),
        ] {
            assert!(
                matches!(
                    Bm25Params { k1, b }.validate(),
                    Err(RagError::InvalidSetting { .. })
                ),
                "{k1} {b}"
            );
        }
    }

    #[test]
    fn heap_order_is_score_then_address() {
        let a = Scored(2.0, DocAddress::new(0, 5));
        let b = Scored(2.0, DocAddress::new(0, 7));
        let c = Scored(1.0, DocAddress::new(0, 1));
        let mut v = vec![c, b, a];
        v.sort();
        assert_eq!(v, [a, b, c]);
    }
}
