//! Supervised fine-tuning of encoder-decoders (T5, T5.1.1, mT5, NorT5) on the shared training
//! loop: batches from `tilpass-tokenize`'s [`Seq2SeqEncoder`](tilpass_tokenize::Seq2SeqEncoder)
//! examples, transformers' `T5ForConditionalGeneration` loss (the mean cross-entropy of the
//! decoder's logits over labels != -100, `decoder_input_ids` = labels shifted right), and
//! [`train_seq2seq`] for a LoRA adapter (PEFT task `SEQ_2_SEQ_LM`, targets in either stack) or
//! every weight ([`Target::Full`]) with evaluation, checkpoints and exact resume.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use tilpass_models::{EncoderInput, HasLinears, ModelError, Seq2SeqModel, generate_seq2seq};
use tilpass_peft::PeftModel;
use tilpass_tokenize::{IGNORE_INDEX, Seq2SeqBatch, Seq2SeqExample, Tokenizer, seq2seq_batches};

use crate::error::{Result, TrainError};
use crate::trainer::{EvalLog, Event, Summary, Target, TrainConfig, train_loop};

/// One encoder-decoder training batch.
#[derive(Debug, Clone)]
pub struct Seq2SeqTrainBatch {
    /// Encoder input, `[batch, src]` (right-padded, 0/1 mask).
    pub input: EncoderInput,
    /// Decoder input: the labels shifted right with the decoder start token, `[batch][tgt]`.
    pub decoder_input_ids: Vec<Vec<u32>>,
    /// Targets, -100 on padding, `[batch * tgt]` row-major.
    pub labels: Vec<i64>,
}

impl Seq2SeqTrainBatch {
    /// The model inputs of a padded batch ([`tilpass_tokenize::collate_seq2seq`]).
    pub fn from_batch(b: &Seq2SeqBatch) -> Self {
        Self {
            input: EncoderInput {
                input_ids: b.input_ids.clone(),
                attention_mask: b.attention_mask.clone(),
                token_type_ids: vec![0; b.input_ids.len()],
                batch: b.batch,
                seq: b.src_len,
            },
            decoder_input_ids: b
                .decoder_input_ids
                .chunks(b.tgt_len.max(1))
                .map(<[u32]>::to_vec)
                .collect(),
            labels: b.labels.clone(),
        }
    }

    /// Supervised target tokens.
    /// (Before the model's [`Seq2SeqModel::loss_labels`].)
    pub fn supervised(&self) -> usize {
        self.labels.iter().filter(|l| **l != IGNORE_INDEX).count()
    }

    /// Encoder and decoder tokens (padding included).
    pub fn tokens(&self) -> usize {
        self.input.input_ids.len() + self.labels.len()
    }
}

/// Length-grouped batches of `batch_size` rows ([`seq2seq_batches`]) as model inputs.
/// Sources longer than `max_source_positions` (when the model has such a limit) are an error
/// naming the example: truncate them when encoding (`max_source_length`).
pub fn seq2seq_train_batches(
    examples: &[Seq2SeqExample],
    batch_size: usize,
    pad_id: u32,
    decoder_start: u32,
    max_source_positions: Option<usize>,
) -> Result<Vec<Seq2SeqTrainBatch>> {
    if examples.is_empty() {
        return Err(TrainError::Config("the seq2seq dataset is empty".into()));
    }
    if let Some(max) = max_source_positions
        && let Some((i, e)) = examples
            .iter()
            .enumerate()
            .find(|(_, e)| e.input_ids.len() > max || e.labels.len() > max)
    {
        return Err(TrainError::Config(format!(
            "example {i} has {} source and {} target tokens, the model takes at most {max}: set \
             max_source_length / max_target_length",
            e.input_ids.len(),
            e.labels.len()
        )));
    }
    Ok(
        seq2seq_batches(examples, batch_size, pad_id, decoder_start)?
            .iter()
            .map(Seq2SeqTrainBatch::from_batch)
            .collect(),
    )
}

/// transformers' `T5ForConditionalGeneration` loss of one batch: the mean cross-entropy of
/// the decoder's logits `[batch, tgt, vocab]` over labels != -100 (no shift: the decoder input
/// is already shifted), `[1]`; and the number of supervised tokens. The labels go through
/// [`Seq2SeqModel::loss_labels`] first (NorT5's own loss maps its special ids and ignores
/// padding).
pub fn seq2seq_lm_loss<M: Seq2SeqModel>(
    model: &M,
    batch: &Seq2SeqTrainBatch,
) -> Result<(Tensor<1>, usize)> {
    use tilpass_models::seq2seq::{Seq2SeqOutput, forward_seq2seq_to_head};
    let labels = model.loss_labels(&batch.labels);
    match forward_seq2seq_to_head(
        model as &dyn Seq2SeqModel,
        &batch.input,
        &batch.decoder_input_ids,
    )? {
        Seq2SeqOutput::Hidden(hidden, head) => {
            crate::fused_ce::label_loss_from_hidden(hidden, &head, &labels)
        }
        Seq2SeqOutput::Logits(logits) => crate::fused_ce::label_cross_entropy(logits, &labels),
    }
}

/// Errors unless `labels` holds `b × t` values, each in `[0, v)` or -100 (ignored), as
/// transformers' `CrossEntropyLoss(ignore_index=-100)` accepts them.
pub(crate) fn check_labels(labels: &[i64], b: usize, t: usize, v: usize) -> Result<()> {
    if labels.len() != b * t {
        return Err(ModelError::Input(format!(
            "labels must be {b}x{t}, got {} values",
            labels.len()
        ))
        .into());
    }
    if let Some(l) = labels
        .iter()
        .find(|l| **l >= v as i64 || (**l < 0 && **l != IGNORE_INDEX))
    {
        return Err(ModelError::Input(format!(
            "label {l} is outside the vocabulary of {v} (and is not -100)"
        ))
        .into());
    }
    Ok(())
}

/// Log-probabilities of `labels` (`[batch * t]`, -100 = none) under `logits` `[batch, t, vocab]`,
/// `[batch, t]` with 0 where there is no label; and the number of labels.
pub(crate) fn label_log_probs(logits: Tensor<3>, labels: &[i64]) -> Result<(Tensor<2>, usize)> {
    let [b, t, v] = logits.dims();
    check_labels(labels, b, t, v)?;
    let device = logits.device();
    let idx: Vec<i64> = labels.iter().map(|l| (*l).max(0)).collect();
    let keep: Vec<f32> = labels
        .iter()
        .map(|l| if *l == IGNORE_INDEX { 0.0 } else { 1.0 })
        .collect();
    let n = keep.iter().filter(|k| **k > 0.0).count();
    let lp = burn::tensor::activation::log_softmax(logits, 2);
    let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, t, 1]), &device);
    let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, t]), &device);
    Ok((lp.gather(2, idx).reshape([b, t]) * keep, n))
}

/// Mean loss per supervised token over `eval`.
pub fn evaluate_seq2seq<M: Seq2SeqModel>(
    model: &M,
    eval: &[Seq2SeqTrainBatch],
    step: usize,
) -> Result<EvalLog> {
    crate::trainer::token_mean_eval(step, eval.iter().map(|b| seq2seq_lm_loss(model, b)))
}

/// Sample generations of an encoder-decoder being trained, logged with each evaluation.
pub type Seq2SeqSampler<'a, M> = &'a dyn Fn(&M) -> Result<Vec<String>>;

/// Trains `target` of an encoder-decoder — one adapter (its base frozen) or [`Target::Full`]
/// — on `train`, evaluating on `eval` (with `sampler`'s generations) on the shared loop
/// ([`crate::train_loop`]): gradient accumulation, clipping, the schedule, early stopping,
/// checkpoints and exact resume as for decoders.
#[allow(clippy::too_many_arguments)]
pub fn train_seq2seq<'t, M: HasLinears + Seq2SeqModel>(
    model: &mut PeftModel<M>,
    target: impl Into<Target<'t>>,
    train: &[Seq2SeqTrainBatch],
    eval: &[Seq2SeqTrainBatch],
    sampler: Option<Seq2SeqSampler<'_, M>>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    for (i, b) in train.iter().enumerate() {
        if b.supervised() == 0 {
            return Err(TrainError::NoSupervision { batch: i });
        }
    }
    let tokens: Vec<usize> = train.iter().map(Seq2SeqTrainBatch::tokens).collect();
    train_loop(
        model,
        target,
        &tokens,
        &|m: &M, i: usize| seq2seq_lm_loss(m, &train[i]),
        &|m: &M, step: usize| {
            if eval.is_empty() {
                return Ok(None);
            }
            let mut log = evaluate_seq2seq(m, eval, step)?;
            if let Some(sample) = sampler {
                log.samples = sample(m)?;
            }
            Ok(Some(log))
        },
        cfg,
        resume,
        on_event,
    )
}

/// Greedy answers of an encoder-decoder to `sources` (encoder ids), at most `max_new_tokens`
/// each; decoded without special tokens.
pub fn sample_seq2seq_answers<M: Seq2SeqModel>(
    model: &M,
    tokenizer: &Tokenizer,
    sources: &[Vec<u32>],
    max_new_tokens: usize,
) -> Result<Vec<String>> {
    let cfg = tilpass_models::Seq2SeqConfig {
        max_new_tokens,
        ..Default::default()
    };
    sources
        .iter()
        .map(|s| {
            let input = EncoderInput {
                input_ids: s.clone(),
                attention_mask: vec![1; s.len()],
                token_type_ids: vec![0; s.len()],
                batch: 1,
                seq: s.len(),
            };
            let out = generate_seq2seq(model as &dyn Seq2SeqModel, &input, &cfg)?;
            let ids = out.into_iter().next().unwrap_or_default();
            Ok(tokenizer.decode(&ids, true)?.trim().to_string())
        })
        .collect()
}
