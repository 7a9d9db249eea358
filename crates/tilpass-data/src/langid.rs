//! Language identification for Norwegian Bokmål (`nb`), Nynorsk (`nn`), Swedish (`sv`),
//! Danish (`da`) and English (`en`) — or any labels you train it on: a multinomial naive Bayes
//! model over character 1–6-grams of each lower-cased, space-padded word and over word pairs (function words such
//! as *ikkje* / *ikke*, *eg* / *jeg*, *kva* / *hva* are what tells Nynorsk from Bokmål).
//!
//! [`LangId::train`] learns from labelled text; [`LangId::builtin`] is trained on tilpass's own
//! CC0 texts (the `norsk-chat` conversations for nb/nn, short hand-written paragraphs for
//! sv/da/en; `data/langid/`) — small, so train on your own data for the best accuracy. The
//! test suite trains on 80% of the UD Norwegian sentences and checks Bokmål vs Nynorsk on the
//! held-out rest.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Model settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LangIdConfig {
    /// Longest character n-gram.
    pub max_n: usize,
    /// Additive smoothing of n-gram counts.
    pub alpha: f64,
}

impl Default for LangIdConfig {
    fn default() -> Self {
        Self {
            max_n: 6,
            alpha: 0.1,
        }
    }
}

/// A trained identifier.
#[derive(Debug, Clone)]
pub struct LangId {
    config: LangIdConfig,
    langs: Vec<String>,
    /// Per n-gram, log P(n-gram | language) for each language.
    table: std::collections::HashMap<String, Vec<f32>>,
}

/// The decision for one text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LangPrediction {
    /// The most likely label.
    pub lang: String,
    /// Posterior of each label (uniform prior), best first.
    pub probabilities: Vec<(String, f64)>,
}

fn features(text: &str, max_n: usize, mut f: impl FnMut(&str)) {
    let lower = text.to_lowercase();
    let mut buf = String::new();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    // Word pairs ("det er", "eg har"): the function-word patterns of each standard.
    for pair in words.windows(2) {
        buf.clear();
        buf.push('\u{1}');
        buf.push_str(pair[0]);
        buf.push(' ');
        buf.push_str(pair[1]);
        f(&buf);
    }
    for word in words {
        buf.clear();
        buf.push(' ');
        buf.push_str(word);
        buf.push(' ');
        let idx: Vec<usize> = buf
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(buf.len()))
            .collect();
        let chars = idx.len() - 1;
        for n in 1..=max_n.min(chars) {
            for i in 0..=chars - n {
                let g = &buf[idx[i]..idx[i + n]];
                if g != " " {
                    f(g);
                }
            }
        }
    }
}

impl LangId {
    /// Trains on `(label, text)` pairs; every label needs some text.
    pub fn train(samples: &[(&str, &str)], config: LangIdConfig) -> Result<Self> {
        if config.max_n == 0 || config.alpha <= 0.0 {
            return Err(DataError::Invalid(
                "langid: max_n must be ≥ 1 and alpha > 0".into(),
            ));
        }
        let mut langs: Vec<String> = samples.iter().map(|(l, _)| l.to_string()).collect();
        langs.sort();
        langs.dedup();
        if langs.len() < 2 {
            return Err(DataError::Invalid(
                "langid: training needs at least two languages".into(),
            ));
        }
        let mut counts: std::collections::HashMap<String, Vec<u32>> =
            std::collections::HashMap::new();
        let mut totals = vec![0u64; langs.len()];
        for (l, text) in samples {
            let li = langs.iter().position(|x| x == l).unwrap_or(0);
            features(text, config.max_n, |g| {
                let e = counts
                    .entry(g.to_string())
                    .or_insert_with(|| vec![0; langs.len()]);
                e[li] += 1;
                totals[li] += 1;
            });
        }
        if let Some(i) = totals.iter().position(|t| *t == 0) {
            return Err(DataError::Invalid(format!(
                "langid: no letters in the training text of `{}`",
                langs[i]
            )));
        }
        let v = counts.len() as f64;
        let denom: Vec<f64> = totals
            .iter()
            .map(|t| *t as f64 + config.alpha * v)
            .collect();
        let table = counts
            .into_iter()
            .map(|(g, c)| {
                let lp = c
                    .iter()
                    .zip(&denom)
                    .map(|(&x, d)| ((f64::from(x) + config.alpha) / d).ln() as f32)
                    .collect();
                (g, lp)
            })
            .collect();
        Ok(Self {
            config,
            langs,
            table,
        })
    }

    /// The labels it knows, sorted.
    pub fn languages(&self) -> &[String] {
        &self.langs
    }

    /// The model trained on tilpass's embedded CC0 texts (`nb`, `nn`, `sv`, `da`, `en`).
    pub fn builtin() -> &'static LangId {
        static MODEL: OnceLock<LangId> = OnceLock::new();
        MODEL.get_or_init(|| {
            let chat = crate::embedded::norsk_chat(None).unwrap_or_default();
            let texts: Vec<(String, String)> = chat
                .iter()
                .map(|c| {
                    let text: Vec<&str> = c.messages.iter().map(|m| m.content.as_str()).collect();
                    (c.lang.clone(), text.join("\n"))
                })
                .collect();
            let mut samples: Vec<(&str, &str)> = texts
                .iter()
                .map(|(l, t)| (l.as_str(), t.as_str()))
                .collect();
            for (l, t) in [
                ("sv", include_str!("../../../data/langid/sv.txt")),
                ("da", include_str!("../../../data/langid/da.txt")),
                ("en", include_str!("../../../data/langid/en.txt")),
            ] {
                samples.push((l, t));
            }
            LangId::train(&samples, LangIdConfig::default()).expect("embedded texts train")
        })
    }

    /// Log-likelihood of `text` under each language (in [`Self::languages`] order).
    pub fn scores(&self, text: &str) -> Vec<f64> {
        let mut s = vec![0f64; self.langs.len()];
        // n-grams no language saw carry no evidence (scoring them with each language's
        // smoothing floor would favour the language with the least training text).
        features(text, self.config.max_n, |g| {
            if let Some(lp) = self.table.get(g) {
                for (a, b) in s.iter_mut().zip(lp) {
                    *a += f64::from(*b);
                }
            }
        });
        s
    }

    /// The most likely language of `text` and the posterior of each (uniform prior). A text
    /// without letters gets equal probabilities and the first label.
    pub fn predict(&self, text: &str) -> LangPrediction {
        let s = self.scores(text);
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = s.iter().map(|x| (x - max).exp()).sum();
        let mut probs: Vec<(String, f64)> = self
            .langs
            .iter()
            .zip(&s)
            .map(|(l, x)| (l.clone(), (x - max).exp() / z))
            .collect();
        probs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        LangPrediction {
            lang: probs[0].0.clone(),
            probabilities: probs,
        }
    }
}
