//! The LamBERT recipe: (a) an instruction LLM labels texts by scoring each label's
//! verbalisation (log-likelihood, no free generation), (b) a BERT classifier (with any adapter)
//! is trained on the labelled set, (c) the classifier labels a large stream.

use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use tilpass_metrics::{ClassificationReport, classification_report};
use tilpass_models::{
    DecoderInput, DecoderLm, EncoderInput, SequenceClassifier, shifted_log_probs,
};
use tilpass_peft::PeftModel;
use tilpass_tokenize::{Batch, BatchRow, IGNORE_INDEX, Padding};

use crate::error::{Result, TrainError};
use crate::trainer::{Event, Summary, TrainConfig, train_loop};

/// Log-likelihood of every label verbalisation after every prompt: `scores[p][l] =
/// Σ log p(label_l tokens | prompt_p)`, computed `batch_size` sequences at a time.
pub fn score_labels(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    labels: &[Vec<u32>],
    batch_size: usize,
) -> Result<Vec<Vec<f64>>> {
    if labels.is_empty() || labels.iter().any(Vec::is_empty) {
        return Err(TrainError::Config(
            "every label needs at least one token".into(),
        ));
    }
    let pairs: Vec<(usize, usize)> = (0..prompts.len())
        .flat_map(|p| (0..labels.len()).map(move |l| (p, l)))
        .collect();
    let mut scores = vec![vec![0f64; labels.len()]; prompts.len()];
    for chunk in pairs.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .map(|&(p, l)| [prompts[p].clone(), labels[l].clone()].concat())
            .collect();
        // Targets: the label's tokens, -100 on the prompt.
        let targets: Vec<Vec<i64>> = chunk
            .iter()
            .map(|&(p, l)| {
                std::iter::repeat_n(IGNORE_INDEX, prompts[p].len())
                    .chain(labels[l].iter().map(|&t| i64::from(t)))
                    .collect()
            })
            .collect();
        let batch = Batch::pad(
            rows.iter()
                .zip(&targets)
                .map(|(r, t)| BatchRow::new(r).with_labels(t)),
            Padding::right(0),
        )?;
        let input = DecoderInput::from_batch(&batch)?;
        let (lp, _) = shifted_log_probs(model.forward(&input, None)?, &batch.labels)?;
        let per_row = lp
            .sum_dim(1)
            .inner()
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Config(format!("{e:?}")))?;
        for (&(p, l), v) in chunk.iter().zip(per_row) {
            if !v.is_finite() {
                return Err(TrainError::NonFiniteOutput {
                    what: format!("label score of row {p} (label {l})"),
                    value: f64::from(v),
                });
            }
            scores[p][l] = f64::from(v);
        }
    }
    Ok(scores)
}

/// Softmax of label scores: the confidence of each label, and the best label.
pub fn label_probabilities(scores: &[f64]) -> (usize, Vec<f64>) {
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let probs: Vec<f64> = exp.iter().map(|e| e / sum).collect();
    let best = probs
        .iter()
        .enumerate()
        .fold(0, |b, (i, p)| if *p > probs[b] { i } else { b });
    (best, probs)
}

/// A labelled batch for a sequence classifier.
#[derive(Debug, Clone)]
pub struct ClsBatch {
    /// The encoded texts (right-padded).
    pub input: EncoderInput,
    /// Class id per row.
    pub labels: Vec<usize>,
}

/// Groups `(ids, label)` examples into batches of `batch_size` rows.
pub fn cls_batches(
    examples: &[(Vec<u32>, usize)],
    batch_size: usize,
    pad_id: u32,
) -> Result<Vec<ClsBatch>> {
    examples
        .chunks(batch_size.max(1))
        .map(|c| {
            let rows: Vec<&[u32]> = c.iter().map(|(ids, _)| ids.as_slice()).collect();
            Ok(ClsBatch {
                input: EncoderInput::from_batch(&Batch::from_ids(&rows, Padding::right(pad_id)))?,
                labels: c.iter().map(|(_, l)| *l).collect(),
            })
        })
        .collect()
}

/// Mean cross-entropy of a classifier's logits on a batch.
pub fn classification_loss<M: SequenceClassifier>(
    model: &M,
    batch: &ClsBatch,
) -> Result<(Tensor<1>, usize)> {
    let logits = model.classify(&batch.input)?;
    let [b, k] = logits.dims();
    if let Some(l) = batch.labels.iter().find(|l| **l >= k) {
        return Err(TrainError::Config(format!(
            "label {l} is not below the {k} classes of the model"
        )));
    }
    let idx: Vec<i64> = batch.labels.iter().map(|&l| l as i64).collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [b, 1]), &logits.device());
    let picked = log_softmax(logits, 1).gather(1, idx);
    Ok((picked.sum().neg().div_scalar(b as f64), b))
}

/// Trains a classifier (BERT, LTG-BERT, [`tilpass_models::EncoderModel`]) on `train` with the
/// engine of [`crate::train_lm`]: its adapter (LoRA + the head in `modules_to_save`, or any
/// adapter) or, with [`crate::Target::Full`], every parameter.
pub fn train_classifier<'t, M: SequenceClassifier>(
    model: &mut PeftModel<M>,
    target: impl Into<crate::trainer::Target<'t>>,
    train: &[ClsBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_loop(
        model,
        target,
        &tokens,
        &|m: &M, i: usize| classification_loss(m, &train[i]),
        &|_, _| Ok(None),
        cfg,
        resume,
        on_event,
    )
}

/// Class and probabilities of every row (softmax or sigmoid per the model's `problem_type`).
pub fn predict<M: SequenceClassifier>(
    model: &M,
    batches: &[EncoderInput],
) -> Result<Vec<(usize, Vec<f32>)>> {
    let problem = model.problem_type()?;
    let mut out = Vec::new();
    for input in batches {
        let probs = problem.probabilities(model.classify(input)?);
        let [b, k] = probs.dims();
        let v = probs
            .inner()
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| TrainError::Config(format!("{e:?}")))?;
        for r in 0..b {
            let row = v[r * k..(r + 1) * k].to_vec();
            if let Some(p) = row.iter().find(|p| !p.is_finite()) {
                return Err(TrainError::NonFiniteOutput {
                    what: format!("class probability of row {}", out.len()),
                    value: f64::from(*p),
                });
            }
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, p)| if *p > row[b] { i } else { b });
            out.push((best, row));
        }
    }
    Ok(out)
}

/// Accuracy, macro-F1 and the rest of predictions on labelled batches.
pub fn evaluate_classifier<M: SequenceClassifier>(
    model: &M,
    batches: &[ClsBatch],
) -> Result<ClassificationReport> {
    let inputs: Vec<EncoderInput> = batches.iter().map(|b| b.input.clone()).collect();
    let pred: Vec<usize> = predict(model, &inputs)?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let gold: Vec<usize> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    classification_report(&gold, &pred, model.num_labels())
        .map_err(|e| TrainError::Config(e.to_string()))
}
