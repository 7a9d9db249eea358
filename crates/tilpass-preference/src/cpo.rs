//! CPO, SimPO, CPO-SimPO and AlphaPO (TRL's experimental `CPOTrainer` loss): reference-free
//! preference losses on the policy's own log-probs, plus `cpo_alpha` times the chosen NLL.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, relu};
use serde::{Deserialize, Serialize};

use crate::dpo::{finite, non_negative, positive, smoothing};
use crate::error::{PreferenceError, Result};
use crate::logps::{check_1d, check_scalar, mean};

/// TRL's CPO `loss_type`. With d the margin of the (AlphaPO-shaped) log-probs, l_c - l_r:
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CpoLossType {
    /// -(1-eps) log sig(b d) - eps log sig(-b d) on summed log-probs (the default).
    #[default]
    Sigmoid,
    /// relu(1 - b d) on summed log-probs (label smoothing ignored).
    Hinge,
    /// (d - 1/(2b))^2 on average log-probs (label smoothing ignored).
    Ipo,
    /// The sigmoid loss of d - gamma/b on average log-probs.
    Simpo,
}

impl CpoLossType {
    /// Whether TRL feeds this loss average (per-token) log-probs rather than sums.
    pub fn uses_average_logps(self) -> bool {
        matches!(self, Self::Ipo | Self::Simpo)
    }
}

/// The loss settings of TRL's `CPOConfig` (names and defaults as TRL 1.16.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpoConfig {
    /// b. Default 0.1; must be > 0 (SimPO papers use 2.0-2.5).
    pub beta: f64,
    /// eps of the sigmoid and simpo losses, in [0, 0.5). Default 0.
    pub label_smoothing: f64,
    /// The loss. Default `sigmoid`.
    pub loss_type: CpoLossType,
    /// Weight of the chosen NLL term. Default 1.0; 0 gives pure SimPO.
    pub cpo_alpha: f64,
    /// SimPO's target margin gamma. Default 0.5.
    pub simpo_gamma: f64,
    /// AlphaPO's alpha: each log-prob l becomes (1 - e^{-alpha l}) / alpha; 0 (default) keeps l.
    pub alpha: f64,
}

impl Default for CpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            label_smoothing: 0.0,
            loss_type: CpoLossType::Sigmoid,
            cpo_alpha: 1.0,
            simpo_gamma: 0.5,
            alpha: 0.0,
        }
    }
}

impl CpoConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        positive("beta", self.beta)?;
        smoothing(self.label_smoothing)?;
        non_negative("cpo_alpha", self.cpo_alpha)?;
        finite("simpo_gamma", self.simpo_gamma)?;
        finite("alpha", self.alpha)
    }
}

/// The inputs of [`cpo_loss`] for a batch of `batch` pairs.
#[derive(Debug, Clone)]
pub struct CpoInputs {
    /// Policy log-probs of the chosen completions, `[batch]`: summed for sigmoid / hinge,
    /// averaged per token for ipo / simpo ([`CpoLossType::uses_average_logps`]).
    pub chosen_logps: Tensor<1>,
    /// Policy log-probs of the rejected completions, `[batch]`, reduced alike.
    pub rejected_logps: Tensor<1>,
    /// Token-mean NLL of the chosen completions (completion tokens only), `[1]`; required unless
    /// `cpo_alpha` is 0.
    pub nll_loss: Option<Tensor<1>>,
}

/// The metrics TRL's `CPOTrainer` logs from the loss inputs (`logits/*` belong to the trainer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpoMetrics {
    /// `rewards/chosen`: mean b r_c (r = l, or AlphaPO's shaped reward).
    pub rewards_chosen: f64,
    /// `rewards/rejected`: mean b r_r.
    pub rewards_rejected: f64,
    /// `rewards/accuracies`: share of pairs with b r_c > b r_r.
    pub rewards_accuracies: f64,
    /// `rewards/margins`: mean b (r_c - r_r).
    pub rewards_margins: f64,
    /// `logps/rejected`: mean l_r.
    pub logps_rejected: f64,
    /// `logps/chosen`: mean l_c.
    pub logps_chosen: f64,
    /// `nll_loss`: the NLL term (0 when `cpo_alpha` is 0).
    pub nll_loss: f64,
}

impl CpoMetrics {
    /// `(TRL name, value)` pairs.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("rewards/chosen", self.rewards_chosen),
            ("rewards/rejected", self.rewards_rejected),
            ("rewards/accuracies", self.rewards_accuracies),
            ("rewards/margins", self.rewards_margins),
            ("logps/rejected", self.logps_rejected),
            ("logps/chosen", self.logps_chosen),
            ("nll_loss", self.nll_loss),
        ]
    }
}

/// The loss and its metrics.
#[derive(Debug, Clone)]
pub struct CpoOutput {
    /// mean(L) + cpo_alpha NLL, `[1]`, differentiable w.r.t. the log-probs and the NLL term.
    pub loss: Tensor<1>,
    /// The logged metrics.
    pub metrics: CpoMetrics,
}

/// TRL 1.16.0's CPO / SimPO / AlphaPO loss.
pub fn cpo_loss(config: &CpoConfig, inputs: &CpoInputs) -> Result<CpoOutput> {
    config.validate()?;
    let c = check_1d(&inputs.chosen_logps, "chosen_logps", None)?;
    let n = c.len();
    let r = check_1d(&inputs.rejected_logps, "rejected_logps", Some(n))?;
    let nll = if config.cpo_alpha == 0.0 {
        None
    } else {
        let t = inputs
            .nll_loss
            .as_ref()
            .ok_or_else(|| PreferenceError::MissingInput {
                input: "nll_loss",
                needed_by: format!("cpo_alpha = {} (0 drops the NLL term)", config.cpo_alpha),
            })?;
        Some((t.clone(), check_scalar(t, "nll_loss")?))
    };
    let (beta, eps, alpha) = (config.beta, config.label_smoothing, config.alpha);
    // AlphaPO: r = (1 - p^{-alpha}) / alpha with p = e^l.
    let shape = |l: Tensor<1>| {
        if alpha != 0.0 {
            l.mul_scalar(-alpha)
                .exp()
                .neg()
                .add_scalar(1.0)
                .div_scalar(alpha)
        } else {
            l
        }
    };
    let shape_host = |l: f64| {
        if alpha != 0.0 {
            (1.0 - (-alpha * l).exp()) / alpha
        } else {
            l
        }
    };
    let logits = shape(inputs.chosen_logps.clone()).sub(shape(inputs.rejected_logps.clone()));
    let sigmoid_loss = |d: Tensor<1>| {
        log_sigmoid(d.clone().mul_scalar(beta))
            .mul_scalar(-(1.0 - eps))
            .sub(log_sigmoid(d.mul_scalar(-beta)).mul_scalar(eps))
    };
    let losses = match config.loss_type {
        CpoLossType::Simpo => sigmoid_loss(logits.sub_scalar(config.simpo_gamma / beta)),
        CpoLossType::Sigmoid => sigmoid_loss(logits),
        CpoLossType::Hinge => relu(logits.mul_scalar(-beta).add_scalar(1.0)),
        CpoLossType::Ipo => {
            let d = logits.sub_scalar(1.0 / (2.0 * beta));
            d.clone().mul(d)
        }
    };
    let mut loss = losses.mean();
    let mut nll_value = 0.0;
    if let Some((t, v)) = nll {
        loss = loss.add(t.mul_scalar(config.cpo_alpha));
        nll_value = v;
    }

    let rc: Vec<f64> = c.iter().map(|&x| beta * shape_host(x)).collect();
    let rr: Vec<f64> = r.iter().map(|&x| beta * shape_host(x)).collect();
    if let Some(i) = rc.iter().chain(&rr).position(|v| !v.is_finite()) {
        let (input, index, value) = if i < n {
            ("chosen_logps", i, c[i])
        } else {
            ("rejected_logps", i - n, r[i - n])
        };
        return Err(PreferenceError::BadValue {
            input,
            index,
            value,
            expected: "log-probs whose AlphaPO reward (1 - e^{-alpha l}) / alpha is finite",
        });
    }
    let metrics = CpoMetrics {
        rewards_chosen: mean(&rc),
        rewards_rejected: mean(&rr),
        rewards_accuracies: rc.iter().zip(&rr).filter(|(a, b)| a > b).count() as f64 / n as f64,
        rewards_margins: mean(&rc.iter().zip(&rr).map(|(a, b)| a - b).collect::<Vec<_>>()),
        logps_rejected: mean(&r),
        logps_chosen: mean(&c),
        nll_loss: nll_value,
    };
    Ok(CpoOutput { loss, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_trls() {
        let c: CpoConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CpoConfig::default());
        assert_eq!(
            (
                c.beta,
                c.label_smoothing,
                c.cpo_alpha,
                c.simpo_gamma,
                c.alpha
            ),
            (0.1, 0.0, 1.0, 0.5, 0.0)
        );
        assert_eq!(c.loss_type, CpoLossType::Sigmoid);
        assert!(CpoLossType::Simpo.uses_average_logps() && CpoLossType::Ipo.uses_average_logps());
        assert!(
            !CpoLossType::Sigmoid.uses_average_logps() && !CpoLossType::Hinge.uses_average_logps()
        );
    }
}
