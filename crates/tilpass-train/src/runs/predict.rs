//! `tilpass predict` (LamBERT step 3): a classifier trained by [`super::ClassifyRun`] labels
//! a JSONL stream, batch by batch, writing each row back with `label` and `probabilities`;
//! streamed in windows, resumable and shardable ([`super::stream`]).

use std::path::PathBuf;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tilpass_models::{EncoderInput, EncoderModel};
use tilpass_tokenize::Tokenizer;

use super::classify::LABELS_FILE;
use super::jsonl::by_label;
use super::stream::{Shard, Stream};
use super::{RunConfig, check};
use crate::classify::predict;
use crate::classify_methods::LoadedClassifier;
use crate::error::{Result, TrainError};
use crate::trainer::Event;

/// Settings of a prediction job; field names are the `tilpass predict` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictRun {
    /// The encoder the classifier was trained on (with its tokenizer).
    pub model: Option<PathBuf>,
    /// The classifier's adapter directory (`out/adapter` of `tilpass train classify`, with
    /// `labels.json`); without it `model` must be a whole sequence classifier
    /// (`*ForSequenceClassification`, e.g. a fully fine-tuned one; labels from `id2label`,
    /// else transformers' `LABEL_<i>`).
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on; [`PredictRun::run`] takes the device as an argument.
    pub device: String,
    /// JSONL with a text field.
    pub data: Option<PathBuf>,
    /// Field holding the text.
    pub text_field: String,
    /// Output JSONL (rows with `label` and `probabilities` added, in input order); written as
    /// `<out>.partial` beside a sidecar `<out>.run.json` and renamed when complete.
    pub out: Option<PathBuf>,
    /// Rows per batch.
    pub batch_size: usize,
    /// Truncate texts to this many tokens, special tokens included (at least 2; the content
    /// is cut and the special tokens kept, as transformers' `truncation=True` does).
    pub max_length: usize,
    /// Rows read at a time and sorted by token length for batching (memory is bounded by it).
    pub window: usize,
    /// `i/n`: label only the windows `w` with `w % n == i` (an array job's part; merge the
    /// parts with `tilpass merge-shards`).
    pub shard: Option<Shard>,
    /// Stop after writing this many rows; the output stays partial, and the same command
    /// continues it.
    pub max_rows: Option<usize>,
    /// On an error or Ctrl-C keep the partial output (the same command continues it); without
    /// it a run that started the output removes it. A hard kill always leaves it.
    pub keep_partial: bool,
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
            window: 4096,
            shard: None,
            max_rows: None,
            keep_partial: false,
        }
    }
}

impl RunConfig for PredictRun {
    const JOB: &'static str = "predict";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("max_length", self.max_length, 2)?;
        check::at_least("window", self.window, 1)?;
        check::opt_at_least("max_rows", self.max_rows, 1)
    }
}

impl PredictRun {
    /// The settings that shape the output, recorded in its sidecar: the run config without
    /// `out`, `max_rows` and `keep_partial`.
    pub fn output_settings(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        if let Value::Object(m) = &mut v {
            for k in ["out", "max_rows", "keep_partial"] {
                m.shift_remove(k);
            }
        }
        Ok(v)
    }
}

/// What a prediction job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PredictOutcome {
    /// Rows labelled by this call.
    pub rows: usize,
    /// Rows already in the (partial) output when this call started.
    pub resumed_from: usize,
    /// Whether the output is complete (false after `max_rows`).
    pub complete: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// Throughput.
    pub rows_per_s: f64,
}

impl PredictRun {
    /// Labels every row of `data` on `device`, `batch_size` rows at a time, reporting
    /// [`Event::Rows`] after each batch: [`Predictor::load`] then [`Predictor::run`].
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<PredictOutcome> {
        self.validate()?;
        let (data, out) = (
            check::path("data", &self.data)?,
            check::path("out", &self.out)?,
        );
        super::jsonl::distinct_output(out, data)?;
        Predictor::load(self, device)?.run(self, progress)
    }
}

/// A loaded classifier with its tokenizer and label names, ready to label any number of
/// streams ([`Predictor::run`]); [`PredictRun::run`] is [`Predictor::load`] followed by one
/// [`Predictor::run`].
#[derive(Debug)]
pub struct Predictor {
    model: LoadedClassifier,
    names: Vec<String>,
    labels_file: PathBuf,
    tok: Tokenizer,
    model_dir: PathBuf,
    adapter: Option<PathBuf>,
}

impl Predictor {
    /// Loads the classifier `run` names (`model`, with `adapter` when set) and its tokenizer
    /// on `device`; the other settings of `run` are not read here.
    pub fn load(run: &PredictRun, device: &Device) -> Result<Self> {
        let model_dir = check::path("model", &run.model)?;
        let (model, names, labels_file) = match &run.adapter {
            Some(adapter) => {
                // A LoRA / DoRA or prompt-learning adapter, or a full model directory that
                // `tilpass train classify --method full` saved.
                let (model, names) =
                    crate::classify_methods::load_classifier(model_dir, adapter, device)?;
                (model, names, adapter.join(LABELS_FILE))
            }
            None => {
                let config = model_dir.join("config.json");
                let v: Value = tilpass_core::read_json(&config)?;
                let arch = v["architectures"][0].as_str().unwrap_or("");
                if !arch.ends_with("ForSequenceClassification") {
                    return Err(TrainError::MissingSetting {
                        setting: "adapter".into(),
                        flag: "adapter (the model is no `*ForSequenceClassification`)".into(),
                    });
                }
                let model_type = v["model_type"].as_str().unwrap_or("");
                if crate::classify_methods::is_decoder(model_type) {
                    // A decoder `*ForSequenceClassification` directory (e.g. `--method full`).
                    let (model, names) =
                        crate::classify_methods::load_classifier(model_dir, model_dir, device)?;
                    return Self::new(model, names, config, model_dir, run);
                }
                let model = EncoderModel::load(model_dir, device)?;
                // transformers leaves out its default `id2label` (LABEL_0, LABEL_1, ...).
                let names = match model.labels()? {
                    Some(n) => n,
                    None => (0..tilpass_models::SequenceClassifier::num_labels(&model))
                        .map(|i| format!("LABEL_{i}"))
                        .collect(),
                };
                (LoadedClassifier::Encoder(model), names, config)
            }
        };
        Self::new(model, names, labels_file, model_dir, run)
    }

    /// The predictor of a loaded classifier: its tokenizer from `model_dir`.
    fn new(
        model: LoadedClassifier,
        names: Vec<String>,
        labels_file: PathBuf,
        model_dir: &std::path::Path,
        run: &PredictRun,
    ) -> Result<Self> {
        let tok = Tokenizer::from_dir(model_dir)?;
        Ok(Self {
            model,
            names,
            labels_file,
            tok,
            model_dir: model_dir.to_path_buf(),
            adapter: run.adapter.clone(),
        })
    }

    /// The label names, in class order.
    pub fn labels(&self) -> &[String] {
        &self.names
    }

    /// Labels every row of `run.data` into `run.out`, `batch_size` rows at a time (texts
    /// truncated to `max_length` tokens as transformers truncates: the content is cut, the
    /// special tokens kept), reporting [`Event::Rows`] after each batch. `run.model` and
    /// `run.adapter` must name what was loaded; `run.device` is not read.
    pub fn run(&self, run: &PredictRun, progress: &mut dyn FnMut(Event)) -> Result<PredictOutcome> {
        run.validate()?;
        let (data, out) = (
            check::path("data", &run.data)?,
            check::path("out", &run.out)?,
        );
        super::jsonl::distinct_output(out, data)?;
        if run.model.as_ref() != Some(&self.model_dir) || run.adapter != self.adapter {
            return Err(TrainError::Config(format!(
                "this predictor holds model {} with adapter {:?}; the run names model {:?} with \
                 adapter {:?}",
                self.model_dir.display(),
                self.adapter,
                run.model,
                run.adapter
            )));
        }
        let (model, names, labels_file) = (&self.model, &self.names, &self.labels_file);
        let decoder = match model {
            LoadedClassifier::Decoder(d) => Some(d.as_ref()),
            LoadedClassifier::DecoderPrompt(d) => Some(&d.model),
            _ => None,
        };
        if let Some(d) = decoder {
            // Batches of more than one row need a pad id (transformers refuses them too).
            crate::classify_methods::check_decoder_batch(d, "batch_size", run.batch_size)?;
        }
        let pad = model.pad_token_id();
        let labels = |batch: &[&[u32]]| -> Result<Vec<Map<String, Value>>> {
            let input = EncoderInput::from_batch(&tilpass_tokenize::Batch::from_ids(
                batch,
                tilpass_tokenize::Padding::right(pad),
            ))?;
            predict(model, &[input])?
                .into_iter()
                .map(|(best, probs)| {
                    let label = names.get(best).ok_or_else(|| {
                        TrainError::Config(format!(
                            "the classifier predicted class {best} of {}: {} holds {} labels",
                            probs.len(),
                            labels_file.display(),
                            names.len()
                        ))
                    })?;
                    let mut m = Map::new();
                    m.insert("label".into(), json!(label));
                    m.insert("probabilities".into(), by_label(names, &probs));
                    Ok(m)
                })
                .collect()
        };
        let o = Stream {
            job: PredictRun::JOB,
            data,
            out,
            text_field: &run.text_field,
            window: run.window,
            batch_size: run.batch_size,
            shard: run.shard,
            max_rows: run.max_rows,
            keep_partial: run.keep_partial,
            config: run.output_settings()?,
        }
        .run(
            &|texts| Ok(self.tok.encode_batch_truncated(texts, run.max_length)?),
            &mut { labels },
            progress,
        )?;
        let seconds = o.seconds;
        let done = o.rows;
        Ok(PredictOutcome {
            rows: done,
            resumed_from: o.resumed_from,
            complete: o.complete,
            seconds,
            rows_per_s: done as f64 / seconds.max(1e-9),
        })
    }
}
