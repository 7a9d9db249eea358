//! Pairwise LLM-as-judge: a judge model compares two answers to the same question, in both
//! orders to cancel its position bias; the verdicts become win / tie / loss per item, a win
//! rate with a bootstrap confidence interval, and a length-controlled win rate.
//!
//! The judge itself is any function from prompt to reply ([`judge_pairs`]), so a local
//! tilpass model (`tilpass metrics judge --model DIR`) or a remote API can serve. Verdicts
//! follow MT-Bench's format: the reply ends with `[[A]]`, `[[B]]` or `[[C]]` (tie).

use serde::{Deserialize, Serialize};

use crate::error::{MetricsError, Result};

/// The default judge prompt (Norwegian instructions; answers may be Bokmål or Nynorsk).
/// Placeholders: `{question}`, `{answer_a}`, `{answer_b}`.
pub const DEFAULT_JUDGE_TEMPLATE: &str = "Du er en upartisk dommer. Vurder de to svarene \
nedenfor på brukerens spørsmål. Legg vekt på om svaret er riktig, nyttig og godt skrevet på \
norsk (bokmål eller nynorsk), ikke på lengden eller rekkefølgen. Gi en kort begrunnelse, og \
avslutt med nøyaktig én dom: [[A]] hvis svar A er best, [[B]] hvis svar B er best, eller \
[[C]] ved uavgjort.\n\n[Spørsmål]\n{question}\n\n[Svar A]\n{answer_a}\n\n[Svar B]\n{answer_b}\n";

/// One comparison: the question and the answers of the model under test (`answer`) and of the
/// baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgePair {
    /// The user's question.
    pub question: String,
    /// The answer of the model being evaluated.
    pub answer: String,
    /// The baseline's answer.
    pub baseline: String,
}

/// A single verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The first answer shown is better.
    A,
    /// The second answer shown is better.
    B,
    /// Tie (or no parsable verdict, counted as a tie and reported).
    Tie,
}

/// The verdict in a judge's reply: the last `[[A]]` / `[[B]]` / `[[C]]`; `None` if absent.
pub fn parse_verdict(reply: &str) -> Option<Verdict> {
    let a = reply.rfind("[[A]]");
    let b = reply.rfind("[[B]]");
    let c = reply.rfind("[[C]]");
    [(a, Verdict::A), (b, Verdict::B), (c, Verdict::Tie)]
        .into_iter()
        .filter_map(|(p, v)| p.map(|p| (p, v)))
        .max_by_key(|(p, _)| *p)
        .map(|(_, v)| v)
}

/// The outcome of one pair for the model under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairOutcome {
    /// 1 = win, 0.5 = tie, 0 = loss (the mean of both orders).
    pub score: f64,
    /// Verdict with the model's answer shown first.
    pub first: Option<Verdict>,
    /// Verdict with the model's answer shown second.
    pub second: Option<Verdict>,
    /// Both orders agreed (no position flip).
    pub consistent: bool,
}

/// Fills the template.
pub fn judge_prompt(template: &str, question: &str, a: &str, b: &str) -> String {
    template
        .replace("{question}", question)
        .replace("{answer_a}", a)
        .replace("{answer_b}", b)
}

/// Judges every pair in both orders with `judge` (prompt → reply).
pub fn judge_pairs<E: std::fmt::Display>(
    pairs: &[JudgePair],
    template: &str,
    judge: &mut dyn FnMut(&str) -> std::result::Result<String, E>,
) -> Result<Vec<PairOutcome>> {
    for p in ["{question}", "{answer_a}", "{answer_b}"] {
        if !template.contains(p) {
            return Err(MetricsError::Invalid(format!(
                "the judge template has no {p} placeholder"
            )));
        }
    }
    let mut out = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        let ask =
            |a: &str, b: &str, judge: &mut dyn FnMut(&str) -> std::result::Result<String, E>| {
                judge(&judge_prompt(template, &p.question, a, b))
                    .map(|r| parse_verdict(&r))
                    .map_err(|e| {
                        MetricsError::Invalid(format!("judge failed on pair {}: {e}", i + 1))
                    })
            };
        let first = ask(&p.answer, &p.baseline, judge)?;
        let second = ask(&p.baseline, &p.answer, judge)?;
        let s1 = match first {
            Some(Verdict::A) => 1.0,
            Some(Verdict::B) => 0.0,
            _ => 0.5,
        };
        let s2 = match second {
            Some(Verdict::B) => 1.0,
            Some(Verdict::A) => 0.0,
            _ => 0.5,
        };
        out.push(PairOutcome {
            score: (s1 + s2) / 2.0,
            first,
            second,
            consistent: s1 == s2,
        });
    }
    Ok(out)
}

/// Win rate and its uncertainty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WinRate {
    /// Items won (score > 0.5).
    pub wins: usize,
    /// Items tied (score = 0.5).
    pub ties: usize,
    /// Items lost.
    pub losses: usize,
    /// Mean score × 100 (a tie counts half).
    pub win_rate: f64,
    /// 95% percentile-bootstrap interval of `win_rate`.
    pub ci95: (f64, f64),
    /// Length-controlled win rate × 100 (see [`length_controlled_win_rate`]).
    pub length_controlled: f64,
    /// Share of items whose two orders agreed.
    pub consistency: f64,
}

/// Mean of `scores` × 100 with a seeded 95% percentile bootstrap (`resamples` draws).
pub fn bootstrap_ci(scores: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    if scores.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = tilpass_core::SplitMix64::from_state(seed ^ 0x00B0_0757_0A9F);
    let n = scores.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let s: f64 = (0..n)
                .map(|_| scores[(rng.next_u64() % n as u64) as usize])
                .sum();
            100.0 * s / n as f64
        })
        .collect();
    means.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let q = |p: f64| means[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (q(0.025), q(0.975))
}

/// Length-controlled win rate (AlpacaEval 2's idea, without its per-instruction term): fit
/// `P(win) = σ(θ₀ + θ₁ · tanh(Δ / sd(Δ)))` to the scores by maximum likelihood, where Δ is
/// the answer's length minus the baseline's (in words), and report `100 · σ(θ₀)` — the win
/// rate the judge would give at equal lengths.
pub fn length_controlled_win_rate(scores: &[f64], length_diffs: &[f64]) -> Result<f64> {
    if scores.len() != length_diffs.len() || scores.is_empty() {
        return Err(MetricsError::Invalid(
            "length control needs one length difference per scored item".into(),
        ));
    }
    let n = scores.len() as f64;
    let mean = length_diffs.iter().sum::<f64>() / n;
    let sd = (length_diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    let x: Vec<f64> = length_diffs
        .iter()
        .map(|d| if sd > 0.0 { (d / sd).tanh() } else { 0.0 })
        .collect();
    let sigma = |z: f64| 1.0 / (1.0 + (-z).exp());
    let (mut t0, mut t1) = (0.0f64, 0.0f64);
    // Newton's method on the (soft-label) logistic log-likelihood, with a tiny ridge term so
    // separable data stays finite.
    for _ in 0..100 {
        let (mut g0, mut g1, mut h00, mut h01, mut h11) = (0.0, 0.0, 1e-6, 0.0, 1e-6);
        for (y, xi) in scores.iter().zip(&x) {
            let p = sigma(t0 + t1 * xi);
            let w = p * (1.0 - p);
            g0 += y - p;
            g1 += (y - p) * xi;
            h00 += w;
            h01 += w * xi;
            h11 += w * xi * xi;
        }
        g0 -= 1e-6 * t0;
        g1 -= 1e-6 * t1;
        let det = h00 * h11 - h01 * h01;
        if det.abs() < 1e-300 {
            break;
        }
        let d0 = (h11 * g0 - h01 * g1) / det;
        let d1 = (h00 * g1 - h01 * g0) / det;
        t0 += d0;
        t1 += d1;
        if d0.abs() + d1.abs() < 1e-12 {
            break;
        }
    }
    Ok(100.0 * sigma(t0))
}

/// Summarises outcomes: counts, win rate with a 95% bootstrap interval (1000 resamples,
/// `seed`), length-controlled win rate and order consistency.
pub fn win_rate(outcomes: &[PairOutcome], pairs: &[JudgePair], seed: u64) -> Result<WinRate> {
    if outcomes.is_empty() || outcomes.len() != pairs.len() {
        return Err(MetricsError::Invalid(
            "win rate needs one outcome per pair".into(),
        ));
    }
    let scores: Vec<f64> = outcomes.iter().map(|o| o.score).collect();
    let diffs: Vec<f64> = pairs
        .iter()
        .map(|p| {
            p.answer.split_whitespace().count() as f64
                - p.baseline.split_whitespace().count() as f64
        })
        .collect();
    let n = scores.len() as f64;
    Ok(WinRate {
        wins: scores.iter().filter(|s| **s > 0.5).count(),
        ties: scores.iter().filter(|s| **s == 0.5).count(),
        losses: scores.iter().filter(|s| **s < 0.5).count(),
        win_rate: 100.0 * scores.iter().sum::<f64>() / n,
        ci95: bootstrap_ci(&scores, 1000, seed),
        length_controlled: length_controlled_win_rate(&scores, &diffs)?,
        consistency: outcomes.iter().filter(|o| o.consistent).count() as f64 / n,
    })
}
