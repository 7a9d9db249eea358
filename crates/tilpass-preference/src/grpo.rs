//! GRPO as TRL 1.16.0's `GRPOTrainer` computes it on given inputs: group advantages from
//! per-function rewards ([`grpo_advantages`], with `scale_rewards` and
//! `multi_objective_aggregation`) and the clipped policy loss with its optional KL term and the
//! four aggregations grpo / bnpo / dr_grpo / dapo ([`grpo_loss`]), with the metrics TRL logs.
//! Checked against TRL's own code (tests/fixtures/generate_grpo.py, tests/all/grpo_parity.rs).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{PreferenceError, Result};
use crate::logps::{TokenLogps, check_1d, check_finite, constant, host};

/// How advantages are scaled (`scale_rewards`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleRewards {
    /// Divide by the group's standard deviation (TRL's default).
    #[default]
    Group,
    /// Divide by the batch's standard deviation.
    Batch,
    /// Centre only (Dr. GRPO).
    None,
}

/// How several reward functions are combined (`multi_objective_aggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MultiObjectiveAggregation {
    /// Weighted sum, then the group advantage (TRL's default).
    #[default]
    SumThenNormalize,
    /// Z-score each function within its group, weighted sum, then normalise over the batch.
    NormalizeThenSum,
}

/// The loss aggregation (`loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrpoLossType {
    /// Mean over sequences of per-sequence token means.
    Grpo,
    /// Sum over the micro-batch's tokens / its active tokens.
    Bnpo,
    /// Sum / (batch * `max_completion_length`).
    DrGrpo,
    /// Sum / active tokens of the whole generation batch (TRL's default).
    #[default]
    Dapo,
}

/// GRPO settings with TRL's `GRPOConfig` names and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpoConfig {
    /// KL coefficient; 0 (default) needs no reference model.
    pub beta: f64,
    /// Lower clipping bound: ratios below `1 - epsilon` are clipped.
    pub epsilon: f64,
    /// Upper clipping bound (`1 + epsilon_high`); `epsilon` when unset (DAPO: 0.28).
    pub epsilon_high: Option<f64>,
    /// Loss aggregation.
    pub loss_type: GrpoLossType,
    /// Advantage scaling.
    pub scale_rewards: ScaleRewards,
    /// Combination of several reward functions.
    pub multi_objective_aggregation: MultiObjectiveAggregation,
    /// Multiply the k3 KL estimate by the importance ratio (TRL 1.16.0 default true).
    pub use_bias_correction_kl: bool,
    /// Completions per prompt (G).
    pub num_generations: usize,
    /// Most completion tokens (dr_grpo's constant).
    pub max_completion_length: usize,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.0,
            epsilon: 0.2,
            epsilon_high: None,
            loss_type: GrpoLossType::Dapo,
            scale_rewards: ScaleRewards::Group,
            multi_objective_aggregation: MultiObjectiveAggregation::SumThenNormalize,
            use_bias_correction_kl: true,
            num_generations: 8,
            max_completion_length: 512,
        }
    }
}

impl GrpoConfig {
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
        if self.num_generations < 2 {
            return bad(
                "num_generations",
                self.num_generations.to_string(),
                "at least 2 completions per prompt",
            );
        }
        if self.max_completion_length == 0 {
            return bad("max_completion_length", "0".into(), "at least 1");
        }
        Ok(())
    }

    /// The upper clipping bound's epsilon.
    pub fn epsilon_high(&self) -> f64 {
        self.epsilon_high.unwrap_or(self.epsilon)
    }
}

/// NaN-ignoring mean (NaN when every value is NaN), as `torch.nanmean`.
pub(crate) fn nanmean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .filter(|x| !x.is_nan())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// NaN-ignoring unbiased standard deviation (NaN with fewer than two values), as TRL's `nanstd`.
pub(crate) fn nanstd(v: &[f64]) -> f64 {
    let m = nanmean(v.iter().copied());
    let n = v.iter().filter(|x| !x.is_nan()).count();
    if n < 2 {
        return f64::NAN;
    }
    let var = nanmean(v.iter().map(|x| (x - m) * (x - m)));
    (var * n as f64 / (n - 1) as f64).sqrt()
}

/// NaN-ignoring weighted sum of one row (`nansum` of reward times weight).
pub(crate) fn weighted(row: &[f64], weights: &[f64]) -> f64 {
    row.iter()
        .zip(weights)
        .map(|(r, w)| r * w)
        .filter(|x| !x.is_nan())
        .sum()
}

/// `torch.isclose(std, 0)`: |std| <= 1e-8 (false for NaN).
pub(crate) fn is_zero(std: f64) -> bool {
    std.abs() <= 1e-8
}

/// Checks per-function rewards (`[n][functions]`, n a positive multiple of `g`, finite or
/// `None`) and weights; returns them with NaN for `None`.
pub(crate) fn reward_rows(
    rewards: &[Vec<Option<f64>>],
    names: &[String],
    weights: &[f64],
    g: usize,
) -> Result<Vec<Vec<f64>>> {
    let n = rewards.len();
    let k = names.len();
    if n == 0 || !n.is_multiple_of(g) {
        return Err(PreferenceError::Shape {
            input: "rewards",
            got: format!("[{n}]"),
            expected: format!("a positive multiple of num_generations = {g}"),
        });
    }
    if weights.len() != k || k == 0 {
        return Err(PreferenceError::Shape {
            input: "reward_weights",
            got: format!("[{}]", weights.len()),
            expected: format!("one weight per reward function ({k}, at least one)"),
        });
    }
    check_finite("reward_weights", weights)?;
    let mut rpf = Vec::with_capacity(n);
    for (i, row) in rewards.iter().enumerate() {
        if row.len() != k {
            return Err(PreferenceError::Shape {
                input: "rewards",
                got: format!("row {i} with {} values", row.len()),
                expected: format!("{k} (one per reward function)"),
            });
        }
        let row: Vec<f64> = row.iter().map(|r| r.unwrap_or(f64::NAN)).collect();
        if let Some(j) = row.iter().position(|r| r.is_infinite()) {
            return Err(PreferenceError::BadValue {
                input: "rewards",
                index: i * k + j,
                value: row[j],
                expected: "finite rewards (or None)",
            });
        }
        rpf.push(row);
    }
    Ok(rpf)
}

/// Advantages of a generation batch and the reward metrics TRL logs with them.
#[derive(Debug, Clone, PartialEq)]
pub struct GrpoAdvantages {
    /// One advantage per completion, `[prompts * G]` (0 for completions no function scored).
    pub advantages: Vec<f64>,
    /// `(TRL name, value)`: `rewards/{name}/mean|std` per function, `reward`, `reward_std`,
    /// `frac_reward_zero_std`. A value is NaN where TRL's is (e.g. the std of one value).
    pub metrics: Vec<(String, f64)>,
    /// Whether every completion's reward spread (the `std` the advantages use) is zero: the
    /// loss is then exactly 0 apart from the KL term (trl#3857).
    pub all_zero_spread: bool,
}

/// TRL 1.16.0's group advantages. `rewards[i][k]` is reward function `k`'s reward of completion
/// `i` (`[prompts * G][functions]`, completions grouped by prompt, G consecutive), `None` where the
/// function did not score it; `names` and `weights` are per function.
pub fn grpo_advantages(
    config: &GrpoConfig,
    rewards: &[Vec<Option<f64>>],
    names: &[String],
    weights: &[f64],
) -> Result<GrpoAdvantages> {
    let g = config.num_generations;
    if g == 0 {
        return Err(PreferenceError::InvalidSetting {
            setting: "num_generations",
            value: "0".into(),
            expected: "at least 1".into(),
        });
    }
    let rpf = reward_rows(rewards, names, weights, g)?;
    let n = rpf.len();
    let k = names.len();
    let unscorable: Vec<bool> = rpf.iter().map(|r| r.iter().all(|x| x.is_nan())).collect();
    let summed: Vec<f64> = rpf
        .iter()
        .zip(&unscorable)
        .map(|(r, &u)| if u { f64::NAN } else { weighted(r, weights) })
        .collect();
    let batch_std = |r: &[f64]| if r.len() > 1 { nanstd(r) } else { 0.0 };
    let (mut advantages, std_rewards) = match config.multi_objective_aggregation {
        MultiObjectiveAggregation::SumThenNormalize => {
            let mut adv = Vec::with_capacity(n);
            let mut stds = Vec::with_capacity(n);
            let bstd = batch_std(&summed);
            for grp in summed.chunks(g) {
                let mean = nanmean(grp.iter().copied());
                let std = match config.scale_rewards {
                    ScaleRewards::Group | ScaleRewards::None => {
                        if g > 1 {
                            nanstd(grp)
                        } else {
                            0.0
                        }
                    }
                    ScaleRewards::Batch => bstd,
                };
                for &r in grp {
                    let a = r - mean;
                    adv.push(if config.scale_rewards == ScaleRewards::None {
                        a
                    } else {
                        a / (std + 1e-4)
                    });
                    stds.push(std);
                }
            }
            (adv, stds)
        }
        MultiObjectiveAggregation::NormalizeThenSum => {
            let mut z = vec![vec![0.0; k]; n];
            for (gi, grp) in rpf.chunks(g).enumerate() {
                for f in 0..k {
                    let col: Vec<f64> = grp.iter().map(|r| r[f]).collect();
                    let mean = nanmean(col.iter().copied());
                    let std = if g > 1 { nanstd(&col) } else { 0.0 };
                    for (j, v) in col.iter().enumerate() {
                        z[gi * g + j][f] = (v - mean) / (std + 1e-4);
                    }
                }
            }
            let r: Vec<f64> = z
                .iter()
                .zip(&unscorable)
                .map(|(row, &u)| if u { f64::NAN } else { weighted(row, weights) })
                .collect();
            let std = batch_std(&r);
            let mean = nanmean(r.iter().copied());
            (
                r.iter().map(|x| (x - mean) / (std + 1e-4)).collect(),
                vec![std; n],
            )
        }
    };
    for a in &mut advantages {
        if a.is_nan() {
            *a = 0.0;
        }
    }
    let mut metrics = Vec::new();
    for (f, name) in names.iter().enumerate() {
        let col: Vec<f64> = rpf.iter().map(|r| r[f]).collect();
        metrics.push((format!("rewards/{name}/mean"), nanmean(col.iter().copied())));
        metrics.push((format!("rewards/{name}/std"), nanstd(&col)));
    }
    metrics.push(("reward".into(), nanmean(summed.iter().copied())));
    metrics.push(("reward_std".into(), nanstd(&summed)));
    let zero = std_rewards.iter().filter(|&&s| is_zero(s)).count();
    metrics.push(("frac_reward_zero_std".into(), zero as f64 / n as f64));
    Ok(GrpoAdvantages {
        advantages,
        metrics,
        all_zero_spread: zero == n,
    })
}

/// The inputs of [`grpo_loss`] for one micro-batch of `batch` completions.
#[derive(Debug, Clone)]
pub struct GrpoInputs {
    /// The policy's per-token log-probs with the completion mask (tokens after EOS and padding
    /// masked out), `[batch, seq]`.
    pub policy: TokenLogps,
    /// Per-token log-probs of the policy that generated the completions, `[batch, seq]`;
    /// `None` with one iteration per generation (the ratio is then 1: TRL detaches the policy's).
    pub old_logps: Option<Tensor<2>>,
    /// Reference per-token log-probs, `[batch, seq]` (needed when `beta > 0`).
    pub ref_logps: Option<Tensor<2>>,
    /// Per-token entropies of the policy, `[batch, seq]`, for the `entropy` metric.
    pub entropies: Option<Tensor<2>>,
    /// Advantages, `[batch]`.
    pub advantages: Tensor<1>,
    /// Active completion tokens of the whole generation batch (dapo's normaliser).
    pub num_items_in_batch: f64,
    /// Micro-batches accumulated per optimiser step (`current_gradient_accumulation_steps`).
    pub gradient_accumulation_steps: usize,
    /// Optimiser steps per generation (`steps_per_generation`).
    pub steps_per_generation: usize,
}

/// The loss and the metrics TRL logs from it.
#[derive(Debug, Clone)]
pub struct GrpoOutput {
    /// The loss as TRL back-propagates it (already divided for accumulation), `[1]`.
    pub loss: Tensor<1>,
    /// `(TRL name, value)`: `kl` (beta > 0), `entropy` (entropies given), `clip_ratio/low_mean`,
    /// `clip_ratio/high_mean`, `clip_ratio/region_mean`, `clip_ratio/low_min`,
    /// `clip_ratio/high_max`.
    pub metrics: Vec<(String, f64)>,
}

fn check_like(t: &Tensor<2>, name: &'static str, dims: [usize; 2]) -> Result<Vec<f64>> {
    if t.dims() != dims {
        return Err(PreferenceError::Shape {
            input: name,
            got: format!("{:?}", t.dims()),
            expected: format!("{dims:?} (as the policy's log-probs)"),
        });
    }
    let v = host(t, name)?;
    check_finite(name, &v)?;
    Ok(v)
}

/// TRL 1.16.0's GRPO loss (`_compute_loss`, token-level importance sampling): per token
/// `-min(r A, clip(r, 1 - eps, 1 + eps_high) A) + beta * k3` with `r = exp(logp - logp_old)`,
/// `k3 = exp(ref - logp) - (ref - logp) - 1` (times `r` with `use_bias_correction_kl`),
/// aggregated by `loss_type`.
pub fn grpo_loss(config: &GrpoConfig, inputs: &GrpoInputs) -> Result<GrpoOutput> {
    config.validate()?;
    let (mask, dims) = inputs.policy.check("policy")?;
    let [b, t] = dims;
    let logps_h = host(&inputs.policy.logps, "policy")?;
    let adv = check_1d(&inputs.advantages, "advantages", Some(b))?;
    if inputs.gradient_accumulation_steps == 0 || inputs.steps_per_generation == 0 {
        return Err(PreferenceError::InvalidSetting {
            setting: "gradient_accumulation_steps",
            value: format!(
                "{} (steps_per_generation {})",
                inputs.gradient_accumulation_steps, inputs.steps_per_generation
            ),
            expected: "both at least 1".into(),
        });
    }
    if !(inputs.num_items_in_batch.is_finite() && inputs.num_items_in_batch >= 0.0) {
        return Err(PreferenceError::InvalidSetting {
            setting: "num_items_in_batch",
            value: inputs.num_items_in_batch.to_string(),
            expected: "a finite count >= 0".into(),
        });
    }
    let logps = inputs.policy.logps.clone();
    let m = inputs.policy.mask.clone();
    let (old, old_h) = match &inputs.old_logps {
        Some(o) => (o.clone().detach(), check_like(o, "old_logps", dims)?),
        None => (logps.clone().detach(), logps_h.clone()),
    };
    let ratio = logps.clone().sub(old).exp();
    let ratio_h: Vec<f64> = logps_h
        .iter()
        .zip(&old_h)
        .map(|(l, o)| (l - o).exp())
        .collect();
    let a2 = inputs.advantages.clone().detach().unsqueeze_dim::<2>(1);
    let eps_lo = config.epsilon;
    let eps_hi = config.epsilon_high();
    let clipped = ratio.clone().clamp(1.0 - eps_lo, 1.0 + eps_hi);
    let l1 = ratio.clone().mul(a2.clone());
    let l2 = clipped.mul(a2);
    let mut per_token = l1.min_pair(l2).neg();
    let mut metrics = Vec::new();
    let active = mask.iter().sum::<f64>();
    let masked_mean = |v: &[f64]| -> f64 {
        v.iter().zip(&mask).map(|(x, m)| x * m).sum::<f64>() / active.max(1.0)
    };
    if config.beta != 0.0 {
        let r = inputs
            .ref_logps
            .as_ref()
            .ok_or_else(|| PreferenceError::MissingInput {
                input: "ref_logps",
                needed_by: format!("beta = {}", config.beta),
            })?;
        let ref_h = check_like(r, "ref_logps", dims)?;
        let d = r.clone().detach().sub(logps.clone());
        let mut kl = d.clone().exp().sub(d).sub_scalar(1.0);
        let mut kl_h: Vec<f64> = ref_h
            .iter()
            .zip(&logps_h)
            .map(|(r, l)| (r - l).exp() - (r - l) - 1.0)
            .collect();
        if config.use_bias_correction_kl {
            kl = kl.mul(ratio.clone());
            kl_h.iter_mut().zip(&ratio_h).for_each(|(k, r)| *k *= r);
        }
        let beta = constant(vec![config.beta], &kl.device(), kl.dtype()).unsqueeze_dim::<2>(1);
        per_token = per_token.add(kl.mul(beta));
        metrics.push(("kl".into(), masked_mean(&kl_h)));
    }
    if let Some(e) = &inputs.entropies {
        let e = check_like(e, "entropies", dims)?;
        metrics.push(("entropy".into(), masked_mean(&e)));
    }
    let ga = inputs.gradient_accumulation_steps as f64;
    let masked = per_token.mul(m.clone());
    // Divisors as tensors: a scalar operand may be rounded through float32 by a backend, which
    // float64 parity with TRL notices.
    let (device, dtype) = (masked.device(), masked.dtype());
    let divide = |x: Tensor<1>, d: f64| x.div(constant(vec![d], &device, dtype));
    let loss = match config.loss_type {
        GrpoLossType::Grpo => {
            let lens = m.sum_dim(1).clamp_min(1.0);
            divide(masked.sum_dim(1).div(lens).mean().reshape([1]), ga)
        }
        GrpoLossType::Bnpo => divide(masked.sum(), active.max(1.0) * ga),
        GrpoLossType::DrGrpo => {
            divide(masked.sum(), (b * config.max_completion_length) as f64 * ga)
        }
        GrpoLossType::Dapo => divide(
            masked.sum(),
            inputs.num_items_in_batch.max(1.0) * ga / inputs.steps_per_generation as f64,
        ),
    };
    let (mut low, mut high, mut region) = (vec![0.0; b * t], vec![0.0; b * t], vec![0.0; b * t]);
    for i in 0..b * t {
        let a = adv[i / t];
        let lo = ratio_h[i] < 1.0 - eps_lo && a < 0.0;
        let hi = ratio_h[i] > 1.0 + eps_hi && a > 0.0;
        low[i] = f64::from(u8::from(lo));
        high[i] = f64::from(u8::from(hi));
        region[i] = f64::from(u8::from(lo || hi));
    }
    let seq_mean = |v: &[f64]| -> Vec<f64> {
        (0..b)
            .map(|r| {
                let row = r * t..(r + 1) * t;
                let s: f64 = v[row.clone()]
                    .iter()
                    .zip(&mask[row.clone()])
                    .map(|(x, m)| x * m)
                    .sum();
                s / mask[row].iter().sum::<f64>()
            })
            .collect()
    };
    let nan_fold = |v: Vec<f64>, f: fn(f64, f64) -> f64| {
        v.into_iter()
            .filter(|x| !x.is_nan())
            .reduce(f)
            .unwrap_or(f64::NAN)
    };
    metrics.push(("clip_ratio/low_mean".into(), masked_mean(&low)));
    metrics.push(("clip_ratio/high_mean".into(), masked_mean(&high)));
    metrics.push(("clip_ratio/region_mean".into(), masked_mean(&region)));
    metrics.push((
        "clip_ratio/low_min".into(),
        nan_fold(seq_mean(&low), f64::min),
    ));
    metrics.push((
        "clip_ratio/high_max".into(),
        nan_fold(seq_mean(&high), f64::max),
    ));
    Ok(GrpoOutput { loss, metrics })
}

/// Generated completions cut after their first EOS token (kept), as TRL masks them: `generated`
/// is `[batch][max_new_tokens]` token ids as the sampler returned them (padding after EOS
/// included); the result holds each completion's kept ids, whose lengths give the completion
/// mask `[batch, max_new_tokens]` (1 up to and including the first EOS).
pub fn completions_after_eos(generated: &[Vec<u32>], eos_token_ids: &[u32]) -> Vec<Vec<u32>> {
    generated
        .iter()
        .map(
            |ids| match ids.iter().position(|t| eos_token_ids.contains(t)) {
                Some(i) => ids[..=i].to_vec(),
                None => ids.clone(),
            },
        )
        .collect()
}

/// TRL's `completions/*` metrics of a batch of completions (after [`completions_after_eos`]):
/// mean / min / max length, `clipped_ratio` (share whose last token is neither an EOS nor the
/// pad token: cut by the length limit) and the lengths of the terminated ones (0 when none
/// terminated). Empty when there are no completions.
pub fn completion_metrics(
    completions: &[Vec<u32>],
    eos_token_ids: &[u32],
    pad_token_id: u32,
) -> Vec<(String, f64)> {
    if completions.is_empty() {
        return Vec::new();
    }
    let lens: Vec<f64> = completions.iter().map(|c| c.len() as f64).collect();
    let truncated: Vec<bool> = completions
        .iter()
        .map(|c| {
            c.last()
                .is_none_or(|t| !eos_token_ids.contains(t) && *t != pad_token_id)
        })
        .collect();
    let mut term: Vec<f64> = lens
        .iter()
        .zip(&truncated)
        .filter(|(_, t)| !**t)
        .map(|(l, _)| *l)
        .collect();
    if term.is_empty() {
        term.push(0.0);
    }
    let stats = |v: &[f64]| {
        (
            v.iter().sum::<f64>() / v.len() as f64,
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (mean, min, max) = stats(&lens);
    let (tmean, tmin, tmax) = stats(&term);
    let clipped = truncated.iter().filter(|&&t| t).count() as f64 / lens.len() as f64;
    [
        ("completions/mean_length", mean),
        ("completions/min_length", min),
        ("completions/max_length", max),
        ("completions/clipped_ratio", clipped),
        ("completions/mean_terminated_length", tmean),
        ("completions/min_terminated_length", tmin),
        ("completions/max_terminated_length", tmax),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
