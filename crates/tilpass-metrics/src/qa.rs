//! Extractive-QA exact match and token F1 with the SQuAD v1.1 evaluation script's
//! normalisation (lower-case → drop ASCII punctuation → drop articles → collapse whitespace),
//! with the article list as an option: SQuAD's English `a / an / the`, or Norwegian
//! (`en ei et den det dei de`) for Norwegian answers.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// Which articles normalisation removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Articles {
    /// SQuAD's `a`, `an`, `the` (the reference's exact behaviour).
    #[default]
    English,
    /// Norwegian (Bokmål and Nynorsk) articles and determiners: `en ei et den det dei de`.
    Norwegian,
    /// Both lists.
    Both,
    /// None.
    None,
}

impl Articles {
    fn words(&self) -> &'static [&'static str] {
        match self {
            Self::English => &["a", "an", "the"],
            Self::Norwegian => &["en", "ei", "et", "den", "det", "dei", "de"],
            Self::Both => &[
                "a", "an", "the", "en", "ei", "et", "den", "det", "dei", "de",
            ],
            Self::None => &[],
        }
    }
}

const ASCII_PUNCT: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// SQuAD's `normalize_answer`.
pub fn normalize_answer(s: &str, articles: &Articles) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !ASCII_PUNCT.contains(*c))
        .collect();
    // `re.sub(r'\b(a|an|the)\b', ' ', text)`: whole \w-runs equal to an article become a space.
    let list = articles.words();
    let mut out = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if list.contains(&word.as_str()) {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exact match (0 or 1) of `prediction` against the best of `golds`.
pub fn exact_match(prediction: &str, golds: &[&str], articles: &Articles) -> f64 {
    let p = normalize_answer(prediction, articles);
    if golds.iter().any(|g| normalize_answer(g, articles) == p) {
        1.0
    } else {
        0.0
    }
}

/// Token F1 (0–1) of `prediction` against the best of `golds` (multiset overlap).
pub fn token_f1(prediction: &str, golds: &[&str], articles: &Articles) -> f64 {
    let p = normalize_answer(prediction, articles);
    let pt: Vec<&str> = p.split_whitespace().collect();
    golds
        .iter()
        .map(|g| {
            let g = normalize_answer(g, articles);
            let gt: Vec<&str> = g.split_whitespace().collect();
            let mut counts: HashMap<&str, i64> = HashMap::new();
            for t in &gt {
                *counts.entry(t).or_insert(0) += 1;
            }
            let mut same = 0usize;
            for t in &pt {
                if let Some(c) = counts.get_mut(t)
                    && *c > 0
                {
                    *c -= 1;
                    same += 1;
                }
            }
            if same == 0 {
                return 0.0;
            }
            let precision = same as f64 / pt.len() as f64;
            let recall = same as f64 / gt.len() as f64;
            2.0 * precision * recall / (precision + recall)
        })
        .fold(0.0, f64::max)
}

/// Corpus exact match and F1, in percent, as the SQuAD script reports them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QaScores {
    /// Mean exact match × 100.
    pub exact_match: f64,
    /// Mean F1 × 100.
    pub f1: f64,
}

/// Scores `predictions[i]` against the answers `golds[i]`.
pub fn squad_scores(
    predictions: &[&str],
    golds: &[Vec<&str>],
    articles: &Articles,
) -> Result<QaScores> {
    if predictions.len() != golds.len() {
        return Err(MetricsError::LengthMismatch {
            what: "the answers".into(),
            expected: predictions.len(),
            found: golds.len(),
        });
    }
    if predictions.is_empty() {
        return Err(MetricsError::Invalid("no predictions to score".into()));
    }
    let n = predictions.len() as f64;
    let (mut em, mut f1) = (0.0, 0.0);
    for (p, g) in predictions.iter().zip(golds) {
        em += exact_match(p, g, articles);
        f1 += token_f1(p, g, articles);
    }
    Ok(QaScores {
        exact_match: 100.0 * em / n,
        f1: 100.0 * f1 / n,
    })
}
