//! `tilpass predict` (LamBERT step 3): a classifier trained by [`super::ClassifyRun`] labels
//! a JSONL stream, batch by batch, writing each row back with `label` and `probabilities`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tilpass_data::JsonlRows;
use tilpass_models::EncoderInput;
use tilpass_tokenize::Tokenizer;

use super::classify::{LABELS_FILE, encode_texts};
use super::jsonl::{JsonlOut, by_label, row, text_field};
use super::{RunConfig, check};
use crate::classify::predict;
use crate::error::{Result, TrainError};
use crate::trainer::Event;

/// Settings of a prediction job; field names are the `tilpass predict` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictRun {
    /// The encoder the classifier was trained on (with its tokenizer).
    pub model: Option<PathBuf>,
    /// The classifier's adapter directory (`out/adapter` of `tilpass train classify`, with
    /// `labels.json`).
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on; [`PredictRun::run`] takes the device as an argument.
    pub device: String,
    /// JSONL with a text field.
    pub data: Option<PathBuf>,
    /// Field holding the text.
    pub text_field: String,
    /// Output JSONL (rows with `label` and `probabilities` added), written whole or not at all.
    pub out: Option<PathBuf>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Truncate texts to this many tokens (at least 2).
    pub max_length: usize,
}

impl Default for PredictRun {
    fn default() -> Self {
        Self {
            model: None,
            adapter: None,
            device: "flex".into(),
            data: None,
            text_field: "text".into(),
            out: None,
            batch_size: 64,
            max_length: 128,
        }
    }
}

impl RunConfig for PredictRun {
    const JOB: &'static str = "predict";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("adapter", &self.adapter)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("max_length", self.max_length, 2)
    }
}

/// What a prediction job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictOutcome {
    /// Rows labelled.
    pub rows: usize,
    /// Seconds it took.
    pub seconds: f64,
    /// Throughput.
    pub rows_per_s: f64,
}

impl PredictRun {
    /// Labels every row of `data` on `device`, `batch_size` rows at a time, reporting
    /// [`Event::Rows`] after each batch.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<PredictOutcome> {
        self.validate()?;
        let model_dir = check::path("model", &self.model)?;
        let adapter = check::path("adapter", &self.adapter)?;
        let (data, out) = (
            check::path("data", &self.data)?,
            check::path("out", &self.out)?,
        );
        super::jsonl::distinct_output(out, data)?;
        let tok = Tokenizer::from_dir(model_dir)?;
        let (model, names) = crate::classify_methods::load_classifier(model_dir, adapter, device)?;
        let pad = model.pad_token_id();
        let mut writer = JsonlOut::create(out, data)?;
        let start = Instant::now();
        let mut rows = JsonlRows::open(data)?;
        let mut done = 0usize;
        loop {
            let chunk = rows
                .by_ref()
                .take(self.batch_size)
                .map(|r| row(data, r?))
                .collect::<Result<Vec<_>>>()?;
            if chunk.is_empty() {
                break;
            }
            let texts = chunk
                .iter()
                .map(|(line, r)| text_field(r, &self.text_field, data, *line))
                .collect::<Result<Vec<_>>>()?;
            let ids = encode_texts(&tok, &texts, self.max_length)?;
            let input = EncoderInput::from_batch(&tilpass_tokenize::Batch::from_ids(
                &ids,
                tilpass_tokenize::Padding::right(pad),
            ))?;
            let preds = predict(&model, &[input])?;
            for ((_, mut r), (best, probs)) in chunk.into_iter().zip(preds) {
                let label = names.get(best).ok_or_else(|| {
                    TrainError::Config(format!(
                        "the classifier predicted class {best} of {}: {} holds {} labels",
                        probs.len(),
                        adapter.join(LABELS_FILE).display(),
                        names.len()
                    ))
                })?;
                r["label"] = json!(label);
                r["probabilities"] = by_label(&names, &probs);
                writer.write(&r)?;
                done += 1;
            }
            progress(Event::Rows {
                done,
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        writer.finish()?;
        let seconds = start.elapsed().as_secs_f64();
        Ok(PredictOutcome {
            rows: done,
            seconds,
            rows_per_s: done as f64 / seconds.max(1e-9),
        })
    }
}
