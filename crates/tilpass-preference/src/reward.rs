//! The Bradley-Terry reward-model loss (TRL's `RewardTrainer`): -log sigmoid(r_c - r_r - margin),
//! optionally plus a centring term that pulls rewards toward zero mean.

use burn::tensor::Tensor;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

use crate::dpo::non_negative;
use crate::error::Result;
use crate::logps::check_1d;

/// The loss settings of TRL's `RewardConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Coefficient of mean((r_c + r_r)^2) (Eisenstein et al., Eq. 2; TRL recommends 0.01).
    /// Default `None`: no centring.
    pub center_rewards_coefficient: Option<f64>,
}

impl RewardConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        match self.center_rewards_coefficient {
            Some(c) => non_negative("center_rewards_coefficient", c),
            None => Ok(()),
        }
    }
}

/// The inputs of [`reward_loss`] for a batch of `batch` pairs.
#[derive(Debug, Clone)]
pub struct RewardInputs {
    /// The reward model's score of each chosen sequence, `[batch]`.
    pub chosen_rewards: Tensor<1>,
    /// The score of each rejected sequence, `[batch]`.
    pub rejected_rewards: Tensor<1>,
    /// Per-pair margins (the dataset's optional `margin` column), `[batch]`.
    pub margin: Option<Tensor<1>>,
}

/// The metrics TRL's `RewardTrainer` logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardMetrics {
    /// `min_reward` over chosen and rejected.
    pub min_reward: f64,
    /// `mean_reward` over chosen and rejected.
    pub mean_reward: f64,
    /// `max_reward` over chosen and rejected.
    pub max_reward: f64,
    /// `accuracy`: share of pairs with r_c > r_r.
    pub accuracy: f64,
    /// `margin`: mean r_c - r_r.
    pub margin: f64,
}

impl RewardMetrics {
    /// `(TRL name, value)` pairs.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("min_reward", self.min_reward),
            ("mean_reward", self.mean_reward),
            ("max_reward", self.max_reward),
            ("accuracy", self.accuracy),
            ("margin", self.margin),
        ]
    }
}

/// The loss and its metrics.
#[derive(Debug, Clone)]
pub struct RewardOutput {
    /// The loss, `[1]`, differentiable w.r.t. the rewards.
    pub loss: Tensor<1>,
    /// The logged metrics.
    pub metrics: RewardMetrics,
}

/// TRL 1.16.0's reward-model loss.
pub fn reward_loss(config: &RewardConfig, inputs: &RewardInputs) -> Result<RewardOutput> {
    config.validate()?;
    let c = check_1d(&inputs.chosen_rewards, "chosen_rewards", None)?;
    let n = c.len();
    let r = check_1d(&inputs.rejected_rewards, "rejected_rewards", Some(n))?;
    let mut diff = inputs
        .chosen_rewards
        .clone()
        .sub(inputs.rejected_rewards.clone());
    if let Some(m) = &inputs.margin {
        check_1d(m, "margin", Some(n))?;
        diff = diff.sub(m.clone());
    }
    let mut loss = log_sigmoid(diff).mean().neg();
    if let Some(coef) = config.center_rewards_coefficient {
        let s = inputs
            .chosen_rewards
            .clone()
            .add(inputs.rejected_rewards.clone());
        loss = loss.add(s.clone().mul(s).mean().mul_scalar(coef));
    }
    let all: Vec<f64> = c.iter().chain(&r).copied().collect();
    let metrics = RewardMetrics {
        min_reward: all.iter().copied().fold(f64::INFINITY, f64::min),
        mean_reward: all.iter().sum::<f64>() / all.len() as f64,
        max_reward: all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        accuracy: c.iter().zip(&r).filter(|(a, b)| a > b).count() as f64 / n as f64,
        margin: c.iter().zip(&r).map(|(a, b)| a - b).sum::<f64>() / n as f64,
    };
    Ok(RewardOutput { loss, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_trls() {
        let c: RewardConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c.center_rewards_coefficient, None);
        c.validate().unwrap();
        let c: RewardConfig =
            serde_json::from_str(r#"{"center_rewards_coefficient": 0.01}"#).unwrap();
        c.validate().unwrap();
    }
}
