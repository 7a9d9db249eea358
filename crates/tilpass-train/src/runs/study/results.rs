//! The study's results: one [`StudyResult`] per method and seed (`results.jsonl`), their
//! summary per method ([`summarise`]: mean ± sample standard deviation) and the Markdown
//! table ([`markdown_table`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify_methods::ClassifyMethod;
use crate::error::{Result, TrainError};
use crate::runs::jsonl::read_rows;

/// One classifier of the study, trained on the study's training labels and scored on the
/// gold test split (a line of `results.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyResult {
    /// SHA-256 of the study's settings and data (lines of another study are refused).
    pub fingerprint: String,
    /// The adaptation method.
    pub method: ClassifyMethod,
    /// The seed of the head, adapter and dropout.
    pub seed: u64,
    /// Parameters that trained (adapter + head; every weight for `full`).
    pub trainable_parameters: usize,
    /// Accuracy on the gold test split.
    pub accuracy: f64,
    /// Macro-F1 over the study's label set on the gold test split (scikit-learn's, zero for
    /// a class neither predicted nor present).
    pub macro_f1: f64,
    /// Seconds of training (model load to saved classifier).
    pub train_seconds: f64,
    /// Test items labelled per second by `predict`.
    pub predict_items_per_s: f64,
    /// Training items.
    pub train_items: usize,
    /// Test items.
    pub test_items: usize,
    /// Training loss of the first and the last step.
    pub first_loss: f64,
    /// Training loss of the last step.
    pub last_loss: f64,
}

/// Reads `results.jsonl`; a line that is not a [`StudyResult`] of `fingerprint` is an error
/// naming file and line.
pub(crate) fn read_results(path: &Path, fingerprint: &str) -> Result<Vec<StudyResult>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    read_rows(path)?
        .into_iter()
        .map(|(line, v)| {
            let r: StudyResult = serde_json::from_value(v).map_err(|e| TrainError::Row {
                path: path.display().to_string(),
                line,
                message: format!("not a study result: {e}"),
            })?;
            if r.fingerprint != fingerprint {
                return Err(TrainError::Row {
                    path: path.display().to_string(),
                    line,
                    message: format!(
                        "a result of another study (fingerprint {}, this study's is \
                         {fingerprint}): give overwrite to start again",
                        r.fingerprint
                    ),
                });
            }
            Ok(r)
        })
        .collect()
}

/// Appends `r` to `path`: the file is rewritten whole (earlier lines byte for byte, then the
/// new one) and renamed into place, so a kill leaves the old or the new file.
pub(crate) fn append_result(path: &Path, r: &StudyResult) -> Result<()> {
    let mut text = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(tilpass_core::Error::io(path, e).into()),
    };
    let line = serde_json::to_string(r).map_err(|e| TrainError::Config(e.to_string()))?;
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    tilpass_core::write_atomic(path, &text)?;
    Ok(())
}

/// The mean and the sample standard deviation (n - 1 in the denominator; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// One row of the table: a method over its seeds, or a method the model family cannot take.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSummary {
    /// The method.
    pub method: ClassifyMethod,
    /// Seeds with a result.
    pub seeds: usize,
    /// Trainable parameters (the same for every seed).
    pub trainable_parameters: usize,
    /// Accuracy: mean and sample standard deviation over the seeds.
    pub accuracy: (f64, f64),
    /// Macro-F1: mean and sample standard deviation over the seeds.
    pub macro_f1: (f64, f64),
    /// Mean training seconds.
    pub train_seconds: f64,
    /// Mean prediction items per second.
    pub predict_items_per_s: f64,
    /// Why the method was not run (`methods: "all"` on a family that cannot take it).
    pub skipped: Option<String>,
}

/// The summary of `results` per method of `methods` (in that order; methods without results
/// left out), then the `skipped` methods with their reasons.
pub fn summarise(
    methods: &[ClassifyMethod],
    results: &[StudyResult],
    skipped: &[(ClassifyMethod, String)],
) -> Vec<MethodSummary> {
    let mut rows = Vec::new();
    for &m in methods {
        let of: Vec<&StudyResult> = results.iter().filter(|r| r.method == m).collect();
        if of.is_empty() {
            continue;
        }
        let col = |f: fn(&StudyResult) -> f64| -> Vec<f64> { of.iter().map(|r| f(r)).collect() };
        rows.push(MethodSummary {
            method: m,
            seeds: of.len(),
            trainable_parameters: of[0].trainable_parameters,
            accuracy: mean_std(&col(|r| r.accuracy)),
            macro_f1: mean_std(&col(|r| r.macro_f1)),
            train_seconds: mean_std(&col(|r| r.train_seconds)).0,
            predict_items_per_s: mean_std(&col(|r| r.predict_items_per_s)).0,
            skipped: None,
        });
    }
    for (m, why) in skipped {
        rows.push(MethodSummary {
            method: *m,
            seeds: 0,
            trainable_parameters: 0,
            accuracy: (f64::NAN, f64::NAN),
            macro_f1: (f64::NAN, f64::NAN),
            train_seconds: f64::NAN,
            predict_items_per_s: f64::NAN,
            skipped: Some(why.clone()),
        });
    }
    rows
}

/// The Markdown table of `rows`: method, trainable parameters, accuracy and macro-F1 as
/// `mean ± std` (4 decimals), mean training seconds, mean prediction items/s; a skipped
/// method shows its reason.
pub fn markdown_table(rows: &[MethodSummary]) -> String {
    let mut s = String::from(
        "| method | trainable parameters | accuracy (mean ± std) | macro-F1 (mean ± std) | \
         seeds | training time (s) | prediction items/s |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        match &r.skipped {
            Some(why) => s.push_str(&format!(
                "| {} | – | skipped: {} | – | 0 | – | – |\n",
                r.method,
                why.replace('|', "/")
            )),
            None => s.push_str(&format!(
                "| {} | {} | {:.4} ± {:.4} | {:.4} ± {:.4} | {} | {:.1} | {:.0} |\n",
                r.method,
                r.trainable_parameters,
                r.accuracy.0,
                r.accuracy.1,
                r.macro_f1.0,
                r.macro_f1.1,
                r.seeds,
                r.train_seconds,
                r.predict_items_per_s
            )),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[0.5, 0.7, 0.9]);
        assert!((m - 0.7).abs() < 1e-12);
        assert!((s - 0.2).abs() < 1e-12);
        assert_eq!(mean_std(&[0.3]), (0.3, 0.0));
    }
}
