//! Padding encoded examples into rectangular batches.

use serde::{Deserialize, Serialize};

use crate::sft::{IGNORE_INDEX, SftExample};

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadSide {
    /// Pad at the end (training).
    #[default]
    Right,
    /// Pad at the start (batched generation, so every prompt ends at the last column).
    Left,
}

/// A padded batch, row-major host arrays ready to become tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// Rows.
    pub batch_size: usize,
    /// Columns (the longest example, rounded up to `pad_to_multiple_of`).
    pub seq_len: usize,
    /// Token ids, `[batch, seq]`, padding = the pad id.
    pub input_ids: Vec<u32>,
    /// Labels, `[batch, seq]`, padding = -100.
    pub labels: Vec<i64>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]`.
    pub attention_mask: Vec<u8>,
    /// Positions, `[batch, seq]`: 0,1,2,... over real tokens (HF's `cumsum(mask) - 1`), 1 on
    /// left padding as transformers fills it.
    pub position_ids: Vec<i64>,
}

impl Batch {
    /// The `[batch, seq]` shape.
    pub fn shape(&self) -> [usize; 2] {
        [self.batch_size, self.seq_len]
    }

    /// Row `i` of `input_ids`.
    pub fn row_ids(&self, i: usize) -> &[u32] {
        &self.input_ids[i * self.seq_len..(i + 1) * self.seq_len]
    }
}

/// Pads examples to a common length.
pub fn collate(
    examples: &[SftExample],
    pad_id: u32,
    side: PadSide,
    pad_to_multiple_of: Option<usize>,
) -> Batch {
    let longest = examples.iter().map(SftExample::len).max().unwrap_or(0);
    let seq_len = match pad_to_multiple_of {
        Some(m) if m > 1 => longest.div_ceil(m) * m,
        _ => longest,
    };
    let b = examples.len();
    let mut batch = Batch {
        batch_size: b,
        seq_len,
        input_ids: vec![pad_id; b * seq_len],
        labels: vec![IGNORE_INDEX; b * seq_len],
        attention_mask: vec![0; b * seq_len],
        position_ids: vec![1; b * seq_len],
    };
    for (row, e) in examples.iter().enumerate() {
        let n = e.len();
        let offset = match side {
            PadSide::Right => 0,
            PadSide::Left => seq_len - n,
        };
        let base = row * seq_len + offset;
        batch.input_ids[base..base + n].copy_from_slice(&e.input_ids);
        batch.labels[base..base + n].copy_from_slice(&e.labels);
        batch.attention_mask[base..base + n].copy_from_slice(&e.attention_mask);
        for (j, p) in batch.position_ids[base..base + n].iter_mut().enumerate() {
            *p = j as i64;
        }
        if side == PadSide::Right {
            // HF fills masked positions with 1 after cumsum - 1; right padding: keep counting
            // is irrelevant, use 1 like HF's masked_fill.
            for p in &mut batch.position_ids[row * seq_len + n..(row + 1) * seq_len] {
                *p = 1;
            }
        }
    }
    batch
}

/// Groups example indices into batches of similar length (longest first), which reduces
/// padding; shuffling the batches is left to the trainer.
pub fn length_grouped_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    idx.chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_groups_hold_similar_lengths() {
        let lengths = [5, 100, 7, 98, 6, 99];
        let groups = length_grouped_batches(&lengths, 2);
        assert_eq!(groups, vec![vec![1, 5], vec![3, 2], vec![4, 0]]);
        assert_eq!(length_grouped_batches(&[], 4), Vec::<Vec<usize>>::new());
    }
}
