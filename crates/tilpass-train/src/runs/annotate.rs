//! `tilpass annotate` (LamBERT step 1): an instruction LLM labels the texts of a JSONL stream
//! by scoring each label's verbalisation after a prompt ([`crate::score_labels`]), writing
//! each row back with `label`, `confidence` and `probabilities`; streamed in windows,
//! resumable and shardable ([`super::stream`]).

use std::path::PathBuf;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tilpass_peft::load_causal_lm;
use tilpass_tokenize::Tokenizer;

use super::jsonl::by_label;
use super::stream::{Shard, Stream};
use super::{RunConfig, check};
use crate::classify::{label_probabilities, score_labels};
use crate::error::{Result, TrainError};
use crate::trainer::Event;

/// Settings of an annotation job; field names are the `tilpass annotate` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnotateRun {
    /// The LLM's directory (a causal LM with its tokenizer).
    pub model: Option<PathBuf>,
    /// A LoRA / DoRA adapter for the LLM (HF PEFT format).
    pub adapter: Option<PathBuf>,
    /// Device the CLI runs on; [`AnnotateRun::run`] takes the device as an argument.
    pub device: String,
    /// Input JSONL (one object per line).
    pub data: Option<PathBuf>,
    /// Field holding the text.
    pub text_field: String,
    /// The labels; each is scored as the continuation `" " + label`.
    pub labels: Vec<String>,
    /// The prompt, with `{text}` where the text goes (a literal `\n` is a newline).
    pub template: String,
    /// Output JSONL (in input order); written as `<out>.partial` beside a sidecar
    /// `<out>.run.json` and renamed when complete.
    pub out: Option<PathBuf>,
    /// Sequences (text × label) per forward pass, and rows per batch.
    pub batch_size: usize,
    /// Rows read at a time and sorted by prompt length for batching (memory is bounded by it).
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

impl Default for AnnotateRun {
    fn default() -> Self {
        Self {
            model: None,
            adapter: None,
            device: "flex".into(),
            data: None,
            text_field: "text".into(),
            labels: Vec::new(),
            template: "Tekst: {text}\nKategori:".into(),
            out: None,
            batch_size: 16,
            window: 4096,
            shard: None,
            max_rows: None,
            keep_partial: false,
        }
    }
}

impl RunConfig for AnnotateRun {
    const JOB: &'static str = "annotate";

    fn validate(&self) -> Result<()> {
        check::path("model", &self.model)?;
        check::path("data", &self.data)?;
        check::path("out", &self.out)?;
        if self.labels.is_empty() {
            return Err(TrainError::MissingSetting {
                setting: "labels".into(),
                flag: "labels".into(),
            });
        }
        if let Some(l) = self.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(TrainError::setting(
                "labels",
                format!("{:?}", self.labels),
                format!("non-empty labels (found {l:?})"),
            ));
        }
        if let Some((i, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(i, l)| self.labels[..*i].contains(l))
        {
            return Err(TrainError::setting(
                "labels",
                format!("{:?}", self.labels),
                format!("distinct labels ({l:?} is given twice, the second time as label {i})"),
            ));
        }
        if !self.template.contains("{text}") {
            return Err(TrainError::setting(
                "template",
                format!("{:?}", self.template),
                "a prompt with `{text}` where the text goes",
            ));
        }
        check::at_least("batch_size", self.batch_size, 1)?;
        check::at_least("window", self.window, 1)?;
        check::opt_at_least("max_rows", self.max_rows, 1)
    }
}

/// What an annotation job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnnotateOutcome {
    /// Rows labelled by this call.
    pub rows: usize,
    /// Rows already in the (partial) output when this call started.
    pub resumed_from: usize,
    /// Whether the output is complete (false after `max_rows`).
    pub complete: bool,
    /// Seconds it took.
    pub seconds: f64,
}

impl AnnotateRun {
    /// Labels every row of `data` on `device`, `batch_size` rows at a time, reporting
    /// [`Event::Rows`] after each batch.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(Event)) -> Result<AnnotateOutcome> {
        self.validate()?;
        let model_dir = check::path("model", &self.model)?;
        let (data, out) = (
            check::path("data", &self.data)?,
            check::path("out", &self.out)?,
        );
        super::jsonl::distinct_output(out, data)?;
        let (model, prompt) = load_causal_lm(model_dir, self.adapter.as_deref(), device)?;
        if prompt.is_some() {
            return Err(TrainError::Config(format!(
                "{}: a prompt-learning adapter (prefix / prompt / P-tuning); annotation scores \
                 labels with LoRA / DoRA adapters",
                self.adapter.as_deref().unwrap_or(model_dir).display()
            )));
        }
        let tok = Tokenizer::from_dir(model_dir)?;
        let verbal = self
            .labels
            .iter()
            .map(|l| tok.encode(&format!(" {l}"), false))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let template = self.template.replace("\\n", "\n");
        let mut labels = |batch: &[&[u32]]| -> Result<Vec<Map<String, Value>>> {
            let prompts: Vec<Vec<u32>> = batch.iter().map(|p| p.to_vec()).collect();
            let scores = score_labels(&model, &prompts, &verbal, self.batch_size)?;
            Ok(scores
                .iter()
                .map(|s| {
                    let (best, probs) = label_probabilities(s);
                    let mut m = Map::new();
                    m.insert("label".into(), json!(self.labels[best]));
                    m.insert("confidence".into(), json!(probs[best]));
                    m.insert("probabilities".into(), by_label(&self.labels, &probs));
                    m
                })
                .collect())
        };
        let o = Stream {
            job: Self::JOB,
            data,
            out,
            text_field: &self.text_field,
            window: self.window,
            batch_size: self.batch_size,
            shard: self.shard,
            max_rows: self.max_rows,
            keep_partial: self.keep_partial,
            config: self.output_settings()?,
        }
        .run(
            &|texts| {
                texts
                    .iter()
                    .map(|t| Ok(tok.encode(&template.replace("{text}", t), true)?))
                    .collect()
            },
            &mut labels,
            progress,
        )?;
        Ok(AnnotateOutcome {
            rows: o.rows,
            resumed_from: o.resumed_from,
            complete: o.complete,
            seconds: o.seconds,
        })
    }

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
