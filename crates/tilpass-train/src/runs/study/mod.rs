//! `tilpass study lambert` (the LamBERT study): which adaptation method makes the best
//! classifier from LLM labels. [`StudyRun`] annotates `items` texts of a training split with an
//! instruction LLM ([`super::AnnotateRun`]) — or takes their gold labels (`labels: "gold"`, a
//! control) — then trains a classifier with every method of `methods` and every seed of `seeds`
//! on those labels ([`super::ClassifyRun`]) and evaluates each on a gold-labelled test split
//! (accuracy, macro-F1, trainable parameters, training time, prediction items/s through
//! [`super::PredictRun`]).
//!
//! Outputs in `out` ([`files`] names them): `results.jsonl` (one [`StudyResult`] per method x
//! seed, appended as each finishes), `results.md` (the table: mean ± sample standard
//! deviation over the seeds), `accuracy_vs_params.svg/.png` and `learning_curves.svg/.png`.
//! A rerun of the same study in the same `out` skips the finished lines (the config's
//! fingerprint, over the settings and the data, must match); `stop_after` stops early on
//! purpose. An `out` holding anything else is refused unless `overwrite`.
//!
//! Methods a model family cannot take: named in an explicit `methods` list they are an error
//! before any work; with `methods: "all"` (the default) they are listed in the table as
//! skipped, with the reason.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{ClassifyRun, RunConfig, check};
use crate::classify_methods::ClassifyMethod;
use crate::error::{Result, TrainError};

mod data;
pub mod files;
mod results;
mod run;

pub use results::{MethodSummary, StudyResult, markdown_table, mean_std, summarise};
pub use run::StudyOutcome;

/// The built-in data of the study: `norsk-topic` (train split annotated, test split gold).
pub const BUILTIN_TOPIC: &str = "builtin:norsk-topic";

/// Where the training labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    /// The LLM's labels (the study proper).
    #[default]
    Llm,
    /// The gold labels of the training items (a control: the ceiling of the LLM labels).
    Gold,
}

/// The methods of a study: `"all"` or a list such as `["lora", "prefix"]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Methods {
    /// Every method of [`ClassifyMethod::ALL`]; those the model family cannot take are listed
    /// in the table as skipped.
    #[default]
    All,
    /// These methods; one the family cannot take is an error before any work.
    List(Vec<ClassifyMethod>),
}

impl Methods {
    /// The methods, in table order.
    pub fn list(&self) -> Vec<ClassifyMethod> {
        match self {
            Self::All => ClassifyMethod::ALL.to_vec(),
            Self::List(l) => l.clone(),
        }
    }
}

impl Serialize for Methods {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Self::All => s.serialize_str("all"),
            Self::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let names = ClassifyMethod::ALL.map(ClassifyMethod::name).join(", ");
        match Value::deserialize(d)? {
            Value::String(s) if s == "all" => Ok(Self::All),
            Value::Array(items) => items
                .into_iter()
                .map(|v| {
                    serde_json::from_value::<ClassifyMethod>(v.clone()).map_err(|_| {
                        D::Error::custom(format!(
                            "methods: unknown method {v}: expected one of {names}"
                        ))
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Self::List),
            other => Err(D::Error::custom(format!(
                "methods: {other}: expected \"all\" or a list of {names}"
            ))),
        }
    }
}

/// Settings of the LamBERT study (`tilpass study lambert --config study.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudyRun {
    /// The annotating LLM: a causal LM directory with its tokenizer (required with
    /// `labels: "llm"`).
    pub llm: Option<PathBuf>,
    /// The encoder the classifiers train on (BERT or NorBERT3 / LTG-BERT, with its tokenizer).
    pub model: Option<PathBuf>,
    /// The data: [`BUILTIN_TOPIC`] (its train split annotated, its test split the gold
    /// evaluation) or a JSONL file of training items with a text and a gold label.
    pub data: String,
    /// Gold-labelled JSONL test items (required when `data` is a file; unset with the built-in
    /// data).
    pub test_data: Option<PathBuf>,
    /// Field holding the text (JSONL data).
    pub text_field: String,
    /// Field holding the gold label (JSONL data).
    pub label_field: String,
    /// Training labels: `llm` (annotated) or `gold` (the control).
    pub labels: LabelSource,
    /// The label set, in the order the LLM scores them; empty: the built-in set's labels, or
    /// the distinct gold labels of the data, sorted.
    pub label_names: Vec<String>,
    /// The annotation prompt, with `{text}` where the text goes (as `tilpass annotate`).
    pub template: String,
    /// N: the first N training items are annotated and trained on (`None`: all of them).
    pub items: Option<usize>,
    /// `"all"` (default) or a list of methods (lora, dora, prefix, p-tuning, prompt, full).
    pub methods: Methods,
    /// One classifier per method and seed (at least one seed).
    pub seeds: Vec<u64>,
    /// Virtual tokens of the prefix / p-tuning / prompt classifiers.
    pub num_virtual_tokens: usize,
    /// Classifier training (`tilpass train classify` settings: steps, lr, batch_size, lora,
    /// ...); `model`, `data`, `out`, `method`, `seed`, `num_virtual_tokens` and `eval_split`
    /// are the study's and stay unset.
    pub classify: ClassifyRun,
    /// Sequences per forward pass of the annotation.
    pub annotate_batch_size: usize,
    /// Rows per batch of the test-split prediction.
    pub predict_batch_size: usize,
    /// Device the CLI runs on; [`StudyRun::run`] takes the device as an argument.
    pub device: String,
    /// Output directory.
    pub out: Option<PathBuf>,
    /// Replace an earlier study (or other run outputs) in `out`.
    pub overwrite: bool,
    /// Stop after this many new result lines (the same command continues the study).
    pub stop_after: Option<usize>,
}

impl Default for StudyRun {
    fn default() -> Self {
        Self {
            llm: None,
            model: None,
            data: BUILTIN_TOPIC.into(),
            test_data: None,
            text_field: "text".into(),
            label_field: "label".into(),
            labels: LabelSource::Llm,
            label_names: Vec::new(),
            template: "Tekst: {text}\nKategori:".into(),
            items: None,
            methods: Methods::All,
            seeds: vec![0, 1, 2],
            num_virtual_tokens: 8,
            classify: ClassifyRun {
                eval_split: 0.0,
                ..Default::default()
            },
            annotate_batch_size: 16,
            predict_batch_size: 64,
            device: "flex".into(),
            out: None,
            overwrite: false,
            stop_after: None,
        }
    }
}

/// An error on the nested classify section names its setting as `classify.<name>`.
fn in_classify(e: TrainError) -> TrainError {
    match e {
        TrainError::InvalidSetting {
            setting,
            value,
            expected,
        } => TrainError::InvalidSetting {
            setting: format!("classify.{setting}"),
            value,
            expected,
        },
        other => other,
    }
}

impl RunConfig for StudyRun {
    const JOB: &'static str = "study";

    fn validate(&self) -> Result<()> {
        let model = check::path("model", &self.model)?;
        let out = check::path("out", &self.out)?;
        if self.labels == LabelSource::Llm {
            check::path("llm", &self.llm)?;
            if !self.template.contains("{text}") {
                return Err(TrainError::setting(
                    "template",
                    format!("{:?}", self.template),
                    "a prompt with `{text}` where the text goes",
                ));
            }
        }
        if self.data.starts_with("builtin:") {
            if self.data != BUILTIN_TOPIC {
                return Err(TrainError::setting(
                    "data",
                    &self.data,
                    format!("`{BUILTIN_TOPIC}` or a JSONL file of texts with gold labels"),
                ));
            }
            if let Some(t) = &self.test_data {
                return Err(TrainError::setting(
                    "test_data",
                    t.display(),
                    format!("unset with `{BUILTIN_TOPIC}` (its test split is the gold evaluation)"),
                ));
            }
        } else {
            check::path("test_data", &self.test_data)?;
        }
        if self.seeds.is_empty() {
            return Err(TrainError::setting(
                "seeds",
                "[]",
                "at least one seed, e.g. [0, 1, 2]",
            ));
        }
        if let Some(s) = self
            .seeds
            .iter()
            .enumerate()
            .find_map(|(i, s)| self.seeds[..i].contains(s).then_some(s))
        {
            return Err(TrainError::setting(
                "seeds",
                format!("{:?}", self.seeds),
                format!("distinct seeds ({s} is given twice)"),
            ));
        }
        if let Methods::List(l) = &self.methods {
            if l.is_empty() {
                return Err(TrainError::setting(
                    "methods",
                    "[]",
                    "\"all\" or at least one method",
                ));
            }
            if let Some(m) = l
                .iter()
                .enumerate()
                .find_map(|(i, m)| l[..i].contains(m).then_some(m))
            {
                return Err(TrainError::setting(
                    "methods",
                    format!("{:?}", l.iter().map(|m| m.name()).collect::<Vec<_>>()),
                    format!("distinct methods ({m} is given twice)"),
                ));
            }
        }
        if let Some(l) = self.label_names.iter().enumerate().find_map(|(i, l)| {
            (l.trim().is_empty() || self.label_names[..i].contains(l)).then_some(l)
        }) {
            return Err(TrainError::setting(
                "label_names",
                format!("{:?}", self.label_names),
                format!("distinct non-empty labels (not {l:?})"),
            ));
        }
        if !self.label_names.is_empty() && self.label_names.len() < 2 {
            return Err(TrainError::setting(
                "label_names",
                format!("{:?}", self.label_names),
                "at least two labels (or none: the data's labels)",
            ));
        }
        check::opt_at_least("items", self.items, 2)?;
        check::at_least("num_virtual_tokens", self.num_virtual_tokens, 1)?;
        check::at_least("annotate_batch_size", self.annotate_batch_size, 1)?;
        check::at_least("predict_batch_size", self.predict_batch_size, 1)?;
        check::opt_at_least("stop_after", self.stop_after, 1)?;
        let c = &self.classify;
        let unset = [
            ("classify.model", c.model.is_some()),
            ("classify.data", c.data.is_some()),
            ("classify.out", c.out.is_some()),
            ("classify.method", c.method != ClassifyMethod::default()),
            ("classify.seed", c.seed != 0),
            (
                "classify.num_virtual_tokens",
                c.num_virtual_tokens.is_some(),
            ),
            ("classify.eval_split", c.eval_split != 0.0),
        ];
        if let Some((name, _)) = unset.iter().find(|(_, set)| *set) {
            return Err(TrainError::setting(
                *name,
                "(set)",
                "unset: the study sets it (model, methods, seeds, num_virtual_tokens; the gold \
                 test split evaluates)",
            ));
        }
        for m in self.methods.list() {
            self.classify_run(m, 0, model.clone(), out.join("train"), out.join("run"))
                .validate()
                .map_err(in_classify)?;
        }
        Ok(())
    }
}

impl StudyRun {
    /// The classifier run of `method` and `seed`: the `classify` section with the study's
    /// model, training labels `data`, output directory `out` (replaced: an unfinished earlier
    /// attempt), `eval_split` 0 and, for prompt methods, `num_virtual_tokens`.
    pub fn classify_run(
        &self,
        method: ClassifyMethod,
        seed: u64,
        model: PathBuf,
        data: PathBuf,
        out: PathBuf,
    ) -> ClassifyRun {
        ClassifyRun {
            model: Some(model),
            data: Some(data),
            out: Some(out),
            overwrite_output_dir: true,
            eval_split: 0.0,
            method,
            seed,
            num_virtual_tokens: method.prompt_method().map(|_| self.num_virtual_tokens),
            prefix_projection: self.classify.prefix_projection && method == ClassifyMethod::Prefix,
            encoder_hidden_size: self.classify.encoder_hidden_size.filter(|_| {
                method == ClassifyMethod::PTuning
                    || (method == ClassifyMethod::Prefix && self.classify.prefix_projection)
            }),
            ..self.classify.clone()
        }
    }

    /// The settings that shape the results (the config without `out`, `overwrite`,
    /// `stop_after` and `device`), as JSON.
    pub fn result_settings(&self) -> Result<Value> {
        let mut v = self.to_json()?;
        if let Value::Object(m) = &mut v {
            for k in ["out", "overwrite", "stop_after", "device"] {
                m.shift_remove(k);
            }
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> StudyRun {
        StudyRun {
            llm: Some("llm".into()),
            model: Some("bert".into()),
            out: Some("out".into()),
            ..Default::default()
        }
    }

    #[test]
    fn settings_are_checked_by_name() {
        base().validate().unwrap();
        let err = |r: StudyRun| r.validate().unwrap_err().to_string();
        assert!(
            err(StudyRun {
                seeds: vec![],
                ..base()
            })
            .contains("seeds")
        );
        assert!(
            err(StudyRun {
                seeds: vec![1, 1],
                ..base()
            })
            .contains("twice")
        );
        assert!(
            err(StudyRun {
                llm: None,
                ..base()
            })
            .contains("llm")
        );
        StudyRun {
            llm: None,
            labels: LabelSource::Gold,
            ..base()
        }
        .validate()
        .unwrap();
        let e = err(StudyRun {
            data: "d.jsonl".into(),
            ..base()
        });
        assert!(e.contains("test_data"), "{e}");
        let mut r = base();
        r.classify.lr = -1.0;
        assert!(err(r).contains("classify.lr"));
        let mut r = base();
        r.classify.method = ClassifyMethod::Full;
        assert!(err(r).contains("classify.method"));
    }

    #[test]
    fn methods_are_all_or_a_list() {
        let r: StudyRun =
            super::super::from_json(serde_json::json!({"methods": ["lora", "p-tuning"]}), "t")
                .unwrap();
        assert_eq!(
            r.methods,
            Methods::List(vec![ClassifyMethod::Lora, ClassifyMethod::PTuning])
        );
        let e = super::super::from_json::<StudyRun>(serde_json::json!({"methods": ["lorra"]}), "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("methods") && e.contains("lorra"), "{e}");
        let r: StudyRun =
            super::super::from_json(serde_json::json!({"methods": "all"}), "t").unwrap();
        assert_eq!(r.methods.list().len(), 6);
        assert_eq!(serde_json::to_value(&r.methods).unwrap(), "all");
    }
}
