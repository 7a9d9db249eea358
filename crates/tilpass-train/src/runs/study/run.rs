//! Running a study: output directory, annotation (or gold labels), the classifiers method by
//! method and seed by seed, the table and the plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tilpass_data::chart::{Chart, Series, write_chart};
use tilpass_metrics::classification_report;

use super::data::{StudyData, write_items};
use super::files::{self, *};
use super::results::{
    MethodSummary, StudyResult, append_result, markdown_table, read_results, summarise,
};
use super::{LabelSource, Methods, StudyRun};
use crate::classify_methods::{ClassifyMethod, unsupported_reason};
use crate::error::{Result, TrainError};
use crate::runs::jsonl::{read_rows, text_field};
use crate::runs::{AnnotateRun, PredictRun, RunConfig, check};
use crate::trainer::{Event, METRICS_FILE};

/// LLM-vs-gold agreement on the training items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    /// Items annotated.
    pub items: usize,
    /// Share of items whose LLM label is the gold label.
    pub accuracy: f64,
    /// Macro-F1 of the LLM labels against gold over the label set.
    pub macro_f1: f64,
}

/// What a study did.
#[derive(Debug, Clone, Serialize)]
pub struct StudyOutcome {
    /// The study's fingerprint (settings and data).
    pub fingerprint: String,
    /// Every result line, earlier ones first.
    pub results: Vec<StudyResult>,
    /// Result lines already there when this call started.
    pub resumed_from: usize,
    /// Whether every method x seed has its line (false after `stop_after`).
    pub complete: bool,
    /// The table's rows.
    pub summary: Vec<MethodSummary>,
    /// LLM-vs-gold agreement (`None` with gold labels).
    pub agreement: Option<Agreement>,
    /// The files written: results, table and plots.
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| tilpass_core::Error::io(path, e).into()
}

/// The `model_type` of the encoder's `config.json`.
fn model_type(model: &Path) -> Result<String> {
    let path = model.join("config.json");
    let v: Value = tilpass_core::read_json(&path)?;
    v["model_type"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| TrainError::Config(format!("{}: no string `model_type`", path.display())))
}

/// `N` of PEFT's `trainable params: N || ...` line.
fn parse_trainable(msg: &str) -> Option<usize> {
    let rest = &msg[msg.find("trainable params: ")? + "trainable params: ".len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',')
        .filter(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Elements of the tensors in the `*.safetensors` files of `dir` (a saved full model).
fn saved_parameters(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let ck = tilpass_core::Checkpoint::open(&p)?;
            let keys: Vec<String> = ck.keys().map(String::from).collect();
            for k in keys {
                n += ck.info(&k)?.shape.iter().product::<usize>();
            }
        }
    }
    Ok(n)
}

/// Readies `out`: new or empty is fine, and so is one holding this same study (resumed: true);
/// anything else is refused unless `overwrite`, which removes the study's outputs first.
fn prepare_out(out: &Path, overwrite: bool, fingerprint: &str, inputs: &[&Path]) -> Result<bool> {
    let names: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(out)(e)),
    };
    if names.is_empty() {
        return Ok(false);
    }
    let study = out.join(STUDY_FILE);
    let earlier: Option<String> = tilpass_core::read_json::<Value>(&study)
        .ok()
        .and_then(|v| v["fingerprint"].as_str().map(String::from));
    if !overwrite {
        if earlier.as_deref() == Some(fingerprint) {
            return Ok(true);
        }
        let mut shown = names.clone();
        shown.sort();
        shown.truncate(3);
        let what = match earlier {
            Some(fp) => format!(
                "a study with other settings or data (fingerprint {fp}, this one's is \
                 {fingerprint})"
            ),
            None => format!("{} (no {STUDY_FILE})", shown.join(", ")),
        };
        return Err(TrainError::setting(
            "out",
            out.display(),
            format!(
                "an empty or new directory, or one holding this same study (it resumes): it \
                 holds {what}; give --overwrite (`overwrite`) to replace it, or another --out"
            ),
        ));
    }
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let doomed: Vec<PathBuf> = files::outputs()
        .iter()
        .map(|n| out.join(n))
        .filter(|p| p.exists())
        .collect();
    for input in inputs {
        if let Some(d) = doomed
            .iter()
            .find(|d| canonical(input).starts_with(canonical(d)))
        {
            return Err(TrainError::setting(
                "overwrite",
                true,
                format!(
                    "no input inside what it removes: {} is in {}",
                    input.display(),
                    d.display()
                ),
            ));
        }
    }
    for p in doomed {
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(io(&p))?;
        } else {
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
    }
    Ok(false)
}

/// Class ids of the `label` field of `path`'s rows in `data`'s label set; a label outside it is
/// an error naming file and line.
fn labels_of(path: &Path, data: &StudyData) -> Result<Vec<usize>> {
    read_rows(path)?
        .iter()
        .map(|(line, r)| {
            let l = text_field(r, "label", path, *line)?;
            data.class(l).ok_or_else(|| TrainError::Row {
                path: path.display().to_string(),
                line: *line,
                message: format!("label {l:?} is not in the study's labels {:?}", data.labels),
            })
        })
        .collect()
}

fn report(gold: &[usize], pred: &[usize], k: usize) -> Result<(f64, f64)> {
    let r = classification_report(gold, pred, k).map_err(|e| TrainError::Config(e.to_string()))?;
    Ok((r.accuracy, r.macro_f1))
}

/// `(step, loss)` of a run's metrics log.
fn losses(path: &Path) -> Result<Vec<(f64, f64)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    Ok(read_rows(path)?
        .iter()
        .filter_map(|(_, r)| Some((r.get("step")?.as_f64()?, r.get("loss")?.as_f64()?)))
        .filter(|(_, l)| l.is_finite())
        .collect())
}

impl StudyRun {
    /// The fingerprint of the study: SHA-256 (hex) of its result settings, label set and items.
    fn fingerprint(&self, data: &StudyData) -> Result<String> {
        let items = |v: &[super::data::Item]| -> Vec<[String; 2]> {
            v.iter().map(|i| [i.text.clone(), i.gold.clone()]).collect()
        };
        let v = json!({
            "settings": self.result_settings()?,
            "labels": data.labels,
            "train": items(&data.train),
            "test": items(&data.test),
        });
        Ok(format!("{:x}", Sha256::digest(v.to_string().as_bytes())))
    }

    /// Runs the study on `device` (see the module docs): every setting, the data, the methods
    /// against the model family and the output directory are checked before any work;
    /// `progress` gets a line per stage.
    pub fn run(&self, device: &Device, progress: &mut dyn FnMut(&str)) -> Result<StudyOutcome> {
        self.validate()?;
        let model = check::path("model", &self.model)?.clone();
        let out = check::path("out", &self.out)?.clone();
        let data = StudyData::load(self)?;
        let family = model_type(&model)?;
        let mut methods = Vec::new();
        let mut skipped = Vec::new();
        for m in self.methods.list() {
            match unsupported_reason(&family, m) {
                None => methods.push(m),
                Some(why) if self.methods == Methods::All => skipped.push((m, why)),
                Some(why) => return Err(TrainError::setting("methods", m, why)),
            }
        }
        if methods.is_empty() {
            return Err(TrainError::setting(
                "model",
                model.display(),
                format!("a model that takes at least one method (model_type `{family}`)"),
            ));
        }
        let fingerprint = self.fingerprint(&data)?;
        let mut inputs: Vec<&Path> = vec![model.as_path()];
        if let Some(l) = &self.llm {
            inputs.push(l);
        }
        if let Some(t) = &self.test_data {
            inputs.push(t);
        }
        inputs.push(Path::new(&self.data));
        let resuming = prepare_out(&out, self.overwrite, &fingerprint, &inputs)?;
        std::fs::create_dir_all(&out).map_err(io(&out))?;
        let study = json!({"fingerprint": fingerprint, "config": self.to_json()?});
        let study_text =
            serde_json::to_string_pretty(&study).map_err(|e| TrainError::Config(e.to_string()))?;
        tilpass_core::write_atomic(out.join(STUDY_FILE), study_text.as_bytes())?;
        progress(&format!(
            "study {}: {} training items, {} test items, labels {:?}; methods {}{}; seeds {:?}",
            if resuming { "resumed" } else { "started" },
            data.train.len(),
            data.test.len(),
            data.labels,
            methods
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", "),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} skipped: model_type `{family}`)",
                    skipped
                        .iter()
                        .map(|(m, _)| m.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.seeds
        ));
        let train_items = out.join(TRAIN_ITEMS);
        let test_items = out.join(TEST_ITEMS);
        write_items(
            &train_items,
            "gold",
            data.train
                .iter()
                .map(|i| (i.text.as_str(), i.gold.as_str())),
        )?;
        write_items(
            &test_items,
            "gold",
            data.test.iter().map(|i| (i.text.as_str(), i.gold.as_str())),
        )?;
        let gold_train: Vec<usize> = data
            .train
            .iter()
            .map(|i| data.class(&i.gold).unwrap_or(0))
            .collect();
        let train_labels = out.join(TRAIN_LABELS);
        let agreement = match self.labels {
            LabelSource::Gold => {
                write_items(
                    &train_labels,
                    "label",
                    data.train
                        .iter()
                        .map(|i| (i.text.as_str(), i.gold.as_str())),
                )?;
                None
            }
            LabelSource::Llm => {
                progress(&format!(
                    "annotating {} items with {}",
                    data.train.len(),
                    self.llm.as_deref().unwrap_or(Path::new("")).display()
                ));
                let annotated = out.join(ANNOTATED);
                AnnotateRun {
                    model: self.llm.clone(),
                    device: self.device.clone(),
                    data: Some(train_items.clone()),
                    labels: data.labels.clone(),
                    template: self.template.clone(),
                    out: Some(annotated.clone()),
                    batch_size: self.annotate_batch_size,
                    keep_partial: true,
                    ..Default::default()
                }
                .run(device, &mut |_| {})?;
                let llm = labels_of(&annotated, &data)?;
                write_items(
                    &train_labels,
                    "label",
                    data.train
                        .iter()
                        .zip(&llm)
                        .map(|(i, &l)| (i.text.as_str(), data.labels[l].as_str())),
                )?;
                let (accuracy, macro_f1) = report(&gold_train, &llm, data.labels.len())?;
                let a = Agreement {
                    items: llm.len(),
                    accuracy,
                    macro_f1,
                };
                let text = serde_json::to_string_pretty(&a)
                    .map_err(|e| TrainError::Config(e.to_string()))?;
                tilpass_core::write_atomic(out.join(AGREEMENT), text.as_bytes())?;
                progress(&format!(
                    "LLM vs gold on the training items: accuracy {accuracy:.4}, macro-F1 \
                     {macro_f1:.4}"
                ));
                let mut distinct = llm.clone();
                distinct.sort();
                distinct.dedup();
                if distinct.len() < 2 {
                    return Err(TrainError::Config(format!(
                        "{}: the LLM gave all {} items the label {:?}; a classifier needs two \
                         labels (more `items`, another `template`, or `labels: \"gold\"`)",
                        annotated.display(),
                        llm.len(),
                        data.labels[llm[0]]
                    )));
                }
                Some(a)
            }
        };
        let results_path = out.join(RESULTS);
        let mut results = read_results(&results_path, &fingerprint)?;
        let resumed_from = results.len();
        let total = methods.len() * self.seeds.len();
        let gold_test: Vec<usize> = data
            .test
            .iter()
            .map(|i| data.class(&i.gold).unwrap_or(0))
            .collect();
        let mut new = 0;
        let mut complete = true;
        'all: for &m in &methods {
            for &seed in &self.seeds {
                if results.iter().any(|r| r.method == m && r.seed == seed) {
                    continue;
                }
                if self.stop_after.is_some_and(|n| new >= n) {
                    complete = false;
                    break 'all;
                }
                let dir = out.join(RUNS).join(format!("{m}-seed{seed}"));
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
                }
                progress(&format!(
                    "[{}/{total}] {m} seed {seed}: training",
                    results.len() + 1
                ));
                let run =
                    self.classify_run(m, seed, model.clone(), train_labels.clone(), dir.clone());
                let mut trainable = None;
                let started = Instant::now();
                let o = run.run(device, &mut |e| {
                    if let Event::Message(msg) = e {
                        trainable = trainable.or_else(|| parse_trainable(msg));
                    }
                })?;
                let train_seconds = started.elapsed().as_secs_f64();
                let trainable_parameters = match trainable {
                    Some(n) if m != ClassifyMethod::Full => n,
                    _ => saved_parameters(&o.adapter)?,
                };
                let preds = dir.join("test_predictions.jsonl");
                let p = PredictRun {
                    model: Some(model.clone()),
                    adapter: Some(o.adapter.clone()),
                    device: self.device.clone(),
                    data: Some(test_items.clone()),
                    out: Some(preds.clone()),
                    batch_size: self.predict_batch_size,
                    max_length: self.classify.max_length,
                    ..Default::default()
                }
                .run(device, &mut |_| {})?;
                let pred = labels_of(&preds, &data)?;
                let (accuracy, macro_f1) = report(&gold_test, &pred, data.labels.len())?;
                let r = StudyResult {
                    fingerprint: fingerprint.clone(),
                    method: m,
                    seed,
                    trainable_parameters,
                    accuracy,
                    macro_f1,
                    train_seconds,
                    predict_items_per_s: p.rows_per_s,
                    train_items: data.train.len(),
                    test_items: data.test.len(),
                    first_loss: o.summary.first_loss,
                    last_loss: o.summary.last_loss,
                };
                append_result(&results_path, &r)?;
                progress(&format!(
                    "[{}/{total}] {m} seed {seed}: accuracy {accuracy:.4}, macro-F1 \
                     {macro_f1:.4}, {trainable_parameters} trainable parameters, \
                     {train_seconds:.1} s, {:.0} items/s",
                    results.len() + 1,
                    p.rows_per_s
                ));
                results.push(r);
                new += 1;
            }
        }
        let summary = summarise(&methods, &results, &skipped);
        let files = self.write_report(&out, &data, &summary, &results, agreement.as_ref())?;
        Ok(StudyOutcome {
            fingerprint,
            results,
            resumed_from,
            complete,
            summary,
            agreement,
            files,
        })
    }

    /// Writes `results.md` and the two plots; returns the files with `results.jsonl` first.
    fn write_report(
        &self,
        out: &Path,
        data: &StudyData,
        summary: &[MethodSummary],
        results: &[StudyResult],
        agreement: Option<&Agreement>,
    ) -> Result<Vec<PathBuf>> {
        let mut md = String::from("# LamBERT study\n\n");
        md.push_str(&format!(
            "Data: `{}`; {} training items labelled by {}; {} gold test items; labels {}.\n\n",
            self.data,
            data.train.len(),
            match self.labels {
                LabelSource::Gold => "their gold labels (control)".to_string(),
                LabelSource::Llm => format!(
                    "the LLM `{}`",
                    self.llm.as_deref().unwrap_or(Path::new("")).display()
                ),
            },
            data.test.len(),
            data.labels.join(", ")
        ));
        if let Some(a) = agreement {
            md.push_str(&format!(
                "LLM labels vs gold on the training items: accuracy {:.4}, macro-F1 {:.4}.\n\n",
                a.accuracy, a.macro_f1
            ));
        }
        md.push_str(&markdown_table(summary));
        md.push_str(
            "\nAccuracy and macro-F1 on the gold test split: mean ± sample standard deviation \
             (n − 1) over the seeds; training time and prediction items/s are means. One line \
             per method and seed is in `results.jsonl`.\n",
        );
        let table = out.join(TABLE);
        tilpass_core::write_atomic(&table, md.as_bytes())?;
        let mut written = vec![out.join(RESULTS), table];
        let mut by_method: Vec<Series> = Vec::new();
        let mut curves: Vec<Series> = Vec::new();
        for row in summary.iter().filter(|r| r.skipped.is_none()) {
            let of: Vec<&StudyResult> = results.iter().filter(|r| r.method == row.method).collect();
            by_method.push(Series::points(
                row.method.name(),
                of.iter()
                    .map(|r| (r.trainable_parameters as f64, r.accuracy))
                    .collect(),
            ));
            let mut steps: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for r in &of {
                let log = out
                    .join(RUNS)
                    .join(format!("{}-seed{}", r.method, r.seed))
                    .join(METRICS_FILE);
                for (s, l) in losses(&log)? {
                    steps.entry(s as u64).or_default().push(l);
                }
            }
            curves.push(Series::line(
                row.method.name(),
                steps
                    .into_iter()
                    .map(|(s, l)| (s as f64, l.iter().sum::<f64>() / l.len() as f64))
                    .collect(),
            ));
        }
        let charts = [
            (
                ACCURACY_PLOT,
                Chart {
                    title: "LamBERT: test accuracy vs trainable parameters",
                    x_desc: "trainable parameters (log scale)",
                    y_desc: "accuracy (gold test split)",
                    log_x: true,
                    series: &by_method,
                },
            ),
            (
                CURVES_PLOT,
                Chart {
                    title: "LamBERT: training loss (mean over seeds)",
                    x_desc: "step",
                    y_desc: "loss",
                    log_x: false,
                    series: &curves,
                },
            ),
        ];
        for (stem, chart) in charts {
            written.extend(write_chart(out, stem, &chart)?);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_trainable;

    #[test]
    fn trainable_count_from_peft_line() {
        assert_eq!(
            parse_trainable("6 labels [..]; trainable params: 1,234 || all params: 9 || x"),
            Some(1234)
        );
        assert_eq!(parse_trainable("every weight trains"), None);
    }
}
