//! KTO (TRL's `KTOTrainer` loss): unpaired desirable / undesirable completions against a KL
//! reference point estimated on mismatched (prompt, completion) pairs, with class weights; and
//! APO-zero's unpaired variant.

use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use serde::{Deserialize, Serialize};

use crate::dpo::{non_negative, positive};
use crate::error::{PreferenceError, Result};
use crate::logps::{check_1d, constant};

/// TRL's KTO `loss_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KtoLossType {
    /// Desirable 1 - sig(b (u - z)), undesirable 1 - sig(b (z - u)), z the KL estimate (default).
    #[default]
    Kto,
    /// Desirable 1 - sig(b u), undesirable sig(b u); no KL term.
    ApoZeroUnpaired,
}

/// The loss settings of TRL's `KTOConfig` (names and defaults as TRL 1.16.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KtoConfig {
    /// The loss. Default `kto`.
    pub loss_type: KtoLossType,
    /// b. Default 0.1; must be > 0.
    pub beta: f64,
    /// lambda_D, the weight of desirable examples. Default 1.0.
    pub desirable_weight: f64,
    /// lambda_U, the weight of undesirable examples. Default 1.0.
    pub undesirable_weight: f64,
}

impl Default for KtoConfig {
    fn default() -> Self {
        Self {
            loss_type: KtoLossType::Kto,
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.0,
        }
    }
}

impl KtoConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        positive("beta", self.beta)?;
        non_negative("desirable_weight", self.desirable_weight)?;
        non_negative("undesirable_weight", self.undesirable_weight)
    }

    /// Whether the loss uses the KL reference point (and so needs mismatched pairs and batches of
    /// more than one example).
    pub fn uses_kl(&self) -> bool {
        self.loss_type == KtoLossType::Kto
    }
}

/// The inputs of [`kto_loss`] for a batch of `batch` examples.
#[derive(Debug, Clone)]
pub struct KtoInputs {
    /// Policy log-probs of each completion given its prompt, `[batch]` (summed).
    pub policy_logps: Tensor<1>,
    /// Reference log-probs of the same, `[batch]` (detached by the loss).
    pub ref_logps: Tensor<1>,
    /// `true` for a desirable completion, one per example.
    pub labels: Vec<bool>,
    /// Policy log-probs of the mismatched pairs ([`kl_rotation`]), `[batch]`; required for `kto`.
    pub kl_policy_logps: Option<Tensor<1>>,
    /// Reference log-probs of the mismatched pairs, `[batch]`; required for `kto`.
    pub kl_ref_logps: Option<Tensor<1>>,
}

/// The metrics TRL's `KTOTrainer` logs from the loss inputs; a class absent from the batch has
/// no value (TRL logs nothing for it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KtoMetrics {
    /// `kl`: the KL estimate z (0 without a KL term).
    pub kl: f64,
    /// `rewards/chosen`: mean b u over desirable examples.
    pub rewards_chosen: Option<f64>,
    /// `logps/chosen`: mean policy log-prob of desirable examples.
    pub logps_chosen: Option<f64>,
    /// `rewards/rejected`: mean b u over undesirable examples.
    pub rewards_rejected: Option<f64>,
    /// `logps/rejected`: mean policy log-prob of undesirable examples.
    pub logps_rejected: Option<f64>,
    /// `rewards/margins`: rewards/chosen - rewards/rejected, when both classes are present.
    pub rewards_margins: Option<f64>,
}

impl KtoMetrics {
    /// `(TRL name, value)` pairs of the metrics present.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        let mut out = vec![("kl", self.kl)];
        for (k, v) in [
            ("rewards/chosen", self.rewards_chosen),
            ("logps/chosen", self.logps_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("logps/rejected", self.logps_rejected),
            ("rewards/margins", self.rewards_margins),
        ] {
            if let Some(v) = v {
                out.push((k, v));
            }
        }
        out
    }
}

/// The loss and its metrics.
#[derive(Debug, Clone)]
pub struct KtoOutput {
    /// Mean over all examples of lambda_D L_D / lambda_U L_U, `[1]`, differentiable w.r.t. the
    /// policy log-probs.
    pub loss: Tensor<1>,
    /// The logged metrics.
    pub metrics: KtoMetrics,
}

/// The mismatched completions KTO's KL term is estimated on: completions rotated by one within
/// a batch, (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}), as TRL's dataset map pairs them per
/// `per_device_train_batch_size` batch. Returns the completion paired with each prompt.
pub fn kl_rotation<T: Clone>(completions: &[T]) -> Vec<T> {
    match completions.split_last() {
        None => Vec::new(),
        Some((last, rest)) => std::iter::once(last.clone())
            .chain(rest.iter().cloned())
            .collect(),
    }
}

/// TRL 1.16.0's KTO loss. The KL estimate z = max(0, mean(kl_policy - kl_ref)) is detached.
pub fn kto_loss(config: &KtoConfig, inputs: &KtoInputs) -> Result<KtoOutput> {
    config.validate()?;
    let p = check_1d(&inputs.policy_logps, "policy_logps", None)?;
    let n = p.len();
    let r = check_1d(&inputs.ref_logps, "ref_logps", Some(n))?;
    if inputs.labels.len() != n {
        return Err(PreferenceError::Shape {
            input: "labels",
            got: format!("{} labels", inputs.labels.len()),
            expected: format!("{n} (one per example)"),
        });
    }
    let kl = if config.uses_kl() {
        if n < 2 {
            return Err(PreferenceError::Shape {
                input: "policy_logps",
                got: format!("[{n}]"),
                expected: "a batch of more than one example: the KL term pairs each prompt with another example's completion (per_device_train_batch_size > 1)".into(),
            });
        }
        let missing = |input| PreferenceError::MissingInput {
            input,
            needed_by: "loss_type `kto` (the KL reference point)".into(),
        };
        let kp = inputs
            .kl_policy_logps
            .as_ref()
            .ok_or_else(|| missing("kl_policy_logps"))?;
        let kr = inputs
            .kl_ref_logps
            .as_ref()
            .ok_or_else(|| missing("kl_ref_logps"))?;
        let kp = check_1d(kp, "kl_policy_logps", Some(n))?;
        let kr = check_1d(kr, "kl_ref_logps", Some(n))?;
        (kp.iter().zip(&kr).map(|(a, b)| a - b).sum::<f64>() / n as f64).max(0.0)
    } else {
        0.0
    };

    let beta = config.beta;
    let device = inputs.policy_logps.device();
    let dtype = inputs.policy_logps.dtype();
    // Desirable: 1 - sig(b (u - z)); undesirable: 1 - sig(b (z - u)) = 1 - sig(-b (u - z)).
    // apo_zero_unpaired is the same with z = 0 (sig(b u) = 1 - sig(-b u)).
    let sign = constant(
        inputs
            .labels
            .iter()
            .map(|&d| if d { beta } else { -beta })
            .collect(),
        &device,
        dtype,
    );
    let weight = constant(
        inputs
            .labels
            .iter()
            .map(|&d| {
                if d {
                    config.desirable_weight
                } else {
                    config.undesirable_weight
                }
            })
            .collect(),
        &device,
        dtype,
    );
    let u = inputs
        .policy_logps
        .clone()
        .sub(inputs.ref_logps.clone().detach());
    let losses = sigmoid(u.sub_scalar(kl).mul(sign))
        .neg()
        .add_scalar(1.0)
        .mul(weight);
    let loss = losses.mean();

    let class = |want: bool| -> Option<(f64, f64)> {
        let idx: Vec<usize> = (0..n).filter(|&i| inputs.labels[i] == want).collect();
        if idx.is_empty() {
            return None;
        }
        let k = idx.len() as f64;
        let rewards = idx.iter().map(|&i| beta * (p[i] - r[i])).sum::<f64>() / k;
        let logps = idx.iter().map(|&i| p[i]).sum::<f64>() / k;
        Some((rewards, logps))
    };
    let chosen = class(true);
    let rejected = class(false);
    let metrics = KtoMetrics {
        kl,
        rewards_chosen: chosen.map(|c| c.0),
        logps_chosen: chosen.map(|c| c.1),
        rewards_rejected: rejected.map(|c| c.0),
        logps_rejected: rejected.map(|c| c.1),
        rewards_margins: chosen.zip(rejected).map(|(c, r)| c.0 - r.0),
    };
    Ok(KtoOutput { loss, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_rotation_pairs_each_prompt_with_the_previous_completion() {
        // TRL: (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}).
        assert_eq!(kl_rotation(&["y1", "y2", "y3"]), ["y3", "y1", "y2"]);
        assert_eq!(kl_rotation(&[1]), [1]);
        assert!(kl_rotation::<u8>(&[]).is_empty());
    }

    #[test]
    fn defaults_are_trls() {
        let c: KtoConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, KtoConfig::default());
        assert_eq!(
            (c.beta, c.desirable_weight, c.undesirable_weight),
            (0.1, 1.0, 1.0)
        );
        assert_eq!(c.loss_type, KtoLossType::Kto);
        assert!(c.uses_kl());
    }
}
