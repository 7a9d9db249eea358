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
//! Scoring is term at a time with MaxScore pruning (`top_k`); `top_k_exhaustive` reads every
//! posting of every query term and is the definition the pruned search must equal (the same
//! passages, order and scores bit for bit). Per segment, the terms are read in decreasing order
//! of their score bound `count * idf * (k1 + 1)` (a term adds at most that: `tf / (tf + norm)
//! <= 1`), accumulating partial scores; the `k`-th best partial score of a live passage (or the
//! worst of the `k` kept from earlier segments) is a threshold. Once the bounds of the unread
//! terms sum below it, no passage they alone match can reach the top `k`: those terms are only
//! looked up (`seek`) for the passages still able to reach the threshold, which shrink as terms
//! are read. The survivors' scores are then recomputed in the query's term order, exactly as the
//! exhaustive sum, and the `k` best are kept in a heap (ties: lower segment, then lower document
//! first, tantivy's order). Comparisons with the threshold keep a relative margin of 1e-3, far
//! above the rounding of sums taken in another order, so pruning never drops a passage the
//! exhaustive search would return.

use std::cell::RefCell;
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

/// A query ready to score: distinct terms with their multiplicity (first-seen order), their
/// weights `idf * (k1 + 1)`, and the 256 length normalisers `k1 (1 - b + b dl / avgdl)`.
struct Prepared {
    counts: Vec<(Term, u32)>,
    weights: Vec<f32>,
    norm: [f32; 256],
}

impl Prepared {
    /// `None` when the searcher holds no passage.
    fn new(
        searcher: &Searcher,
        field: Field,
        terms: &[String],
        params: Bm25Params,
    ) -> tantivy::Result<Option<Self>> {
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
            return Ok(None);
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
        Ok(Some(Self {
            counts,
            weights,
            norm,
        }))
    }

    /// Term `t`'s contribution to a passage with term frequency `tf` and norm id `id`.
    #[inline]
    fn term_score(&self, t: usize, tf: u32, id: u8) -> f32 {
        let tf = tf as f32;
        self.weights[t] * (tf / (tf + self.norm[id as usize]))
    }
}

/// Offers `cand` to the heap of the `k` best.
fn offer(heap: &mut BinaryHeap<Scored>, k: usize, cand: Scored) {
    if heap.len() < k {
        heap.push(cand);
    } else if let Some(worst) = heap.peek()
        && cand < *worst
    {
        heap.pop();
        heap.push(cand);
    }
}

/// The heap's contents, best first.
fn best_first(heap: BinaryHeap<Scored>) -> Vec<(f32, DocAddress)> {
    // Ascending by `Ord` = best first.
    heap.into_sorted_vec()
        .into_iter()
        .map(|s| (s.0, s.1))
        .collect()
}

/// Reads every posting of every query term ([`top_k`] without pruning; its definition).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn top_k_exhaustive(
    searcher: &Searcher,
    field: Field,
    terms: &[String],
    params: Bm25Params,
    k: usize,
) -> tantivy::Result<Vec<(f32, DocAddress)>> {
    let Some(q) = Prepared::new(searcher, field, terms, params)? else {
        return Ok(Vec::new());
    };
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    for (seg, r) in searcher.segment_readers().iter().enumerate() {
        let inv = r.inverted_index(field)?;
        let norms = r.get_fieldnorms_reader(field)?;
        let mut acc = vec![0f32; r.max_doc() as usize];
        let mut touched: Vec<u32> = Vec::new();
        for (t, (term, count)) in q.counts.iter().enumerate() {
            let Some(mut p) = inv.read_postings(term, IndexRecordOption::WithFreqs)? else {
                continue;
            };
            let mut doc = p.doc();
            while doc != TERMINATED {
                let s = q.term_score(t, p.term_freq(), norms.fieldnorm_id(doc));
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
            offer(
                &mut heap,
                k,
                Scored(acc[doc as usize], DocAddress::new(seg as u32, doc)),
            );
        }
    }
    Ok(best_first(heap))
}

/// Relative margin of every comparison with the pruning threshold.
const MARGIN: f32 = 1e-3;

thread_local! {
    /// A per-thread score array, all zero between calls (only touched slots are written).
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The `k` best passages of `searcher` for query `terms` (analysed; a repeated term counts again)
/// on `field`, best first, with scores > 0 only when some term matches (a passage matching no
/// term is not returned). `params` must be valid. MaxScore-pruned (module docs); the result
/// equals [`top_k_exhaustive`]'s.
pub(crate) fn top_k(
    searcher: &Searcher,
    field: Field,
    terms: &[String],
    params: Bm25Params,
    k: usize,
) -> tantivy::Result<Vec<(f32, DocAddress)>> {
    let Some(q) = Prepared::new(searcher, field, terms, params)? else {
        return Ok(Vec::new());
    };
    if k == 0 {
        return Ok(Vec::new());
    }
    // Score bounds; terms in decreasing bound order (ties: query order).
    let bounds: Vec<f32> = q
        .counts
        .iter()
        .zip(&q.weights)
        .map(|((_, c), w)| w * *c as f32)
        .collect();
    let mut order: Vec<usize> = (0..bounds.len()).collect();
    order.sort_by(|&a, &b| bounds[b].total_cmp(&bounds[a]).then(a.cmp(&b)));
    let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
    for (seg, r) in searcher.segment_readers().iter().enumerate() {
        let max_doc = r.max_doc() as usize;
        let mut acc = ACC.with(|a| std::mem::take(&mut *a.borrow_mut()));
        if acc.len() < max_doc {
            acc.resize(max_doc, 0.0);
        }
        let out = segment(&q, &bounds, &order, r, field, k, &heap, &mut acc);
        if out.is_ok() {
            // All zero again (an error may leave it dirty: then it is dropped).
            ACC.with(|a| *a.borrow_mut() = acc);
        }
        for (score, doc) in out? {
            offer(
                &mut heap,
                k,
                Scored(score, DocAddress::new(seg as u32, doc)),
            );
        }
    }
    Ok(best_first(heap))
}

/// The `k`-th largest value of `v` (`None` when shorter); reorders `v`.
fn kth_largest(v: &mut [f32], k: usize) -> Option<f32> {
    if v.len() < k {
        return None;
    }
    let (_, x, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    Some(*x)
}

/// One segment of [`top_k`]: the passages that can reach the top `k`, with their exact scores.
/// `acc` is all zero on entry and on return (at least `max_doc` long).
#[allow(clippy::too_many_arguments)]
fn segment(
    q: &Prepared,
    bounds: &[f32],
    order: &[usize],
    r: &tantivy::SegmentReader,
    field: Field,
    k: usize,
    heap: &BinaryHeap<Scored>,
    acc: &mut [f32],
) -> tantivy::Result<Vec<(f32, u32)>> {
    let inv = r.inverted_index(field)?;
    let norms = r.get_fieldnorms_reader(field)?;
    let alive = r.alive_bitset();
    let is_alive = |doc: u32| alive.is_none_or(|a| a.is_alive(doc));
    // The worst of the k kept from earlier segments: a passage here must beat it (equal scores
    // lose to the earlier segment).
    let global = if heap.len() >= k {
        heap.peek().map(|w| w.0)
    } else {
        None
    };
    let mut touched: Vec<u32> = Vec::new();
    let mut remaining: f32 = order.iter().map(|&t| bounds[t]).sum();
    let mut threshold = global.unwrap_or(0.0);
    let mut pos = 0;
    // Phase 1: read whole posting lists while a passage they alone match could still enter.
    while pos < order.len() {
        if threshold > 0.0 && remaining * (1.0 + MARGIN) < threshold * (1.0 - MARGIN) {
            break;
        }
        let t = order[pos];
        let count = q.counts[t].1;
        if let Some(mut p) = inv.read_postings(&q.counts[t].0, IndexRecordOption::WithFreqs)? {
            let mut doc = p.doc();
            while doc != TERMINATED {
                let s = q.term_score(t, p.term_freq(), norms.fieldnorm_id(doc));
                let slot = &mut acc[doc as usize];
                if *slot == 0.0 {
                    touched.push(doc);
                }
                for _ in 0..count {
                    *slot += s;
                }
                doc = p.advance();
            }
        }
        remaining = order[pos + 1..].iter().map(|&t| bounds[t]).sum();
        pos += 1;
        if pos < order.len() {
            let mut live: Vec<f32> = touched
                .iter()
                .filter(|&&d| is_alive(d))
                .map(|&d| acc[d as usize])
                .collect();
            if let Some(x) = kth_largest(&mut live, k) {
                threshold = threshold.max(x);
            }
        }
    }
    // Phase 2: the passages that may still reach the threshold, looked up in the other terms.
    let mut cands: Vec<u32> = touched
        .iter()
        .copied()
        .filter(|&d| {
            is_alive(d)
                && (acc[d as usize] + remaining) * (1.0 + MARGIN) >= threshold * (1.0 - MARGIN)
        })
        .collect();
    for &t in &order[pos..] {
        if cands.is_empty() {
            break;
        }
        cands.sort_unstable();
        let count = q.counts[t].1;
        if let Some(mut p) = inv.read_postings(&q.counts[t].0, IndexRecordOption::WithFreqs)? {
            for &d in &cands {
                if p.doc() > d {
                    continue;
                }
                if p.seek(d) == d {
                    let s = q.term_score(t, p.term_freq(), norms.fieldnorm_id(d));
                    for _ in 0..count {
                        acc[d as usize] += s;
                    }
                } else if p.doc() == TERMINATED {
                    break;
                }
            }
        }
        remaining -= bounds[t];
        let remaining_now = remaining.max(0.0);
        let mut live: Vec<f32> = cands.iter().map(|&d| acc[d as usize]).collect();
        if let Some(x) = kth_largest(&mut live, k) {
            threshold = threshold.max(x);
        }
        cands.retain(|&d| {
            (acc[d as usize] + remaining_now) * (1.0 + MARGIN) >= threshold * (1.0 - MARGIN)
        });
    }
    for &d in &touched {
        acc[d as usize] = 0.0;
    }
    // Exact scores of the survivors, summed in query order as top_k_exhaustive does.
    cands.sort_unstable();
    let mut exact = vec![0f32; cands.len()];
    for (t, (term, count)) in q.counts.iter().enumerate() {
        let Some(mut p) = inv.read_postings(term, IndexRecordOption::WithFreqs)? else {
            continue;
        };
        for (i, &d) in cands.iter().enumerate() {
            if p.doc() > d {
                continue;
            }
            if p.seek(d) == d {
                let s = q.term_score(t, p.term_freq(), norms.fieldnorm_id(d));
                for _ in 0..*count {
                    exact[i] += s;
                }
            } else if p.doc() == TERMINATED {
                break;
            }
        }
    }
    Ok(exact.into_iter().zip(cands).collect())
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

    /// The committed eval set (data/rag) in a knowledge base of several segments.
    fn eval_kb(dir: &std::path::Path) -> (crate::KnowledgeBase, Vec<String>, Vec<String>) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/rag");
        let read = |name: &str| -> Vec<serde_json::Value> {
            std::fs::read_to_string(root.join(name))
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let passages = read("passages.jsonl");
        let queries: Vec<String> = read("queries.jsonl")
            .iter()
            .map(|q| q["text"].as_str().unwrap().to_string())
            .collect();
        let kb = crate::KnowledgeBase::create(dir, Default::default(), Default::default()).unwrap();
        let mut texts = Vec::new();
        // Three commits: three segments, so the threshold carries across segments.
        for part in passages.chunks(passages.len().div_ceil(3)) {
            let mut w = kb.writer().unwrap();
            for p in part {
                let text = p["text"].as_str().unwrap().to_string();
                w.upsert(&crate::Document {
                    id: p["id"].as_str().unwrap().into(),
                    text: text.clone(),
                    title: None,
                    meta: None,
                })
                .unwrap();
                texts.push(text);
            }
            w.commit().unwrap();
            w.close().unwrap();
        }
        (kb, queries, texts)
    }

    #[test]
    fn pruned_equals_exhaustive_on_the_eval_set_and_random_queries() {
        let dir = tempfile::tempdir().unwrap();
        let (kb, queries, texts) = eval_kb(&dir.path().join("kb"));
        // Random queries of 1-8 words drawn from the passages (repeats allowed), seeded.
        let words: Vec<&str> = texts.iter().flat_map(|t| t.split_whitespace()).collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut all = queries.clone();
        for _ in 0..400 {
            let n = 1 + (next() % 8) as usize;
            let q: Vec<&str> = (0..n)
                .map(|_| words[(next() % words.len() as u64) as usize])
                .collect();
            all.push(q.join(" "));
        }
        let mut compared = 0;
        for params in [
            Bm25Params::default(),
            Bm25Params { k1: 0.0, b: 0.0 },
            Bm25Params { k1: 2.0, b: 1.0 },
        ] {
            for q in &all {
                for k in [1, 3, 10, 100] {
                    let (pruned, exhaustive) = kb.bm25_both(q, k, params);
                    assert_eq!(pruned, exhaustive, "{q:?} k {k} {params:?}");
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 3 * 4 * (queries.len() + 400));
        assert!(queries.len() >= 150);
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
