//! Quality filters with a reason per rule: language and written form, length, character and
//! word ratios, repeated lines, paragraphs and n-grams (the Gopher rules), and perplexity under
//! an n-gram model with a percentile cut-off ([`ngram`]).
//!
//! # Which text is checked
//!
//! [`TextScope::Joined`] (the default) checks one text per row: every field of the row in
//! order (`text`; `messages`; `prompt`, `completion`; `prompt`, `chosen`, `rejected`), each
//! message or string a paragraph, joined by a blank line (`"\n\n"`). An implicit preference
//! prompt (shared by `chosen` and `rejected`) is extracted first, as TRL does, so it counts once
//! and does not look like a repeated paragraph. [`TextScope::PerField`] checks each field on its
//! own (messages of a field joined by a blank line) and reports the failing field.
//!
//! # Rules and defaults
//!
//! Every rule can be turned off (`null` in JSON). The Gopher thresholds are those of Rae et al.
//! (2021), "Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
//! appendix A (the quality filter of A.1.1 and table A1), as datatrove implements them; a rule
//! fails when its value is below a `min_*` or above a `max_*` threshold.
//!
//! | rule | setting | default | source |
//! | --- | --- | --- | --- |
//! | `language` | `languages`, `min_language_probability` | `["nb", "nn"]`, off | [`crate::LangId::builtin`] |
//! | `min_words` / `max_words` | non-symbol words | 50 / 100 000 | Gopher |
//! | `min_chars` / `max_chars` | characters | off / off | |
//! | `min_mean_word_length` / `max_mean_word_length` | characters per non-symbol word | 3 / 10 | Gopher |
//! | `hash_ratio` | `#` per word | max 0.1 | Gopher |
//! | `ellipsis_ratio` | `...` and `…` per word | max 0.1 | Gopher |
//! | `bullet_lines` | share of lines starting with `•` or `-` | max 0.9 | Gopher |
//! | `ellipsis_lines` | share of lines ending with `...` or `…` | max 0.3 | Gopher |
//! | `alpha_words` | share of words with a letter | min 0.8 | Gopher |
//! | `alpha_chars` | share of non-space characters that are letters | off | |
//! | `digit_chars` | share of non-space characters that are digits | off | |
//! | `dup_para_frac` | duplicate paragraph fraction | max 0.30 | Gopher table A1 |
//! | `dup_para_char_frac` | duplicate paragraph character fraction | max 0.20 | Gopher table A1 |
//! | `dup_line_frac` | duplicate line fraction | max 0.30 | Gopher table A1 |
//! | `dup_line_char_frac` | duplicate line character fraction | max 0.20 | Gopher table A1 |
//! | `top_{n}_gram` | top n-gram character fraction | n=2: 0.20, 3: 0.18, 4: 0.16 | Gopher table A1 |
//! | `dup_{n}_gram` | duplicate n-gram character fraction | n=5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10 | Gopher table A1 |
//! | `perplexity` | perplexity under a model ([`ngram::NgramLm`]) | drop the worst p% (off) | |
//!
//! Gopher's stop-word rule (two of eight English stop words) is not applied: it is English.
//! Gopher's word-count rule was made for web pages; single chat turns are often shorter than
//! 50 words, so lower `min_words` for chat data.
//!
//! The measurements are defined in [`gopher`] and checked against datatrove 0.10.1
//! (`tests/fixtures/generate_quality.py`).
//!
//! ```
//! use tilpass_data::quality::{QualityConfig, QualityFilter};
//! let cfg = QualityConfig { min_words: Some(3), ..QualityConfig::default() };
//! let f = QualityFilter::new(cfg).unwrap();
//! let fails = f.check_text("Eg likar å gå tur i skogen.\nEg likar å gå tur i skogen.");
//! assert!(fails.iter().any(|x| x.rule == "dup_line_frac"));
//! ```

pub mod gopher;
pub mod ngram;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{DataError, Result};
use crate::langid::LangId;
use crate::record::{Content, Record};

pub use gopher::GopherStats;
pub use ngram::{NgramLm, NgramLmConfig, PerplexityScorer, perplexity_cutoff};

/// Which text of a row the rules see (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextScope {
    /// All fields joined into one text.
    #[default]
    Joined,
    /// Each field on its own; a row fails when any field fails.
    PerField,
}

/// Settings of the quality rules; `None` turns a rule off. The defaults are listed in the
/// module docs ([`crate::quality`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityConfig {
    /// Which text of a row is checked.
    pub scope: TextScope,
    /// Languages to keep, as labels of the language identifier (`nb`, `nn`, `sv`, `da`, `en`);
    /// default `["nb", "nn"]`.
    pub languages: Option<Vec<String>>,
    /// Also require the predicted language's posterior to be at least this; default off.
    pub min_language_probability: Option<f64>,
    /// Fewest non-symbol words; default 50 (Gopher).
    pub min_words: Option<usize>,
    /// Most non-symbol words; default 100 000 (Gopher).
    pub max_words: Option<usize>,
    /// Fewest characters; default off.
    pub min_chars: Option<usize>,
    /// Most characters; default off.
    pub max_chars: Option<usize>,
    /// Shortest mean non-symbol word length; default 3 (Gopher).
    pub min_mean_word_length: Option<f64>,
    /// Longest mean non-symbol word length; default 10 (Gopher).
    pub max_mean_word_length: Option<f64>,
    /// Most `#` per word; default 0.1 (Gopher).
    pub max_hash_ratio: Option<f64>,
    /// Most `...`/`…` per word; default 0.1 (Gopher).
    pub max_ellipsis_ratio: Option<f64>,
    /// Largest share of lines starting with a bullet; default 0.9 (Gopher).
    pub max_bullet_lines: Option<f64>,
    /// Largest share of lines ending with an ellipsis; default 0.3 (Gopher).
    pub max_ellipsis_lines: Option<f64>,
    /// Smallest share of words with a letter; default 0.8 (Gopher).
    pub min_alpha_words: Option<f64>,
    /// Smallest share of non-space characters that are letters; default off.
    pub min_alpha_chars: Option<f64>,
    /// Largest share of non-space characters that are digits; default off.
    pub max_digit_chars: Option<f64>,
    /// Largest duplicate paragraph fraction; default 0.3 (Gopher).
    pub max_dup_para_frac: Option<f64>,
    /// Largest duplicate paragraph character fraction; default 0.2 (Gopher).
    pub max_dup_para_char_frac: Option<f64>,
    /// Largest duplicate line fraction; default 0.3 (Gopher).
    pub max_dup_line_frac: Option<f64>,
    /// Largest duplicate line character fraction; default 0.2 (Gopher).
    pub max_dup_line_char_frac: Option<f64>,
    /// `[n, max]` pairs for the top n-gram character fraction; default
    /// `[[2, 0.2], [3, 0.18], [4, 0.16]]` (Gopher).
    pub max_top_ngram: Vec<(usize, f64)>,
    /// `[n, max]` pairs for the duplicate n-gram character fraction; default
    /// `[[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]]` (Gopher).
    pub max_dup_ngram: Vec<(usize, f64)>,
}

impl Default for QualityConfig {
    fn default() -> Self {
        Self {
            scope: TextScope::Joined,
            languages: Some(vec!["nb".into(), "nn".into()]),
            min_language_probability: None,
            min_words: Some(50),
            max_words: Some(100_000),
            min_chars: None,
            max_chars: None,
            min_mean_word_length: Some(3.0),
            max_mean_word_length: Some(10.0),
            max_hash_ratio: Some(0.1),
            max_ellipsis_ratio: Some(0.1),
            max_bullet_lines: Some(0.9),
            max_ellipsis_lines: Some(0.3),
            min_alpha_words: Some(0.8),
            min_alpha_chars: None,
            max_digit_chars: None,
            max_dup_para_frac: Some(0.3),
            max_dup_para_char_frac: Some(0.2),
            max_dup_line_frac: Some(0.3),
            max_dup_line_char_frac: Some(0.2),
            max_top_ngram: vec![(2, 0.2), (3, 0.18), (4, 0.16)],
            max_dup_ngram: vec![
                (5, 0.15),
                (6, 0.14),
                (7, 0.13),
                (8, 0.12),
                (9, 0.11),
                (10, 0.10),
            ],
        }
    }
}

impl QualityConfig {
    /// Every rule off (a base to turn single rules on).
    pub fn none() -> Self {
        Self {
            scope: TextScope::Joined,
            languages: None,
            min_language_probability: None,
            min_words: None,
            max_words: None,
            min_chars: None,
            max_chars: None,
            min_mean_word_length: None,
            max_mean_word_length: None,
            max_hash_ratio: None,
            max_ellipsis_ratio: None,
            max_bullet_lines: None,
            max_ellipsis_lines: None,
            min_alpha_words: None,
            min_alpha_chars: None,
            max_digit_chars: None,
            max_dup_para_frac: None,
            max_dup_para_char_frac: None,
            max_dup_line_frac: None,
            max_dup_line_char_frac: None,
            max_top_ngram: vec![],
            max_dup_ngram: vec![],
        }
    }

    /// Checks the settings: ratios finite and not negative, minimums at most maximums, n-gram
    /// sizes at least 1, languages known to `langid` ([`DataError::Invalid`] naming the
    /// setting).
    pub fn validate(&self, langid: &LangId) -> Result<()> {
        let bad = |name: &str, v: String, expected: &str| {
            Err(DataError::Invalid(format!(
                "invalid quality setting `{name}` = {v}: expected {expected}"
            )))
        };
        let ratios = [
            ("min_language_probability", self.min_language_probability),
            ("min_mean_word_length", self.min_mean_word_length),
            ("max_mean_word_length", self.max_mean_word_length),
            ("max_hash_ratio", self.max_hash_ratio),
            ("max_ellipsis_ratio", self.max_ellipsis_ratio),
            ("max_bullet_lines", self.max_bullet_lines),
            ("max_ellipsis_lines", self.max_ellipsis_lines),
            ("min_alpha_words", self.min_alpha_words),
            ("min_alpha_chars", self.min_alpha_chars),
            ("max_digit_chars", self.max_digit_chars),
            ("max_dup_para_frac", self.max_dup_para_frac),
            ("max_dup_para_char_frac", self.max_dup_para_char_frac),
            ("max_dup_line_frac", self.max_dup_line_frac),
            ("max_dup_line_char_frac", self.max_dup_line_char_frac),
        ];
        for (name, v) in ratios {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                return bad(name, v.to_string(), "a finite number ≥ 0");
            }
        }
        for (name, pairs) in [
            ("max_top_ngram", &self.max_top_ngram),
            ("max_dup_ngram", &self.max_dup_ngram),
        ] {
            for (n, v) in pairs {
                if *n == 0 || !(v.is_finite() && *v >= 0.0) {
                    return bad(
                        name,
                        format!("[{n}, {v}]"),
                        "[n, max] pairs with n ≥ 1 and a finite max ≥ 0",
                    );
                }
            }
        }
        if let (Some(lo), Some(hi)) = (self.min_words, self.max_words)
            && lo > hi
        {
            return bad(
                "min_words",
                lo.to_string(),
                &format!("at most `max_words` ({hi})"),
            );
        }
        if let (Some(lo), Some(hi)) = (self.min_chars, self.max_chars)
            && lo > hi
        {
            return bad(
                "min_chars",
                lo.to_string(),
                &format!("at most `max_chars` ({hi})"),
            );
        }
        if let (Some(lo), Some(hi)) = (self.min_mean_word_length, self.max_mean_word_length)
            && lo > hi
        {
            return bad(
                "min_mean_word_length",
                lo.to_string(),
                &format!("at most `max_mean_word_length` ({hi})"),
            );
        }
        if let Some(langs) = &self.languages {
            if langs.is_empty() {
                return bad("languages", "[]".into(), "at least one language (or null)");
            }
            for l in langs {
                if !langid.languages().contains(l) {
                    return bad(
                        "languages",
                        format!("`{l}`"),
                        &format!("one of {}", langid.languages().join(", ")),
                    );
                }
            }
        }
        Ok(())
    }
}

/// One failed rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    /// The rule (`min_words`, `dup_line_frac`, `top_2_gram`, `perplexity`, ...).
    pub rule: String,
    /// The measured value (a number, or the predicted language).
    pub value: Value,
    /// The threshold it broke (a number, or the languages kept).
    pub threshold: Value,
    /// The field checked, under [`TextScope::PerField`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

fn fail(rule: impl Into<String>, value: Value, threshold: Value) -> Failure {
    Failure {
        rule: rule.into(),
        value,
        threshold,
        field: None,
    }
}

fn field_text(c: &Content) -> String {
    match c {
        Content::Text(t) => t.clone(),
        Content::Messages(ms) => ms
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

/// The fields of a record with their names and texts, as [`TextScope::PerField`] checks them
/// (an implicit preference prompt extracted first).
pub fn record_fields(r: &Record) -> Vec<(&'static str, String)> {
    let r = match r {
        Record::Preference { prompt: None, .. } => r.clone().with_explicit_prompt(),
        _ => r.clone(),
    };
    let names: &[&'static str] = match &r {
        Record::Text { .. } => &["text"],
        Record::Conversation { .. } => &["messages"],
        Record::PromptOnly { .. } => &["prompt"],
        Record::PromptCompletion { .. } | Record::Unpaired { .. } => &["prompt", "completion"],
        Record::Preference { .. } => &["prompt", "chosen", "rejected"],
    };
    names
        .iter()
        .copied()
        .zip(r.contents().iter().map(field_text))
        .collect()
}

/// The one text of a record that [`TextScope::Joined`] checks: its fields joined by a blank
/// line (empty fields left out).
pub fn record_text(r: &Record) -> String {
    record_fields(r)
        .into_iter()
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The rules of a [`QualityConfig`], ready to check texts and records.
#[derive(Debug, Clone)]
pub struct QualityFilter {
    config: QualityConfig,
    langid: LangId,
}

impl QualityFilter {
    /// A filter with the built-in language identifier ([`LangId::builtin`]); checks the
    /// settings first.
    pub fn new(config: QualityConfig) -> Result<Self> {
        Self::with_langid(config, LangId::builtin().clone())
    }

    /// A filter with your own language identifier.
    pub fn with_langid(config: QualityConfig, langid: LangId) -> Result<Self> {
        config.validate(&langid)?;
        Ok(Self { config, langid })
    }

    /// The settings.
    pub fn config(&self) -> &QualityConfig {
        &self.config
    }

    /// The rules `text` fails, in the order of the module docs' table (empty: it passes).
    pub fn check_text(&self, text: &str) -> Vec<Failure> {
        let c = &self.config;
        let mut out = vec![];
        if let Some(langs) = &c.languages {
            let p = self.langid.predict(text);
            let prob = p.probabilities.first().map_or(0.0, |x| x.1);
            if !langs.contains(&p.lang) {
                out.push(fail("language", json!(p.lang), json!(langs)));
            } else if let Some(min) = c.min_language_probability
                && prob < min
            {
                out.push(fail("min_language_probability", json!(prob), json!(min)));
            }
        }
        let top_ns: Vec<usize> = c.max_top_ngram.iter().map(|x| x.0).collect();
        let dup_ns: Vec<usize> = c.max_dup_ngram.iter().map(|x| x.0).collect();
        let s = GopherStats::compute(text, &top_ns, &dup_ns);
        let nw = s.non_symbol_words;
        if let Some(m) = c.min_words
            && nw < m
        {
            out.push(fail("min_words", json!(nw), json!(m)));
        }
        if let Some(m) = c.max_words
            && nw > m
        {
            out.push(fail("max_words", json!(nw), json!(m)));
        }
        if let Some(m) = c.min_chars
            && s.chars < m
        {
            out.push(fail("min_chars", json!(s.chars), json!(m)));
        }
        if let Some(m) = c.max_chars
            && s.chars > m
        {
            out.push(fail("max_chars", json!(s.chars), json!(m)));
        }
        let mut min = |rule: &str, v: f64, t: Option<f64>| {
            // NaN (no words to measure) passes, as comparisons with NaN do in datatrove.
            if let Some(t) = t
                && v < t
            {
                out.push(fail(rule, json!(v), json!(t)));
            }
        };
        min(
            "min_mean_word_length",
            s.mean_word_length,
            c.min_mean_word_length,
        );
        let mut checks: Vec<(String, f64, Option<f64>, bool)> = vec![
            (
                "max_mean_word_length".into(),
                s.mean_word_length,
                c.max_mean_word_length,
                true,
            ),
            ("hash_ratio".into(), s.hash_ratio, c.max_hash_ratio, true),
            (
                "ellipsis_ratio".into(),
                s.ellipsis_ratio,
                c.max_ellipsis_ratio,
                true,
            ),
            (
                "bullet_lines".into(),
                s.bullet_lines,
                c.max_bullet_lines,
                true,
            ),
            (
                "ellipsis_lines".into(),
                s.ellipsis_lines,
                c.max_ellipsis_lines,
                true,
            ),
            (
                "alpha_words".into(),
                s.alpha_words,
                c.min_alpha_words,
                false,
            ),
            (
                "alpha_chars".into(),
                s.alpha_chars,
                c.min_alpha_chars,
                false,
            ),
            ("digit_chars".into(), s.digit_chars, c.max_digit_chars, true),
            (
                "dup_para_frac".into(),
                s.dup_para_frac,
                c.max_dup_para_frac,
                true,
            ),
            (
                "dup_para_char_frac".into(),
                s.dup_para_char_frac,
                c.max_dup_para_char_frac,
                true,
            ),
            (
                "dup_line_frac".into(),
                s.dup_line_frac,
                c.max_dup_line_frac,
                true,
            ),
            (
                "dup_line_char_frac".into(),
                s.dup_line_char_frac,
                c.max_dup_line_char_frac,
                true,
            ),
        ];
        for ((n, v), (_, t)) in s.top_ngram.iter().zip(&c.max_top_ngram) {
            checks.push((format!("top_{n}_gram"), *v, Some(*t), true));
        }
        for ((n, v), (_, t)) in s.dup_ngram.iter().zip(&c.max_dup_ngram) {
            checks.push((format!("dup_{n}_gram"), *v, Some(*t), true));
        }
        for (rule, v, t, is_max) in checks {
            if let Some(t) = t
                && (if is_max { v > t } else { v < t })
            {
                out.push(fail(rule, json!(v), json!(t)));
            }
        }
        out
    }

    /// The rules a record fails, on its joined text or per field ([`QualityConfig::scope`]).
    pub fn check_record(&self, r: &Record) -> Vec<Failure> {
        match self.config.scope {
            TextScope::Joined => self.check_text(&record_text(r)),
            TextScope::PerField => record_fields(r)
                .into_iter()
                .flat_map(|(name, text)| {
                    self.check_text(&text).into_iter().map(move |mut f| {
                        f.field = Some(name.to_string());
                        f
                    })
                })
                .collect(),
        }
    }
}

/// The verdict on one row of a dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RowVerdict {
    /// The rules it failed (empty: kept).
    pub failures: Vec<Failure>,
    /// Its perplexity, when a perplexity model was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
}

impl RowVerdict {
    /// True when the row passes every rule.
    pub fn kept(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Perplexity cut-off for [`filter_records`]: a model and the share of rows to drop.
pub struct PerplexityRule<'a> {
    /// The model scoring each row's text ([`record_text`]).
    pub scorer: &'a dyn PerplexityScorer,
    /// Drop this percentage (0–100) of the rows, those of highest perplexity.
    pub drop_pct: f64,
}

/// Checks every record: the rules of `filter`, then, with `perplexity`, the rows of highest
/// perplexity (computed over the whole dataset, see [`perplexity_cutoff`]) fail rule
/// `perplexity`. One verdict per record, in order. A caller streaming a dataset gets the same
/// verdicts from [`check_row`] per row and [`apply_perplexity_cutoff`] at the end.
pub fn filter_records(
    records: &[Record],
    filter: &QualityFilter,
    perplexity: Option<PerplexityRule<'_>>,
) -> Result<Vec<RowVerdict>> {
    let scorer = perplexity.as_ref().map(|r| r.scorer);
    let mut verdicts: Vec<RowVerdict> = records
        .iter()
        .map(|r| check_row(r, filter, scorer))
        .collect();
    if let Some(rule) = perplexity {
        apply_perplexity_cutoff(&mut verdicts, rule.drop_pct)?;
    }
    Ok(verdicts)
}

/// The verdict on one record before the dataset-wide perplexity cut-off: the rules of
/// `filter`, and its perplexity under `scorer` (of [`record_text`]) when given.
pub fn check_row(
    record: &Record,
    filter: &QualityFilter,
    scorer: Option<&dyn PerplexityScorer>,
) -> RowVerdict {
    RowVerdict {
        failures: filter.check_record(record),
        perplexity: scorer.map(|s| s.perplexity(&record_text(record))),
    }
}

/// The perplexity rule over a whole dataset's verdicts (from [`check_row`] with a scorer): the
/// `drop_pct` percent of rows of highest perplexity ([`perplexity_cutoff`]; a verdict without
/// a perplexity counts as NaN, the highest) fail rule `perplexity` with the cut-off as its
/// threshold. Returns the cut-off (`None` when nothing is dropped).
pub fn apply_perplexity_cutoff(verdicts: &mut [RowVerdict], drop_pct: f64) -> Result<Option<f64>> {
    let ppl: Vec<f64> = verdicts
        .iter()
        .map(|v| v.perplexity.unwrap_or(f64::NAN))
        .collect();
    let (cut, dropped) = perplexity_cutoff(&ppl, drop_pct)?;
    for ((v, p), drop) in verdicts.iter_mut().zip(&ppl).zip(dropped) {
        v.perplexity = Some(*p);
        if drop {
            v.failures.push(fail(
                "perplexity",
                json!(p),
                cut.map_or(Value::Null, |c| json!(c)),
            ));
        }
    }
    Ok(cut)
}

#[cfg(test)]
mod tests;
