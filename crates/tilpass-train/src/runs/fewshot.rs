//! Few-shot annotation (`tilpass annotate --shots ... --verbalizer ... --calibrate ...`): the
//! pieces that [`super::AnnotateRun`] puts together — in-context examples ("shots") and how
//! they are chosen, label verbalisations in Bokmål and Nynorsk, calibration of the label
//! probabilities, and agreement with gold labels.
//!
//! **Shots.** A shots file is JSONL with the run's text field and a `label` (one of the run's
//! labels). [`ShotSelection::Fixed`] takes `k` shots *balanced per label*: label by label in
//! the order of `--labels`, each time the next shot of that label in file order, round after
//! round, until `k` are taken (a label whose shots are used up is skipped) — see
//! [`select_fixed`]. [`ShotSelection::Similar`] takes, per row, the `k` shots whose sentence
//! embeddings (`--embedder`, any encoder with sentence-transformers pooling) have the highest
//! cosine with the row's (ties: the earlier shot) — see [`select_similar`]; shot embeddings are
//! computed once, the rows' once per window, `batch_size` at a time. In the prompt, fixed
//! shots keep their selection order; similar shots go from the least to the most similar, so
//! that the nearest example stands next to the query. Each shot is rendered with
//! `shot_template` (`{text}`, `{label}` = the label's first verbalisation in the row's written
//! form), the shots are joined in order and the query prompt (`template`) follows. When the
//! tokenized prompt is longer than `max_prompt_tokens`, shots are dropped — the least similar
//! (similar) or the last chosen (fixed) first — until it fits; the run's summary counts them.
//!
//! **Verbalisations.** Without a verbalizer a label is scored as the continuation
//! `" " + label`. A verbalizer file maps every label to words per written form,
//! `{"label": {"nb": ["word", ...], "nn": ["ord", ...]}}`; the form of a row is the one of
//! Bokmål / Nynorsk that [`LangId::builtin`] finds more probable for its text, or the one
//! fixed by `--form`. A verbalisation `v` (one word or several, one token or several) is
//! scored as the full continuation `" " + v`: `s(v) = Σ_t log p(v_t | prompt, v_<t)`. A label
//! with synonyms `v_1..v_m` gets the log-probability that the model continues with any of
//! them: `s(label) = logsumexp_j s(v_j)` (probabilities of the synonyms are *added*, not
//! averaged). The label distribution is `p = softmax_l s(label_l)`.
//!
//! **Calibration** (`--calibrate`):
//! - `contextual` (Zhao et al. 2021, "Calibrate Before Use", ICML): the content-free inputs
//!   `"N/A"`, `""` and `"[MASK]"` are put in place of the text, with the row's shots and form,
//!   and scored like a row; `p_cf = (p("N/A") + p("") + p("[MASK]")) / 3`, and the calibrated
//!   distribution is `q_l = (p_l / p_cf,l) / Σ_m (p_m / p_cf,m)` (the paper's `W =
//!   diag(p_cf)^-1`, `b = 0`; its argmax is the paper's). `p_cf` is computed once per distinct
//!   set of shots and form (once per run with fixed shots).
//! - `prior`: the label prior is estimated as the model's mean predicted distribution over
//!   the rows of the window (`window` rows: the same for a shard, a resumed run and a
//!   single process), `π_l = (1/N) Σ_i p_i,l`, and each row becomes `q_i,l = (p_i,l / π_l) /
//!   Σ_m (p_i,m / π_m)`.
//!
//! Outputs carry the calibrated `probabilities` (and `label`, `confidence` from them) and,
//! when calibrated, the `uncalibrated` ones.
//!
//! **Agreement.** With `--gold-field`, the rows' gold labels are checked before the run (a
//! gold label that is not one of the labels is an error naming file and line; rows without
//! the field are counted and left out) and, once the output is complete, [`agreement`] pairs
//! every output row with its input row: accuracy, macro-F1, Cohen's kappa and the confusion
//! matrix (`confusion[gold][predicted]`, [`tilpass_metrics`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_data::langid::LangId;
use tilpass_metrics::{classification_report, cohen_kappa_from_confusion};

use crate::error::{Result, TrainError};

/// The content-free inputs of contextual calibration (Zhao et al. 2021).
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];

/// How the in-context examples of a row are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShotSelection {
    /// The same `k` shots for every row, balanced per label ([`select_fixed`]).
    #[default]
    Fixed,
    /// The `k` shots nearest to the row by embedding cosine ([`select_similar`]).
    Similar,
}

/// How label probabilities are calibrated (module docs give the formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// The model's label distribution as it is.
    #[default]
    None,
    /// Divided by the distribution of content-free inputs ([`contextual`]).
    Contextual,
    /// Divided by the window's mean distribution ([`prior_corrected`]).
    Prior,
}

/// The written form of a row's verbalisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// Bokmål.
    Nb,
    /// Nynorsk.
    Nn,
}

impl Form {
    /// `nb` or `nn`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Nb => "nb",
            Self::Nn => "nn",
        }
    }

    /// Bokmål or Nynorsk, whichever [`LangId::builtin`] finds more probable for `text`.
    pub fn detect(text: &str) -> Self {
        let pred = LangId::builtin().predict(text);
        let p = |code: &str| {
            pred.probabilities
                .iter()
                .find(|(l, _)| l == code)
                .map_or(0.0, |(_, p)| *p)
        };
        if p("nn") > p("nb") {
            Self::Nn
        } else {
            Self::Nb
        }
    }
}

/// How the written form of a row is chosen (`--form`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormChoice {
    /// Per row, by language identification ([`Form::detect`]).
    #[default]
    Auto,
    /// Bokmål for every row.
    Nb,
    /// Nynorsk for every row.
    Nn,
}

impl FormChoice {
    /// The form of a row with `text`.
    pub fn form_of(self, text: &str) -> Form {
        match self {
            Self::Auto => Form::detect(text),
            Self::Nb => Form::Nb,
            Self::Nn => Form::Nn,
        }
    }
}

/// One in-context example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shot {
    /// 1-based line in the shots file.
    pub line: usize,
    /// Its text.
    pub text: String,
    /// Its label, an index into the run's labels.
    pub label: usize,
}

/// Reads a shots file: JSONL rows with the string field `text_field` and a `label` among
/// `labels`; an error names the file and line.
pub fn load_shots(path: &Path, text_field: &str, labels: &[String]) -> Result<Vec<Shot>> {
    let rows = super::jsonl::read_rows(path)?;
    let err = |line: usize, message: String| TrainError::Row {
        path: path.display().to_string(),
        line,
        message,
    };
    let mut shots = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        let text = super::jsonl::text_field(&row, text_field, path, line)?;
        let Some(label) = row.get("label").and_then(Value::as_str) else {
            return Err(err(line, "no string field `label` (a shot's label)".into()));
        };
        let Some(label) = labels.iter().position(|l| l == label) else {
            return Err(err(
                line,
                format!("shot label {label:?} is not one of the labels {labels:?}"),
            ));
        };
        shots.push(Shot {
            line,
            text: text.to_string(),
            label,
        });
    }
    if shots.is_empty() {
        return Err(TrainError::setting(
            "shots",
            path.display(),
            "a JSONL file with at least one shot",
        ));
    }
    Ok(shots)
}

/// The words of one label in each written form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormWords {
    /// Bokmål verbalisations (at least one).
    pub nb: Vec<String>,
    /// Nynorsk verbalisations (at least one).
    pub nn: Vec<String>,
}

impl FormWords {
    /// The words of `form`.
    pub fn of(&self, form: Form) -> &[String] {
        match form {
            Form::Nb => &self.nb,
            Form::Nn => &self.nn,
        }
    }
}

/// Verbalisations of every label, in the order of the run's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verbalizer {
    /// `words[label]`.
    pub words: Vec<FormWords>,
}

impl Verbalizer {
    /// Each label as its own single verbalisation in both forms (the run without a verbalizer).
    pub fn identity(labels: &[String]) -> Self {
        Self {
            words: labels
                .iter()
                .map(|l| FormWords {
                    nb: vec![l.clone()],
                    nn: vec![l.clone()],
                })
                .collect(),
        }
    }

    /// Reads a verbalizer file (`{"label": {"nb": [...], "nn": [...]}}`) for `labels`: every
    /// label needs at least one non-empty word per form, and no other label may appear.
    pub fn load(path: &Path, labels: &[String]) -> Result<Self> {
        let bad = |expected: String| TrainError::setting("verbalizer", path.display(), expected);
        let v: Value = tilpass_core::read_json(path)?;
        let map: BTreeMap<String, FormWords> = serde_json::from_value(v).map_err(|e| {
            bad(format!(
                "a JSON object label -> {{\"nb\": [words], \"nn\": [words]}} ({e})"
            ))
        })?;
        if let Some(k) = map.keys().find(|k| !labels.contains(k)) {
            return Err(bad(format!("only the labels {labels:?} (it has {k:?})")));
        }
        let mut words = Vec::with_capacity(labels.len());
        for l in labels {
            let Some(w) = map.get(l) else {
                return Err(bad(format!(
                    "verbalisations of every label (label {l:?} is missing)"
                )));
            };
            for form in [Form::Nb, Form::Nn] {
                let ws = w.of(form);
                if ws.is_empty() {
                    return Err(bad(format!(
                        "at least one `{}` verbalisation of label {l:?}",
                        form.code()
                    )));
                }
                if let Some(i) = ws.iter().position(|s| s.trim().is_empty()) {
                    return Err(bad(format!(
                        "non-empty verbalisations (label {l:?}, `{}` word {i} is empty)",
                        form.code()
                    )));
                }
            }
            words.push(w.clone());
        }
        Ok(Self { words })
    }
}

/// Fixed shots, balanced per label: round after round, for each label in order the next
/// unused shot of that label (in file order), until `k` are taken or none is left. Returns
/// shot indices in selection (= prompt) order.
pub fn select_fixed(shot_labels: &[usize], k: usize, num_labels: usize) -> Vec<usize> {
    let mut queues: Vec<std::collections::VecDeque<usize>> = vec![Default::default(); num_labels];
    for (i, &l) in shot_labels.iter().enumerate() {
        if let Some(q) = queues.get_mut(l) {
            q.push_back(i);
        }
    }
    let mut out = Vec::with_capacity(k);
    while out.len() < k && queues.iter().any(|q| !q.is_empty()) {
        for q in &mut queues {
            if out.len() == k {
                break;
            }
            if let Some(i) = q.pop_front() {
                out.push(i);
            }
        }
    }
    out
}

/// The `k` shots most similar to `query` by cosine, most similar first (ties: the lower
/// index first).
pub fn select_similar(query: &[f32], shots: &[Vec<f32>], k: usize) -> Vec<usize> {
    let sims: Vec<f32> = shots
        .iter()
        .map(|s| tilpass_models::cosine(query, s))
        .collect();
    let mut order: Vec<usize> = (0..shots.len()).collect();
    order.sort_by(|&a, &b| {
        sims[b]
            .partial_cmp(&sims[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    order.truncate(k);
    order
}

/// Replaces `{text}` and `{label}` in one pass (a text holding `{label}` stays as it is).
pub fn fill(template: &str, text: &str, label: Option<&str>) -> String {
    let mut out = String::with_capacity(template.len() + text.len());
    let mut rest = template;
    loop {
        let t = rest.find("{text}");
        let l = label.and_then(|_| rest.find("{label}"));
        let (at, len, with) = match (t, l) {
            (Some(t), Some(l)) if l < t => (l, 7, label.unwrap_or_default()),
            (Some(t), _) => (t, 6, text),
            (None, Some(l)) => (l, 7, label.unwrap_or_default()),
            (None, None) => break,
        };
        out.push_str(&rest[..at]);
        out.push_str(with);
        rest = &rest[at + len..];
    }
    out.push_str(rest);
    out
}

/// The prompt of a row: each shot `(text, label word)` rendered with `shot_template`, joined
/// in the given order, followed by `template` with the row's text.
pub fn render_prompt(
    shot_template: &str,
    template: &str,
    shots: &[(&str, &str)],
    text: &str,
) -> String {
    let mut s = String::new();
    for (t, l) in shots {
        s.push_str(&fill(shot_template, t, Some(l)));
    }
    s.push_str(&fill(template, text, None));
    s
}

/// `log Σ exp(x)` (−∞ for an empty slice).
pub fn logsumexp(x: &[f64]) -> f64 {
    let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Label scores from verbalisation scores: `scores[j]` is the log-likelihood of
/// verbalisation `j`, `label_of[j]` its label; a label's score is the logsumexp of its
/// verbalisations'. `[num_labels]`.
pub fn label_scores(scores: &[f64], label_of: &[usize], num_labels: usize) -> Vec<f64> {
    (0..num_labels)
        .map(|l| {
            let v: Vec<f64> = scores
                .iter()
                .zip(label_of)
                .filter(|(_, m)| **m == l)
                .map(|(s, _)| *s)
                .collect();
            logsumexp(&v)
        })
        .collect()
}

fn normalise(mut v: Vec<f64>) -> Vec<f64> {
    let z: f64 = v.iter().sum();
    if z > 0.0 && z.is_finite() {
        v.iter_mut().for_each(|x| *x /= z);
    }
    v
}

/// Contextual calibration: `q_l = (p_l / p_cf,l) / Σ_m (p_m / p_cf,m)` (a zero `p_cf,l` counts
/// as the smallest positive number).
pub fn contextual(p: &[f64], p_cf: &[f64]) -> Vec<f64> {
    normalise(
        p.iter()
            .zip(p_cf)
            .map(|(a, c)| a / c.max(f64::MIN_POSITIVE))
            .collect(),
    )
}

/// The mean distribution of `rows` (`[rows][labels]` → `[labels]`).
pub fn mean_distribution(rows: &[Vec<f64>]) -> Vec<f64> {
    let k = rows.first().map_or(0, Vec::len);
    let mut m = vec![0.0; k];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b;
        }
    }
    let n = rows.len().max(1) as f64;
    m.iter_mut().for_each(|a| *a /= n);
    m
}

/// Label-prior correction: every row divided by the rows' mean distribution `π` and
/// renormalised, `q_i,l = (p_i,l / π_l) / Σ_m (p_i,m / π_m)`.
pub fn prior_corrected(rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let prior = mean_distribution(rows);
    rows.iter().map(|p| contextual(p, &prior)).collect()
}

/// Agreement of the annotations with gold labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// The gold field.
    pub gold_field: String,
    /// Rows compared (those with a gold label).
    pub rows: usize,
    /// Rows without the gold field (left out).
    pub without_gold: usize,
    /// The labels, the order of the confusion matrix.
    pub labels: Vec<String>,
    /// Fraction of rows whose label is the gold one.
    pub accuracy: f64,
    /// Unweighted mean of the per-label F1.
    pub macro_f1: f64,
    /// Cohen's kappa (null when undefined: one label for every row, on both sides).
    pub kappa: Option<f64>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

fn gold_of(
    row: &Value,
    field: &str,
    labels: &[String],
    path: &Path,
    line: usize,
) -> Result<Option<usize>> {
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            labels
                .iter()
                .position(|l| l == s)
                .map(Some)
                .ok_or_else(|| TrainError::Row {
                    path: path.display().to_string(),
                    line,
                    message: format!("gold `{field}` {s:?} is not one of the labels {labels:?}"),
                })
        }
        Some(other) => Err(TrainError::Row {
            path: path.display().to_string(),
            line,
            message: format!("gold `{field}` is {other}, not a label string"),
        }),
    }
}

/// Checks the gold labels of `data` before a run: a row's `field`, when present, must be one
/// of `labels` (an error names file and line). Streams the file.
pub fn check_gold(data: &Path, field: &str, labels: &[String]) -> Result<()> {
    for item in tilpass_core::TextLines::open(data)? {
        let (line, text) = item?;
        if text.trim().is_empty() {
            continue;
        }
        // Malformed lines are reported by the run itself, with the same file and line.
        if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
            gold_of(&v, field, labels, data, line)?;
        }
    }
    Ok(())
}

/// Agreement of a complete output `out` (rows with `label`) with the gold `field` of its input
/// `data`, pairing rows as the stream wrote them (windows of `window` rows, this shard's only).
/// Streams both files.
pub fn agreement(
    data: &Path,
    out: &Path,
    field: &str,
    labels: &[String],
    window: usize,
    shard: Option<super::Shard>,
) -> Result<Agreement> {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut rows, mut without_gold) = (0usize, 0usize);
    let mut outputs = tilpass_core::TextLines::open(out)?;
    let mut n = 0usize;
    for item in tilpass_core::TextLines::open(data)? {
        let (line, text) = item?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let w = n / window.max(1);
        n += 1;
        if !shard.is_none_or(|s| s.owns(w)) {
            continue;
        }
        let Some(o) = outputs.next() else {
            return Err(TrainError::Row {
                path: out.display().to_string(),
                line: 0,
                message: format!("ends before the row of {}:{line}", data.display()),
            });
        };
        let (oline, otext) = o?;
        let row: Value = serde_json::from_str(text).map_err(|e| TrainError::Row {
            path: data.display().to_string(),
            line,
            message: e.to_string(),
        })?;
        let Some(gold) = gold_of(&row, field, labels, data, line)? else {
            without_gold += 1;
            continue;
        };
        let orow: Value = serde_json::from_str(otext.trim()).map_err(|e| TrainError::Row {
            path: out.display().to_string(),
            line: oline,
            message: e.to_string(),
        })?;
        let pred = orow
            .get("label")
            .and_then(Value::as_str)
            .and_then(|p| labels.iter().position(|l| l == p))
            .ok_or_else(|| TrainError::Row {
                path: out.display().to_string(),
                line: oline,
                message: "no `label` among the labels".into(),
            })?;
        confusion[gold][pred] += 1;
        rows += 1;
    }
    let (gold, pred): (Vec<usize>, Vec<usize>) = confusion
        .iter()
        .enumerate()
        .flat_map(|(g, r)| {
            r.iter()
                .enumerate()
                .flat_map(move |(p, &c)| std::iter::repeat_n((g, p), c))
        })
        .unzip();
    let (accuracy, macro_f1) = if rows == 0 {
        (0.0, 0.0)
    } else {
        let r = classification_report(&gold, &pred, k)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        (r.accuracy, r.macro_f1)
    };
    let kappa = if rows == 0 {
        None
    } else {
        Some(
            cohen_kappa_from_confusion(&confusion)
                .map_err(|e| TrainError::Config(e.to_string()))?,
        )
        .filter(|v| v.is_finite())
    };
    Ok(Agreement {
        gold_field: field.to_string(),
        rows,
        without_gold,
        labels: labels.to_vec(),
        accuracy,
        macro_f1,
        kappa,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_in_one_pass() {
        assert_eq!(
            fill("a {text} b {label}", "x {label}", Some("y")),
            "a x {label} b y"
        );
        assert_eq!(fill("{label}:{text}", "t", Some("l")), "l:t");
        assert_eq!(fill("{text} {label}", "t", None), "t {label}");
    }

    #[test]
    fn fixed_selection_is_balanced_round_robin() {
        // Labels of the shots in file order.
        let labels = [0, 0, 0, 1, 2, 1];
        assert_eq!(select_fixed(&labels, 4, 3), vec![0, 3, 4, 1]);
        assert_eq!(select_fixed(&labels, 10, 3), vec![0, 3, 4, 1, 5, 2]);
    }
}
