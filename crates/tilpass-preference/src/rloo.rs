//! RLOO as TRL 1.16.0's `RLOOTrainer` computes it on given inputs: rewards penalised by the
//! sequence KL against the reference (`beta`), leave-one-out baselines within each prompt's G
//! completions, optional normalisation and reward clipping ([`rloo_advantages`]), and the
//! sequence-level clipped loss ([`rloo_loss`]), with the metrics TRL logs. Checked against TRL's
//! own code (tests/fixtures/generate_grpo.py, tests/all/grpo_parity.rs).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{PreferenceError, Result};
use crate::grpo::{is_zero, nanmean, nanstd, reward_rows, weighted};
use crate::logps::{TokenLogps, check_1d, check_finite, host};

/// RLOO settings with TRL's `RLOOConfig` names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlooConfig {
    /// KL coefficient on the rewards (TRL default 0.05); 0 needs no reference model.
    pub beta: f64,
    /// Lower clipping bound of the sequence ratio.
    pub epsilon: f64,
    /// Upper clipping bound; `epsilon` when unset.
    pub epsilon_high: Option<f64>,
    /// Normalise the advantages over the generation batch (mean 0, std 1).
    pub normalize_advantages: bool,
    /// Clip the weighted rewards to `(min, max)` before the KL penalty.
    pub reward_clip_range: Option<(f64, f64)>,
    /// Completions per prompt (G, TRL default 2).
    pub num_generations: usize,
}

impl Default for RlooConfig {
    fn default() -> Self {
        Self {
            beta: 0.05,
            epsilon: 0.2,
            epsilon_high: None,
            normalize_advantages: false,
            reward_clip_range: None,
            num_generations: 2,
        }
    }
}

impl RlooConfig {
    /// Checks the settings' ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &'static str, value: String, expected: &str| {
            Err(PreferenceError::InvalidSetting {
                setting,
                value,
                expected: expected.into(),
            })
        };
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return bad("beta", self.beta.to_string(), "a finite value >= 0");
        }
        if !(self.epsilon.is_finite() && (0.0..1.0).contains(&self.epsilon)) {
            return bad("epsilon", self.epsilon.to_string(), "a value in [0, 1)");
        }
        if let Some(e) = self.epsilon_high
            && !(e.is_finite() && e >= 0.0)
        {
            return bad("epsilon_high", e.to_string(), "a finite value >= 0");
        }
        if let Some((lo, hi)) = self.reward_clip_range
            && !(lo.is_finite() && hi.is_finite() && lo <= hi)
        {
            return bad(
                "reward_clip_range",
                format!("({lo}, {hi})"),
                "finite (min, max) with min <= max",
            );
        }
        if self.num_generations < 2 {
            return bad(
                "num_generations",
                self.num_generations.to_string(),
                "at least 2 completions per prompt (leave-one-out needs two)",
            );
        }
        Ok(())
    }

    /// The upper clipping bound's epsilon.
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// Advantages of an RLOO generation batch and the metrics TRL logs with them.
#[derive(Debug, Clone, PartialEq)]
pub struct RlooAdvantages {
    /// One advantage per completion, `[prompts * G]`.
    pub advantages: Vec<f64>,
    /// `(TRL name, value)`: `kl` (beta > 0), `rewards/{name}/mean|std`, `reward`, `reward_std`,
    /// `frac_reward_zero_std` (share of prompts whose penalised rewards have zero spread).
    pub metrics: Vec<(String, f64)>,
    /// Whether every group's penalised rewards have zero spread (every advantage is then 0).
    pub all_zero_spread: bool,
}

/// TRL 1.16.0's RLOO advantages. `rewards[i][k]` as in [`crate::grpo_advantages`]; `kl`, needed
/// when `beta > 0`, is per completion the summed `old - ref` log-probs over its completion tokens
/// (`[prompts * G]`) with `kl_tokens` the batch's completion tokens (for the `kl` metric).
pub fn rloo_advantages(
    config: &RlooConfig,
    rewards: &[Vec<Option<f64>>],
    names: &[String],
    weights: &[f64],
    kl: Option<(&[f64], f64)>,
) -> Result<RlooAdvantages> {
    config.validate()?;
    let g = config.num_generations;
    let rpf = reward_rows(rewards, names, weights, g)?;
    let n = rpf.len();
    let unscorable: Vec<bool> = rpf.iter().map(|r| r.iter().all(|x| x.is_nan())).collect();
    let summed: Vec<f64> = rpf
        .iter()
        .zip(&unscorable)
        .map(|(r, &u)| if u { f64::NAN } else { weighted(r, weights) })
        .collect();
    let mut r: Vec<f64> = match config.reward_clip_range {
        Some((lo, hi)) => summed.iter().map(|x| x.clamp(lo, hi)).collect(),
        None => summed.clone(),
    };
    let mut metrics = Vec::new();
    if config.beta != 0.0 {
        let (kl, tokens) = kl.ok_or_else(|| PreferenceError::MissingInput {
            input: "kl",
            needed_by: format!("beta = {}", config.beta),
        })?;
        if kl.len() != n {
            return Err(PreferenceError::Shape {
                input: "kl",
                got: format!("[{}]", kl.len()),
                expected: format!("[{n}] (one KL sum per completion)"),
            });
        }
        check_finite("kl", kl)?;
        r.iter_mut()
            .zip(kl)
            .for_each(|(x, k)| *x -= config.beta * k);
        metrics.push(("kl".into(), kl.iter().sum::<f64>() / tokens.max(1.0)));
    }
    let mut advantages = Vec::with_capacity(n);
    let mut zero_groups = 0;
    for grp in r.chunks(g) {
        if is_zero(nanstd(grp)) {
            zero_groups += 1;
        }
        let count = grp.iter().filter(|x| !x.is_nan()).count() as f64;
        let sum: f64 = grp.iter().filter(|x| !x.is_nan()).sum();
        for &x in grp {
            advantages.push(x - (sum - x) / (count - 1.0));
        }
    }
    if config.normalize_advantages {
        let mean = nanmean(advantages.iter().copied());
        let std = nanstd(&advantages);
        advantages
            .iter_mut()
            .for_each(|a| *a = (*a - mean) / (std + 1e-4));
    }
    advantages
        .iter_mut()
        .filter(|a| a.is_nan())
        .for_each(|a| *a = 0.0);
    for (f, name) in names.iter().enumerate() {
        let col: Vec<f64> = rpf.iter().map(|r| r[f]).collect();
        metrics.push((format!("rewards/{name}/mean"), nanmean(col.iter().copied())));
        metrics.push((format!("rewards/{name}/std"), nanstd(&col)));
    }
    metrics.push(("reward".into(), nanmean(summed.iter().copied())));
    metrics.push(("reward_std".into(), nanstd(&summed)));
    let groups = n / g;
    metrics.push((
        "frac_reward_zero_std".into(),
        zero_groups as f64 / groups as f64,
    ));
    Ok(RlooAdvantages {
        advantages,
        metrics,
        all_zero_spread: zero_groups == groups,
    })
}

/// The inputs of [`rloo_loss`] for one micro-batch of `batch` completions.
#[derive(Debug, Clone)]
pub struct RlooInputs {
    /// The policy's per-token log-probs with the completion mask, `[batch, seq]`.
    pub policy: TokenLogps,
    /// Summed completion log-probs of the policy that generated them, `[batch]`.
    pub old_logps: Tensor<1>,
    /// Per-token entropies, `[batch, seq]`, for the `entropy` metric.
    pub entropies: Option<Tensor<2>>,
    /// Advantages, `[batch]`.
    pub advantages: Tensor<1>,
}

/// The loss and the metrics TRL logs from it.
#[derive(Debug, Clone)]
pub struct RlooOutput {
    /// The loss (mean over sequences), `[1]`; TRL's trainer divides it for accumulation.
    pub loss: Tensor<1>,
    /// `(TRL name, value)`: `entropy` (entropies given), `clip_ratio/low_mean`, `low_min`,
    /// `high_mean`, `high_max`, `region_mean` (over sequences).
    pub metrics: Vec<(String, f64)>,
}

/// TRL 1.16.0's RLOO loss (`_compute_loss`): with `r = exp(l - l_old)` on summed completion
/// log-probs, the mean over sequences of `-min(r A, clip(r, 1 - eps, 1 + eps_high) A)`.
pub fn rloo_loss(config: &RlooConfig, inputs: &RlooInputs) -> Result<RlooOutput> {
    config.validate()?;
    let (mask, [b, t]) = inputs.policy.check("policy")?;
    let logps_h = host(&inputs.policy.logps, "policy")?;
    let old = check_1d(&inputs.old_logps, "old_logps", Some(b))?;
    let adv = check_1d(&inputs.advantages, "advantages", Some(b))?;
    let l = inputs
        .policy
        .logps
        .clone()
        .mul(inputs.policy.mask.clone())
        .sum_dim(1)
        .squeeze_dim::<1>(1);
    let ratio = l.sub(inputs.old_logps.clone().detach()).exp();
    let (eps_lo, eps_hi) = (config.epsilon, config.epsilon_high());
    let a = inputs.advantages.clone().detach();
    let clipped = ratio.clone().clamp(1.0 - eps_lo, 1.0 + eps_hi);
    let loss = ratio
        .mul(a.clone())
        .min_pair(clipped.mul(a))
        .neg()
        .mean()
        .reshape([1]);
    let mut metrics = Vec::new();
    let active: f64 = mask.iter().sum();
    if let Some(e) = &inputs.entropies {
        if e.dims() != [b, t] {
            return Err(PreferenceError::Shape {
                input: "entropies",
                got: format!("{:?}", e.dims()),
                expected: format!("{:?} (as the policy's log-probs)", [b, t]),
            });
        }
        let e = host(e, "entropies")?;
        check_finite("entropies", &e)?;
        let s: f64 = e.iter().zip(&mask).map(|(x, m)| x * m).sum();
        metrics.push(("entropy".into(), s / active.max(1.0)));
    }
    let ratio_h: Vec<f64> = (0..b)
        .map(|r| {
            let s: f64 = (0..t).map(|j| logps_h[r * t + j] * mask[r * t + j]).sum();
            (s - old[r]).exp()
        })
        .collect();
    let low: Vec<f64> = (0..b)
        .map(|i| f64::from(u8::from(ratio_h[i] < 1.0 - eps_lo && adv[i] < 0.0)))
        .collect();
    let high: Vec<f64> = (0..b)
        .map(|i| f64::from(u8::from(ratio_h[i] > 1.0 + eps_hi && adv[i] > 0.0)))
        .collect();
    let region: Vec<f64> = low.iter().zip(&high).map(|(l, h)| l.max(*h)).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let fold = |v: &[f64], f: fn(f64, f64) -> f64| v.iter().copied().reduce(f).unwrap_or(f64::NAN);
    metrics.push(("clip_ratio/low_mean".into(), mean(&low)));
    metrics.push(("clip_ratio/low_min".into(), fold(&low, f64::min)));
    metrics.push(("clip_ratio/high_mean".into(), mean(&high)));
    metrics.push(("clip_ratio/high_max".into(), fold(&high, f64::max)));
    metrics.push(("clip_ratio/region_mean".into(), mean(&region)));
    Ok(RlooOutput { loss, metrics })
}
