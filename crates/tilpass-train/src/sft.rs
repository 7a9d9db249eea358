//! Supervised fine-tuning data: encoded chat / prompt-completion examples (from
//! `tilpass-tokenize`'s `SftEncoder`) into padded training batches.

use tilpass_models::{DecoderInput, DecoderLm, GenerateConfig, generate};
use tilpass_tokenize::{
    Batch, BatchRow, IGNORE_INDEX, Padding, SftExample, Tokenizer, collate_packed, pack_bfd,
};

use crate::error::{Result, TrainError};
use crate::trainer::LmBatch;

/// Groups `examples` into right-padded batches of `batch_size` rows ([`Batch::pad`]: positions
/// `0..len` per row, labels -100 on padding). Examples longer than `max_positions` are an
/// error naming the example (truncate them when encoding: `SftConfig::max_length` with a
/// truncation policy); examples without a supervised token are left out; a dataset with none
/// at all is an error.
pub fn sft_batches(
    examples: &[SftExample],
    batch_size: usize,
    pad_id: u32,
    max_positions: usize,
) -> Result<Vec<LmBatch>> {
    if let Some((i, e)) = examples
        .iter()
        .enumerate()
        .find(|(_, e)| e.len() > max_positions)
    {
        return Err(TrainError::Config(format!(
            "example {i} has {} tokens, the model's context is {max_positions}: truncate when encoding \
             (max_length with truncation keep_start / keep_end) or drop long examples",
            e.len()
        )));
    }
    let kept = supervised(examples)?;
    kept.chunks(batch_size.max(1))
        .map(|chunk| {
            lm_batch(Batch::pad(
                chunk.iter().map(|e| BatchRow::from(*e)),
                Padding::right(pad_id),
            )?)
        })
        .collect()
}

/// A training batch from a padded batch: the decoder input and its labels.
fn lm_batch(batch: Batch) -> Result<LmBatch> {
    Ok(LmBatch {
        input: DecoderInput::from_batch(&batch)?,
        labels: batch.labels,
    })
}

/// The examples with at least one supervised token; none at all is an error.
fn supervised(examples: &[SftExample]) -> Result<Vec<&SftExample>> {
    let kept: Vec<&SftExample> = examples
        .iter()
        .filter(|e| e.labels.iter().any(|l| *l != IGNORE_INDEX))
        .collect();
    if kept.is_empty() {
        return Err(TrainError::Config(format!(
            "none of the {} examples has a supervised token (check the chat template's \
             assistant masks or assistant_only_loss)",
            examples.len()
        )));
    }
    Ok(kept)
}

/// Packs `examples` into rows of at most `max_length` tokens with TRL's best-fit-decreasing
/// packing (`pack_bfd`; longer examples are cut to `max_length`), `batch_size` rows a batch.
/// Each document keeps its own positions (restarting at 0), attends only within itself
/// (block-diagonal causal attention through document numbers in the attention mask) and its
/// first token is not a target, so a packed batch gives the loss of its documents trained
/// one by one, with far less padding (rows padded by `collate_packed`). Examples without a
/// supervised token are left out; a row holds at most 255 documents.
pub fn packed_batches(
    examples: &[SftExample],
    max_length: usize,
    batch_size: usize,
    pad_id: u32,
    max_positions: usize,
) -> Result<Vec<LmBatch>> {
    if max_length == 0 || max_length > max_positions {
        return Err(TrainError::Config(format!(
            "packing length {max_length} must be between 1 and the model's context {max_positions}"
        )));
    }
    let kept: Vec<SftExample> = supervised(examples)?.into_iter().cloned().collect();
    let rows = pack_bfd(&kept, max_length);
    rows.chunks(batch_size.max(1))
        .map(|chunk| lm_batch(collate_packed(chunk, Padding::right(pad_id))?))
        .collect()
}

/// The prompt of an encoded example: its tokens before the first supervised one (for a chat
/// example, the conversation up to and including the assistant header).
pub fn prompt_of(example: &SftExample) -> &[u32] {
    let end = example
        .labels
        .iter()
        .position(|l| *l != IGNORE_INDEX)
        .unwrap_or(example.input_ids.len());
    &example.input_ids[..end]
}

/// Greedy answers of `model` to `prompts` (token ids), at most `max_new_tokens` each, stopping
/// at the tokenizer's end-of-sequence token; decoded without special tokens.
pub fn sample_answers(
    model: &DecoderLm,
    tokenizer: &Tokenizer,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = GenerateConfig {
        max_new_tokens,
        eos_token_ids: tokenizer.eos_id().map(|e| vec![e]),
        pad_token_id: tokenizer.pad_id(),
        ..Default::default()
    };
    let out = generate(model, prompts, &cfg, &mut |_, _| true)?;
    out.iter()
        .map(|ids| Ok(tokenizer.decode(ids, true)?.trim().to_string()))
        .collect()
}
