//! Metrics of a set of chat responses: length statistics, language shares, distinct-n (unique / total n-grams
//! pooled over all responses), self-BLEU (each response against all the others: low is
//! diverse) and repetition within responses (seq-rep-n of Welleck et al. 2020: the share of
//! a response's n-grams that repeat an earlier one, averaged over responses).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::bleu::{Bleu, BleuConfig};
use crate::error::{MetricsError, Result};

/// Summary of response lengths.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    /// Mean words per response (whitespace-separated).
    pub mean_words: f64,
    /// Median words.
    pub median_words: f64,
    /// Shortest, in words.
    pub min_words: usize,
    /// Longest, in words.
    pub max_words: usize,
    /// Mean characters per response.
    pub mean_chars: f64,
    /// Share of empty (whitespace-only) responses.
    pub empty_rate: f64,
}

/// Length statistics of `responses`.
pub fn length_stats(responses: &[&str]) -> Result<LengthStats> {
    if responses.is_empty() {
        return Err(MetricsError::Invalid("no responses".into()));
    }
    let mut words: Vec<usize> = responses
        .iter()
        .map(|r| r.split_whitespace().count())
        .collect();
    let n = responses.len() as f64;
    let chars: usize = responses.iter().map(|r| r.chars().count()).sum();
    let empty = words.iter().filter(|w| **w == 0).count();
    let mean_words = words.iter().sum::<usize>() as f64 / n;
    words.sort_unstable();
    let m = words.len();
    let median_words = if m % 2 == 1 {
        words[m / 2] as f64
    } else {
        (words[m / 2 - 1] + words[m / 2]) as f64 / 2.0
    };
    Ok(LengthStats {
        mean_words,
        median_words,
        min_words: words[0],
        max_words: words[m - 1],
        mean_chars: chars as f64 / n,
        empty_rate: empty as f64 / n,
    })
}

/// distinct-n: unique n-grams / all n-grams, pooled over `responses` (whitespace tokens);
/// 0 when there are no n-grams.
pub fn distinct_n(responses: &[&str], n: usize) -> f64 {
    let mut seen: HashSet<Vec<&str>> = HashSet::new();
    let mut total = 0usize;
    for r in responses {
        let t: Vec<&str> = r.split_whitespace().collect();
        if n == 0 || t.len() < n {
            continue;
        }
        for w in t.windows(n) {
            seen.insert(w.to_vec());
            total += 1;
        }
    }
    if total == 0 {
        0.0
    } else {
        seen.len() as f64 / total as f64
    }
}

/// seq-rep-n: per response, `1 − unique n-grams / n-grams`, averaged over responses with at
/// least one n-gram.
pub fn repetition_rate(responses: &[&str], n: usize) -> f64 {
    let mut sum = 0.0;
    let mut counted = 0usize;
    for r in responses {
        let t: Vec<&str> = r.split_whitespace().collect();
        if n == 0 || t.len() < n {
            continue;
        }
        let mut c: HashMap<&[&str], usize> = HashMap::new();
        for w in t.windows(n) {
            *c.entry(w).or_insert(0) += 1;
        }
        let total = t.len() + 1 - n;
        sum += 1.0 - c.len() as f64 / total as f64;
        counted += 1;
    }
    if counted == 0 {
        0.0
    } else {
        sum / counted as f64
    }
}

/// The share of responses in each language (built-in identifier: nb, nn, sv, da, en), for
/// checking that a Norwegian model answers in Norwegian — and in the written standard asked
/// for. Empty responses are left out.
pub fn language_shares(responses: &[&str]) -> std::collections::BTreeMap<String, f64> {
    let model = tilpass_data::LangId::builtin();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut n = 0usize;
    for r in responses.iter().filter(|r| !r.trim().is_empty()) {
        *counts.entry(model.predict(r).lang).or_insert(0) += 1;
        n += 1;
    }
    counts
        .into_iter()
        .map(|(l, c)| (l, c as f64 / n.max(1) as f64))
        .collect()
}

/// Self-BLEU: the mean over responses of sacrebleu sentence BLEU (effective order, `exp`
/// smoothing, 13a) of each response against all the others as references.
pub fn self_bleu(responses: &[&str]) -> Result<f64> {
    if responses.len() < 2 {
        return Err(MetricsError::Invalid(
            "self-BLEU needs at least two responses".into(),
        ));
    }
    let bleu = Bleu::new(BleuConfig {
        effective_order: true,
        ..Default::default()
    });
    let mut sum = 0.0;
    for (i, h) in responses.iter().enumerate() {
        let others: Vec<&str> = responses
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| *r)
            .collect();
        sum += bleu.sentence_score(h, &others)?.score;
    }
    Ok(sum / responses.len() as f64)
}
