//! Padding rows into rectangular batches: the one padding routine of tilpass.
//!
//! Every padded batch — SFT collation ([`collate`]), packed rows ([`collate_packed`]),
//! preference pairs ([`crate::collate_preference`]), classifier and embedding inputs, label
//! scoring, batched generation prompts — is a [`Batch`] made by [`Batch::pad`] (or
//! [`Batch::from_ids`] for rows of bare token ids). The models turn a `Batch` into their inputs
//! in one place per model kind (`tilpass_models::DecoderInput::from_batch`,
//! `tilpass_models::EncoderInput::from_batch`).
//!
//! ```
//! use tilpass_tokenize::{Batch, BatchRow, Padding};
//! let prompts = [vec![5u32, 6, 7], vec![8]];
//! let b = Batch::from_ids(&prompts, Padding::left(0));
//! assert_eq!(b.shape(), [2, 3]);
//! assert_eq!(b.input_ids, [5, 6, 7, 0, 0, 8]);
//! assert_eq!(b.attention_mask, [1, 1, 1, 0, 0, 1]);
//! assert_eq!(b.position_ids, [0, 1, 2, 1, 1, 0]);
//!
//! // Rows with labels, right-padded to a multiple of 4 (labels -100 on padding).
//! let labels = [-100i64, 6, 7];
//! let b = Batch::pad(
//!     [BatchRow::new(&prompts[0]).with_labels(&labels), BatchRow::new(&prompts[1])],
//!     Padding::right(0).with_multiple_of(Some(4)),
//! )?;
//! assert_eq!(b.labels, [-100, 6, 7, -100, -100, -100, -100, -100]);
//! # Ok::<(), tilpass_tokenize::TokenizeError>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Result, TokenizeError};
use crate::packing::PackedSequence;
use crate::sft::{IGNORE_INDEX, SftExample};

/// Which side padding goes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PadSide {
    /// Pad at the end (training, encoders).
    #[default]
    Right,
    /// Pad at the start (batched generation, so every prompt ends at the last column).
    Left,
}

/// The position id on left padding (and wherever a row's own mask is 0). transformers 4.x's
/// `generate` filled padding with 1 (`position_ids.masked_fill_(attention_mask == 0, 1)`), 5.x
/// fills 0; no real token ever sees a padding column (its key is masked), so the value only
/// has to be a valid position. Right padding keeps the column index instead (see
/// [`Batch::position_ids`]).
pub const PAD_POSITION: i64 = 1;

/// How rows are padded into a [`Batch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Padding {
    /// Token id of padding columns.
    pub pad_id: u32,
    /// Which side the padding goes on.
    pub side: PadSide,
    /// Round the number of columns up to a multiple of this (transformers'
    /// `pad_to_multiple_of`; `None`, 0 and 1 leave it at the longest row).
    pub pad_to_multiple_of: Option<usize>,
}

impl Padding {
    /// Right padding with `pad_id`.
    pub fn right(pad_id: u32) -> Self {
        Self {
            pad_id,
            side: PadSide::Right,
            pad_to_multiple_of: None,
        }
    }

    /// Left padding with `pad_id`.
    pub fn left(pad_id: u32) -> Self {
        Self {
            pad_id,
            side: PadSide::Left,
            pad_to_multiple_of: None,
        }
    }

    /// The same padding, rounding the columns up to a multiple of `m`.
    pub fn with_multiple_of(self, m: Option<usize>) -> Self {
        Self {
            pad_to_multiple_of: m,
            ..self
        }
    }

    /// Columns of a batch whose longest row has `longest` tokens.
    pub fn padded_len(&self, longest: usize) -> usize {
        match self.pad_to_multiple_of {
            Some(m) if m > 1 => longest.div_ceil(m) * m,
            _ => longest,
        }
    }
}

/// One row before padding, `[len]` per field. Fields left `None` take their defaults: labels
/// -100 (nothing supervised), attention mask 1, positions `cumsum(mask) - 1` (0, 1, 2, ... for
/// an all-ones mask), token types 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRow<'a> {
    /// Token ids.
    pub input_ids: &'a [u32],
    /// Per-token labels (-100 = not supervised).
    pub labels: Option<&'a [i64]>,
    /// Per-token attention-mask values: 1 (or 0), or, in a packed row, the document number of
    /// each token (1, 2, 3, ...), which keeps attention inside each document.
    pub attention_mask: Option<&'a [u8]>,
    /// Per-token positions (packed rows restart them at every document).
    pub position_ids: Option<&'a [i64]>,
    /// Per-token segment ids (BERT's `token_type_ids`).
    pub token_type_ids: Option<&'a [u32]>,
}

impl<'a> BatchRow<'a> {
    /// A row of bare token ids.
    pub fn new(input_ids: &'a [u32]) -> Self {
        Self {
            input_ids,
            labels: None,
            attention_mask: None,
            position_ids: None,
            token_type_ids: None,
        }
    }

    /// The row with these labels.
    pub fn with_labels(self, labels: &'a [i64]) -> Self {
        Self {
            labels: Some(labels),
            ..self
        }
    }

    /// The row with these attention-mask values.
    pub fn with_attention_mask(self, attention_mask: &'a [u8]) -> Self {
        Self {
            attention_mask: Some(attention_mask),
            ..self
        }
    }

    /// The row with these positions.
    pub fn with_position_ids(self, position_ids: &'a [i64]) -> Self {
        Self {
            position_ids: Some(position_ids),
            ..self
        }
    }

    /// The row with these token types.
    pub fn with_token_type_ids(self, token_type_ids: &'a [u32]) -> Self {
        Self {
            token_type_ids: Some(token_type_ids),
            ..self
        }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// True when the row has no token.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Errors unless every given field has one value per token.
    fn check(&self, row: usize) -> Result<()> {
        let n = self.len();
        let lens = [
            ("labels", self.labels.map(<[i64]>::len)),
            ("attention_mask", self.attention_mask.map(<[u8]>::len)),
            ("position_ids", self.position_ids.map(<[i64]>::len)),
            ("token_type_ids", self.token_type_ids.map(<[u32]>::len)),
        ];
        match lens.iter().find(|(_, len)| len.is_some_and(|l| l != n)) {
            Some((field, Some(len))) => Err(TokenizeError::BatchRow {
                row,
                message: format!("{field} has {len} values for {n} input ids"),
            }),
            _ => Ok(()),
        }
    }
}

impl<'a> From<&'a SftExample> for BatchRow<'a> {
    fn from(e: &'a SftExample) -> Self {
        Self::new(&e.input_ids)
            .with_labels(&e.labels)
            .with_attention_mask(&e.attention_mask)
    }
}

impl<'a> From<&'a [u32]> for BatchRow<'a> {
    fn from(ids: &'a [u32]) -> Self {
        Self::new(ids)
    }
}

impl<'a> From<&'a Vec<u32>> for BatchRow<'a> {
    fn from(ids: &'a Vec<u32>) -> Self {
        Self::new(ids)
    }
}

/// A padded batch: row-major `[batch, seq]` host arrays ready to become tensors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Batch {
    /// Rows.
    pub batch_size: usize,
    /// Columns (the longest row, rounded up to `pad_to_multiple_of`).
    pub seq_len: usize,
    /// Token ids, `[batch, seq]`, padding = the pad id.
    pub input_ids: Vec<u32>,
    /// Labels, `[batch, seq]`, -100 on padding and wherever a row gave none.
    pub labels: Vec<i64>,
    /// `[batch, seq]`: 1 for real tokens, 0 for padding; packed rows number their documents
    /// instead (1, 2, 3, ... per token), and decoders keep attention inside each document.
    pub attention_mask: Vec<u8>,
    /// Positions, `[batch, seq]`: each row's own (packed rows restart at every document), by
    /// default `cumsum(mask) - 1` over its tokens as transformers' `generate` computes them
    /// (0, 1, 2, ...). On right padding the column index, as transformers' default position
    /// ids (`arange(seq)` for every row, what a training batch without `position_ids` gets);
    /// on left padding [`PAD_POSITION`].
    pub position_ids: Vec<i64>,
    /// Segment ids (BERT's `token_type_ids`), `[batch, seq]`, 0 on padding and by default.
    pub token_type_ids: Vec<u32>,
    /// Which side the padding is on.
    pub padding_side: PadSide,
}

impl Batch {
    /// Pads `rows` to a common length: `[rows] → [batch, seq]` with `seq` the longest row
    /// rounded up to `padding.pad_to_multiple_of`. Padding columns hold the pad id, label -100,
    /// mask 0, token type 0 and position its column index (right padding) or [`PAD_POSITION`]
    /// (left padding); a row of `n` tokens fills the first `n` columns (right padding) or the
    /// last `n` (left padding).
    ///
    /// Errors when a row gives a field with a different number of values than it has tokens.
    pub fn pad<'a>(rows: impl IntoIterator<Item = BatchRow<'a>>, padding: Padding) -> Result<Self> {
        let rows: Vec<BatchRow<'a>> = rows.into_iter().collect();
        for (i, r) in rows.iter().enumerate() {
            r.check(i)?;
        }
        Ok(Self::fill(&rows, padding))
    }

    /// Pads rows of bare token ids ([`Batch::pad`] of [`BatchRow::new`] rows: mask 1, positions
    /// 0, 1, 2, ..., no labels, token types 0).
    pub fn from_ids(rows: &[impl AsRef<[u32]>], padding: Padding) -> Self {
        let rows: Vec<BatchRow<'_>> = rows.iter().map(|r| BatchRow::new(r.as_ref())).collect();
        Self::fill(&rows, padding)
    }

    /// The padding itself, for rows already checked.
    fn fill(rows: &[BatchRow<'_>], padding: Padding) -> Self {
        let longest = rows.iter().map(BatchRow::len).max().unwrap_or(0);
        let seq_len = padding.padded_len(longest);
        let b = rows.len();
        let mut batch = Self {
            batch_size: b,
            seq_len,
            input_ids: vec![padding.pad_id; b * seq_len],
            labels: vec![IGNORE_INDEX; b * seq_len],
            attention_mask: vec![0; b * seq_len],
            position_ids: match padding.side {
                PadSide::Right => (0..b).flat_map(|_| 0..seq_len as i64).collect(),
                PadSide::Left => vec![PAD_POSITION; b * seq_len],
            },
            token_type_ids: vec![0; b * seq_len],
            padding_side: padding.side,
        };
        for (i, row) in rows.iter().enumerate() {
            let n = row.len();
            let start = i * seq_len
                + match padding.side {
                    PadSide::Right => 0,
                    PadSide::Left => seq_len - n,
                };
            let cols = start..start + n;
            batch.input_ids[cols.clone()].copy_from_slice(row.input_ids);
            if let Some(l) = row.labels {
                batch.labels[cols.clone()].copy_from_slice(l);
            }
            match row.attention_mask {
                Some(m) => batch.attention_mask[cols.clone()].copy_from_slice(m),
                None => batch.attention_mask[cols.clone()].fill(1),
            }
            match row.position_ids {
                Some(p) => batch.position_ids[cols.clone()].copy_from_slice(p),
                None => fill_positions(
                    &batch.attention_mask[cols.clone()],
                    &mut batch.position_ids[cols.clone()],
                ),
            }
            if let Some(t) = row.token_type_ids {
                batch.token_type_ids[cols].copy_from_slice(t);
            }
        }
        batch
    }

    /// The `[batch, seq]` shape.
    pub fn shape(&self) -> [usize; 2] {
        [self.batch_size, self.seq_len]
    }

    /// Row `i` of `input_ids`, `[seq]`.
    pub fn row_ids(&self, i: usize) -> &[u32] {
        &self.input_ids[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Row `i` of `attention_mask`, `[seq]`.
    pub fn row_mask(&self, i: usize) -> &[u8] {
        &self.attention_mask[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Row `i` of `labels`, `[seq]`.
    pub fn row_labels(&self, i: usize) -> &[i64] {
        &self.labels[i * self.seq_len..(i + 1) * self.seq_len]
    }
}

/// Positions `cumsum(mask != 0) - 1` of one row, [`PAD_POSITION`] where the mask is 0.
fn fill_positions(mask: &[u8], out: &mut [i64]) {
    let mut p = 0;
    for (m, o) in mask.iter().zip(out) {
        if *m != 0 {
            *o = p;
            p += 1;
        } else {
            *o = PAD_POSITION;
        }
    }
}

/// Positions of `[batch, seq]` rows from their attention mask, as transformers' `generate`
/// computes them: `cumsum(mask) - 1` over attended columns, [`PAD_POSITION`] on padding.
/// `mask.len()` must be a multiple of `seq` (a trailing partial row is left out).
pub fn position_ids_from_mask(mask: &[u8], seq: usize) -> Vec<i64> {
    let mut out = vec![PAD_POSITION; mask.len()];
    if seq > 0 {
        for (m, o) in mask.chunks_exact(seq).zip(out.chunks_exact_mut(seq)) {
            fill_positions(m, o);
        }
    }
    out
}

/// Pads SFT examples into one batch (TRL's `DataCollatorForLanguageModeling` without padding
/// free: ids padded with `pad_id`, labels with -100, mask with 0): [`Batch::pad`] of the
/// examples.
pub fn collate(
    examples: &[SftExample],
    pad_id: u32,
    side: PadSide,
    pad_to_multiple_of: Option<usize>,
) -> Result<Batch> {
    Batch::pad(
        examples.iter().map(BatchRow::from),
        Padding {
            pad_id,
            side,
            pad_to_multiple_of,
        },
    )
}

/// The most documents a packed row may hold: document numbers live in the `u8` attention mask.
pub const MAX_PACKED_DOCUMENTS: usize = u8::MAX as usize;

/// Pads packed rows ([`crate::pack_bfd`]) into one batch that keeps their documents apart:
/// each row's positions restart at every document and its attention mask numbers the documents
/// 1, 2, 3, ... (decoders attend only within a document), labels as packed. A row with more
/// than [`MAX_PACKED_DOCUMENTS`] documents is an error.
pub fn collate_packed(rows: &[PackedSequence], padding: Padding) -> Result<Batch> {
    let mut masks = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        if r.doc_lengths.len() > MAX_PACKED_DOCUMENTS {
            return Err(TokenizeError::BatchRow {
                row: i,
                message: format!(
                    "a packed row holds {} documents; at most {MAX_PACKED_DOCUMENTS} fit (use a \
                     shorter max_length)",
                    r.doc_lengths.len()
                ),
            });
        }
        let numbers: Vec<u8> = r
            .document_ids()
            .into_iter()
            .map(|d| (d + 1) as u8)
            .collect();
        masks.push(numbers);
    }
    Batch::pad(
        rows.iter().zip(&masks).map(|(r, m)| {
            BatchRow::new(&r.input_ids)
                .with_labels(&r.labels)
                .with_attention_mask(m)
                .with_position_ids(&r.position_ids)
        }),
        padding,
    )
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
    use crate::pack_bfd;
    use proptest::prelude::*;

    /// transformers' `generate` positions of one row, written from its code (generation/utils.py,
    /// `_prepare_position_ids_for_generation`): `cumsum(mask) - 1`, padding filled with `fill`
    /// (4.x: 1, 5.x: 0).
    fn hf_positions(mask: &[u8], fill: i64) -> Vec<i64> {
        let mut sum = 0i64;
        mask.iter()
            .map(|&m| {
                sum += i64::from(m != 0);
                if m == 0 { fill } else { sum - 1 }
            })
            .collect()
    }

    fn sft(ids: &[u32], labels: &[i64]) -> SftExample {
        SftExample {
            input_ids: ids.to_vec(),
            labels: labels.to_vec(),
            attention_mask: vec![1; ids.len()],
        }
    }

    #[test]
    fn length_groups_hold_similar_lengths() {
        let lengths = [5, 100, 7, 98, 6, 99];
        let groups = length_grouped_batches(&lengths, 2);
        assert_eq!(groups, vec![vec![1, 5], vec![3, 2], vec![4, 0]]);
        assert_eq!(length_grouped_batches(&[], 4), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn right_padding_puts_pad_id_mask_0_and_labels_minus_100_after_each_row() {
        let ex = [sft(&[7, 8, 9], &[-100, 8, 9]), sft(&[5], &[5])];
        let b = collate(&ex, 3, PadSide::Right, None).unwrap();
        assert_eq!(b.shape(), [2, 3]);
        assert_eq!(b.padding_side, PadSide::Right);
        assert_eq!(b.input_ids, [7, 8, 9, 5, 3, 3]);
        assert_eq!(b.labels, [-100, 8, 9, 5, -100, -100]);
        assert_eq!(b.attention_mask, [1, 1, 1, 1, 0, 0]);
        // Right padding keeps transformers' default positions, the column index.
        assert_eq!(b.position_ids, [0, 1, 2, 0, 1, 2]);
        assert_eq!(b.token_type_ids, [0; 6]);
    }

    #[test]
    fn left_padded_positions_are_those_of_transformers_generate() {
        let prompts = [vec![11u32, 12, 13, 14], vec![21], vec![31, 32]];
        let b = Batch::from_ids(&prompts, Padding::left(0));
        assert_eq!(b.input_ids, [11, 12, 13, 14, 0, 0, 0, 21, 0, 0, 31, 32]);
        assert_eq!(b.attention_mask, [1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 1]);
        for r in 0..3 {
            let mask = b.row_mask(r);
            assert_eq!(
                &b.position_ids[r * 4..(r + 1) * 4],
                hf_positions(mask, PAD_POSITION),
                "row {r}"
            );
        }
        // Every prompt ends in the last column, its last position = its length - 1.
        assert_eq!(b.position_ids[4 * 2 - 1], 0);
        assert_eq!(b.position_ids[4 * 3 - 1], 1);
        assert_eq!(
            position_ids_from_mask(&b.attention_mask, b.seq_len),
            b.position_ids
        );
    }

    #[test]
    fn positions_from_a_grown_mask_count_attended_columns() {
        // A left-padded row after two generated tokens, and an unpadded one.
        let mask = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let got = position_ids_from_mask(&mask, 6);
        assert_eq!(&got[..6], hf_positions(&mask[..6], PAD_POSITION));
        assert_eq!(&got[6..], hf_positions(&mask[6..], PAD_POSITION));
        assert_eq!(position_ids_from_mask(&[], 0), Vec::<i64>::new());
    }

    #[test]
    fn pad_to_multiple_of_rounds_the_columns_up() {
        let rows = [vec![1u32; 5], vec![2; 2]];
        for (m, seq) in [
            (None, 5),
            (Some(0), 5),
            (Some(1), 5),
            (Some(4), 8),
            (Some(5), 5),
            (Some(8), 8),
        ] {
            for side in [PadSide::Right, PadSide::Left] {
                let p = Padding {
                    pad_id: 9,
                    side,
                    pad_to_multiple_of: m,
                };
                let b = Batch::from_ids(&rows, p);
                assert_eq!(b.shape(), [2, seq], "{m:?} {side:?}");
                let pads = b.input_ids.iter().filter(|t| **t == 9).count();
                assert_eq!(pads, 2 * seq - 7, "{m:?} {side:?}");
            }
        }
        // Left padding puts the extra columns in front too.
        let b = Batch::from_ids(&rows, Padding::left(9).with_multiple_of(Some(4)));
        assert_eq!(b.row_ids(0), [9, 9, 9, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn given_fields_are_copied_and_defaults_filled() {
        let ids = [4u32, 5, 6];
        let types = [0u32, 1, 1];
        let labels = [-100i64, -100, 6];
        let b = Batch::pad(
            [
                BatchRow::new(&ids)
                    .with_token_type_ids(&types)
                    .with_labels(&labels),
                BatchRow::new(&ids[..1]),
            ],
            Padding::right(0),
        )
        .unwrap();
        assert_eq!(b.token_type_ids, [0, 1, 1, 0, 0, 0]);
        assert_eq!(b.labels, [-100, -100, 6, -100, -100, -100]);
        assert_eq!(b.row_labels(0), labels);
        assert_eq!(b, {
            let mut from_ids = Batch::from_ids(&[&ids[..], &ids[..1]], Padding::right(0));
            from_ids.token_type_ids = b.token_type_ids.clone();
            from_ids.labels = b.labels.clone();
            from_ids
        });
    }

    #[test]
    fn a_field_of_the_wrong_length_names_the_row_and_field() {
        let ids = [1u32, 2];
        let err = Batch::pad(
            [
                BatchRow::new(&ids),
                BatchRow::new(&ids).with_position_ids(&[0, 1, 2]),
            ],
            Padding::right(0),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TokenizeError::BatchRow { row: 1, message } if message.contains("position_ids has 3 values for 2")),
            "{err}"
        );
        let bad = SftExample {
            input_ids: vec![1, 2],
            labels: vec![1],
            attention_mask: vec![1, 1],
        };
        let err = collate(&[bad], 0, PadSide::Right, None).unwrap_err();
        assert!(err.to_string().contains("batch row 0: labels"), "{err}");
    }

    #[test]
    fn an_empty_batch_has_no_columns() {
        let b = Batch::pad([], Padding::right(0)).unwrap();
        assert_eq!(b.shape(), [0, 0]);
        assert!(b.input_ids.is_empty());
    }

    #[test]
    fn packed_rows_number_their_documents_and_keep_their_positions() {
        let docs = [
            sft(&[1, 2, 3, 4], &[1, 2, 3, 4]),
            sft(&[5, 6], &[5, 6]),
            sft(&[7, 8, 9], &[7, 8, 9]),
        ];
        let packed = pack_bfd(&docs, 6);
        let b = collate_packed(&packed, Padding::right(0)).unwrap();
        assert_eq!(b.batch_size, packed.len());
        for (r, p) in packed.iter().enumerate() {
            let n = p.len();
            let mask = &b.row_mask(r)[..n];
            let numbers: Vec<u8> = p.document_ids().iter().map(|d| *d as u8 + 1).collect();
            assert_eq!(mask, numbers, "row {r}: document numbers 1, 2, ...");
            assert!(b.row_mask(r)[n..].iter().all(|m| *m == 0));
            let pos = &b.position_ids[r * b.seq_len..r * b.seq_len + n];
            assert_eq!(
                pos, p.position_ids,
                "row {r}: positions restart per document"
            );
            assert_eq!(&b.row_labels(r)[..n], p.labels, "row {r}");
            assert_eq!(&b.row_ids(r)[..n], p.input_ids, "row {r}");
        }
        assert!(
            b.attention_mask.contains(&2),
            "some row holds two documents"
        );
    }

    #[test]
    fn a_packed_row_of_too_many_documents_is_an_error() {
        let docs: Vec<SftExample> = (0..=MAX_PACKED_DOCUMENTS as u32)
            .map(|i| sft(&[i], &[-100]))
            .collect();
        let packed = pack_bfd(&docs, docs.len());
        assert_eq!(packed.len(), 1);
        let err = collate_packed(&packed, Padding::right(0)).unwrap_err();
        assert!(err.to_string().contains("256 documents"), "{err}");
    }

    /// Rows of ids and labels, and a padding.
    type RowsAndPadding = (Vec<(Vec<u32>, Vec<i64>)>, Padding);

    /// Rows of random ids and labels, a random padding.
    fn rows_and_padding() -> impl Strategy<Value = RowsAndPadding> {
        let row = (0usize..9).prop_flat_map(|n| {
            (
                proptest::collection::vec(0u32..1000, n),
                proptest::collection::vec(prop_oneof![Just(-100i64), 0i64..1000], n),
            )
        });
        (
            proptest::collection::vec(row, 0..6),
            (
                0u32..5,
                prop_oneof![Just(PadSide::Right), Just(PadSide::Left)],
                proptest::option::of(0usize..6),
            )
                .prop_map(|(pad_id, side, pad_to_multiple_of)| Padding {
                    pad_id,
                    side,
                    pad_to_multiple_of,
                }),
        )
    }

    proptest! {
        #[test]
        fn every_row_lands_whole_on_its_side_with_padding_values_around(
            (rows, padding) in rows_and_padding()
        ) {
            let b = Batch::pad(
                rows.iter().map(|(ids, l)| BatchRow::new(ids).with_labels(l)),
                padding,
            )
            .unwrap();
            let longest = rows.iter().map(|(ids, _)| ids.len()).max().unwrap_or(0);
            // The fewest columns that hold every row and are a multiple of m (if m > 1).
            let m = padding.pad_to_multiple_of.filter(|m| *m > 1).unwrap_or(1);
            let seq = (longest..).find(|s| s % m == 0).unwrap();
            prop_assert_eq!(b.shape(), [rows.len(), seq]);
            prop_assert_eq!(b.padding_side, padding.side);
            for (r, (ids, labels)) in rows.iter().enumerate() {
                let n = ids.len();
                let real = match padding.side {
                    PadSide::Right => 0..n,
                    PadSide::Left => seq - n..seq,
                };
                let at = |j: usize| r * seq + j;
                for j in 0..seq {
                    if real.contains(&j) {
                        let k = j - real.start;
                        prop_assert_eq!(b.input_ids[at(j)], ids[k]);
                        prop_assert_eq!(b.labels[at(j)], labels[k]);
                        prop_assert_eq!(b.attention_mask[at(j)], 1);
                        prop_assert_eq!(b.position_ids[at(j)], k as i64);
                    } else {
                        prop_assert_eq!(b.input_ids[at(j)], padding.pad_id);
                        prop_assert_eq!(b.labels[at(j)], IGNORE_INDEX);
                        prop_assert_eq!(b.attention_mask[at(j)], 0);
                    }
                    prop_assert_eq!(b.token_type_ids[at(j)], 0);
                }
                let positions = &b.position_ids[r * seq..(r + 1) * seq];
                match padding.side {
                    // transformers' default position ids of a training batch.
                    PadSide::Right => prop_assert!(positions.iter().copied().eq(0..seq as i64)),
                    // transformers' `generate` (4.x fill).
                    PadSide::Left => {
                        prop_assert_eq!(positions, hf_positions(b.row_mask(r), PAD_POSITION))
                    }
                }
            }
            let ids: Vec<&Vec<u32>> = rows.iter().map(|(ids, _)| ids).collect();
            let bare = Batch::from_ids(&ids, padding);
            prop_assert_eq!(&bare.input_ids, &b.input_ids);
            prop_assert_eq!(&bare.attention_mask, &b.attention_mask);
            prop_assert_eq!(&bare.position_ids, &b.position_ids);
        }
    }
}
