//! Packing several examples into one sequence (TRL 1.16.0's `bfd`, best-fit decreasing), with
//! per-document `position_ids` so that attention can be restricted to each document. Checked
//! against TRL itself (`SFTTrainer` with `packing=True` and its padding-free
//! `DataCollatorForLanguageModeling`: tests/fixtures/generate_trl.py → tokenize/packing.json and
//! the packing cases of tokenize/sft.json).

use serde::Serialize;

use crate::sft::{IGNORE_INDEX, SftExample};

/// Several documents packed into one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackedSequence {
    /// Concatenated token ids, `[seq]`.
    pub input_ids: Vec<u32>,
    /// Concatenated labels, `[seq]`; the first token of every document is -100 (TRL's
    /// padding-free collator: `labels[position_ids == 0] = -100`, applied here at packing time),
    /// so no document learns from its predecessor.
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

/// How many examples TRL packs at a time: `pack_dataset` runs `_pack_bfd` through a batched
/// `Dataset.map`, whose default batch size is 1000, so examples of different blocks of 1000
/// never share a row.
pub const PACK_BLOCK: usize = 1000;

/// Packs examples into rows of at most `max_length` tokens as TRL 1.16.0's `bfd` strategy does,
/// `[examples] → [rows]`:
///
/// - examples are taken in blocks of [`PACK_BLOCK`], in order; each block is packed on its own;
/// - empty examples are skipped; longer ones are cut to their first `max_length` tokens;
/// - within a block, examples go longest first (ties: earlier first) into the row with the
///   least space that still fits them (ties: the row that reached that space first), or into a
///   new row;
/// - rows come out in the order they were opened, documents in the order they were placed.
///
/// (Until TRL parity was checked, ties between rows went to the most recent row and all
/// examples were packed as one block.)
///
/// # Panics
/// When `max_length` is 0.
pub fn pack_bfd(examples: &[SftExample], max_length: usize) -> Vec<PackedSequence> {
    assert!(max_length > 0, "max_length must be positive");
    let mut rows = Vec::new();
    for (b, block) in examples.chunks(PACK_BLOCK).enumerate() {
        let offset = b * PACK_BLOCK;
        for docs in bfd_bins(block, max_length) {
            rows.push(packed_row(
                examples,
                docs.iter().map(|&i| offset + i),
                max_length,
            ));
        }
    }
    rows
}

/// The bins of one block: example indices (into `block`) per row.
fn bfd_bins(block: &[SftExample], max_length: usize) -> Vec<Vec<usize>> {
    use std::collections::{BTreeMap, VecDeque};
    let len = |i: usize| block[i].len().min(max_length);
    let mut order: Vec<usize> = (0..block.len()).filter(|&i| len(i) > 0).collect();
    // Stable: equal lengths keep their order (pyarrow's sort is stable).
    order.sort_by_key(|&i| std::cmp::Reverse(len(i)));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    // Remaining space -> bins with that space, oldest first (TRL's `space_to_bin` deques).
    let mut by_space: BTreeMap<usize, VecDeque<usize>> = BTreeMap::new();
    for i in order {
        let n = len(i);
        // The smallest space that fits (TRL's segment tree search); a full-size space means a
        // new bin.
        let fit = by_space.range(n..).next().map(|(&space, _)| space);
        let (bin, space) = match fit {
            Some(space) => {
                let list = by_space.get_mut(&space).expect("listed space");
                let bin = list.pop_front().expect("non-empty list");
                if list.is_empty() {
                    by_space.remove(&space);
                }
                (bin, space)
            }
            None => {
                bins.push(Vec::new());
                (bins.len() - 1, max_length)
            }
        };
        bins[bin].push(i);
        let left = space - n;
        if left > 0 {
            by_space.entry(left).or_default().push_back(bin);
        }
    }
    bins
}

/// One packed row from example indices (into `examples`).
fn packed_row(
    examples: &[SftExample],
    docs: impl Iterator<Item = usize>,
    max_length: usize,
) -> PackedSequence {
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
}

/// TRL's padding-free collation of a batch of packed rows: the rows concatenated into one
/// sequence, `[rows] → [1 row of sum(len)]`, positions still restarting per document (its
/// `cu_seq_lens` are [`PackedSequence::cu_seqlens`], its `seq_idx` are
/// [`PackedSequence::document_ids`]).
pub fn concat_packed(rows: &[PackedSequence]) -> PackedSequence {
    let mut out = PackedSequence {
        input_ids: vec![],
        labels: vec![],
        position_ids: vec![],
        doc_lengths: vec![],
        doc_indices: vec![],
    };
    for r in rows {
        out.input_ids.extend_from_slice(&r.input_ids);
        out.labels.extend_from_slice(&r.labels);
        out.position_ids.extend_from_slice(&r.position_ids);
        out.doc_lengths.extend_from_slice(&r.doc_lengths);
        out.doc_indices.extend_from_slice(&r.doc_indices);
    }
    out
}
