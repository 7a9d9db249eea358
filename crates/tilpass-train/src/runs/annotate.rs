//! `tilpass annotate` (LamBERT step 1): an instruction LLM labels the texts of a JSONL stream
//! by scoring each label's verbalisation after a prompt ([`crate::score_labels`]), writing
//! each row back with `label`, `confidence` and `probabilities`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tilpass_data::JsonlRows;
use tilpass_peft::load_causal_lm;
use tilpass_tokenize::Tokenizer;

use super::jsonl::{JsonlOut, by_label, row, text_field};
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
    /// Output JSONL, written whole or not at all.
    pub out: Option<PathBuf>,
    /// Sequences (text × label) per forward pass, and rows per batch.
    pub batch_size: usize,
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
        check::at_least("batch_size", self.batch_size, 1)
    }
}

/// What an annotation job did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AnnotateOutcome {
    /// Rows labelled.
    pub rows: usize,
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
        let mut writer = JsonlOut::create(out, data)?;
        let start = Instant::now();
        let mut done = 0usize;
        let mut pending: Vec<(Value, Vec<u32>)> = Vec::new();
        let mut flush = |pending: &mut Vec<(Value, Vec<u32>)>, done: &mut usize| -> Result<()> {
            let prompts: Vec<Vec<u32>> = pending.iter().map(|(_, p)| p.clone()).collect();
            let scores = score_labels(&model, &prompts, &verbal, self.batch_size)?;
            for ((mut r, _), s) in pending.drain(..).zip(scores) {
                let (best, probs) = label_probabilities(&s);
                r["label"] = json!(self.labels[best]);
                r["confidence"] = json!(probs[best]);
                r["probabilities"] = by_label(&self.labels, &probs);
                writer.write(&r)?;
                *done += 1;
            }
            Ok(())
        };
        for r in JsonlRows::open(data)? {
            let (line, r) = row(data, r?)?;
            let text = text_field(&r, &self.text_field, data, line)?;
            let prompt = tok.encode(&template.replace("{text}", text), true)?;
            pending.push((r, prompt));
            if pending.len() >= self.batch_size {
                flush(&mut pending, &mut done)?;
                progress(Event::Rows {
                    done,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
        }
        flush(&mut pending, &mut done)?;
        writer.finish()?;
        Ok(AnnotateOutcome {
            rows: done,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
