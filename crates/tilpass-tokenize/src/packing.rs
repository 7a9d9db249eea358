//! Packing several examples into one sequence (TRL's `bfd`, best-fit decreasing), with
//! per-document `position_ids` so that attention can be restricted to each document.

use serde::Serialize;

use crate::sft::{IGNORE_INDEX, SftExample};

/// Several documents packed into one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackedSequence {
    /// Concatenated token ids, `[seq]`.
    pub input_ids: Vec<u32>,
    /// Concatenated labels, `[seq]`; the first token of every document is -100 (TRL:
    /// `labels[position_ids == 0] = -100`), so no document learns from its predecessor.
    pub labels: Vec<i64>,
    /// Positions restarting at 0 for each document, `[seq]`.
    pub position_ids: Vec<i64>,
    /// Length of each document, in order.
    pub doc_lengths: Vec<usize>,
    /// Index of each document in the input.
    pub doc_indices: Vec<usize>,
}

impl PackedSequence {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Document number of every position, `[seq]`.
    pub fn document_ids(&self) -> Vec<usize> {
        self.doc_lengths
            .iter()
            .enumerate()
            .flat_map(|(d, &n)| std::iter::repeat_n(d, n))
            .collect()
    }

    /// Block-diagonal causal mask, `[seq, seq]` row-major, with burn's convention: `true` means
    /// *masked out*. Query `q` may attend key `k` only when `k <= q` and both are in the same
    /// document.
    pub fn attention_mask(&self) -> Vec<bool> {
        let docs = self.document_ids();
        let n = docs.len();
        let mut mask = vec![true; n * n];
        for q in 0..n {
            for k in 0..=q {
                if docs[k] == docs[q] {
                    mask[q * n + k] = false;
                }
            }
        }
        mask
    }

    /// Cumulative document boundaries `[0, l0, l0+l1, ...]` (flash-attention's `cu_seqlens`).
    pub fn cu_seqlens(&self) -> Vec<usize> {
        let mut out = vec![0];
        for l in &self.doc_lengths {
            out.push(out.last().copied().unwrap_or(0) + l);
        }
        out
    }
}

/// Packs examples into rows of at most `max_length` tokens with best-fit decreasing: longest
/// first, each into the fullest row that still has room. Longer examples are truncated to
/// `max_length` first (TRL's `bfd`).
pub fn pack_bfd(examples: &[SftExample], max_length: usize) -> Vec<PackedSequence> {
    assert!(max_length > 0, "max_length must be positive");
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(examples[i].len().min(max_length)), i));
    // remaining capacity per bin, kept in a BTreeMap from remaining -> bins for best fit
    let mut bins: Vec<(usize, Vec<usize>)> = vec![];
    let mut by_space: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in order {
        let len = examples[i].len().min(max_length);
        if len == 0 {
            continue;
        }
        let slot = by_space
            .range(len..)
            .next()
            .map(|(&space, bins)| (space, bins[bins.len() - 1]));
        let bin = match slot {
            Some((space, bin)) => {
                let list = by_space.get_mut(&space).expect("present");
                list.pop();
                if list.is_empty() {
                    by_space.remove(&space);
                }
                bin
            }
            None => {
                bins.push((max_length, vec![]));
                bins.len() - 1
            }
        };
        bins[bin].0 -= len;
        bins[bin].1.push(i);
        if bins[bin].0 > 0 {
            by_space.entry(bins[bin].0).or_default().push(bin);
        }
    }
    bins.into_iter()
        .map(|(_, docs)| {
            let mut p = PackedSequence {
                input_ids: vec![],
                labels: vec![],
                position_ids: vec![],
                doc_lengths: vec![],
                doc_indices: vec![],
            };
            for i in docs {
                let e = &examples[i];
                let n = e.len().min(max_length);
                p.input_ids.extend_from_slice(&e.input_ids[..n]);
                p.labels.push(IGNORE_INDEX);
                p.labels.extend_from_slice(&e.labels[1..n]);
                p.position_ids.extend((0..n).map(|j| j as i64));
                p.doc_lengths.push(n);
                p.doc_indices.push(i);
            }
            p
        })
        .collect()
}
