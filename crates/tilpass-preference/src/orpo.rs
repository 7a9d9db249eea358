//! ORPO (TRL's experimental `ORPOTrainer` loss): the chosen NLL minus beta times the mean log
//! sigmoid of the log odds ratio of average completion log-probs.

use burn::tensor::Tensor;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

use crate::dpo::positive;
use crate::error::{PreferenceError, Result};
use crate::logps::{check_1d, check_scalar, mean};

/// The loss settings of TRL's `ORPOConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrpoConfig {
    /// The weight of the odds-ratio term (the paper's lambda). Default 0.1; must be > 0.
    pub beta: f64,
}

impl Default for OrpoConfig {
    fn default() -> Self {
        Self { beta: 0.1 }
    }
}

impl OrpoConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        positive("beta", self.beta)
    }
}

/// The inputs of [`orpo_loss`] for a batch of `batch` pairs.
#[derive(Debug, Clone)]
pub struct OrpoInputs {
    /// **Average** policy log-prob per completion token of each chosen completion, `[batch]`
    /// ([`crate::average_logps`]); each must be < 0.
    pub chosen_logps: Tensor<1>,
    /// Average log-prob of each rejected completion, `[batch]`; each < 0.
    pub rejected_logps: Tensor<1>,
    /// The NLL term, `[1]`: TRL's token-mean cross-entropy over the whole chosen sequences,
    /// prompt tokens included (a quirk of TRL's ORPO).
    pub nll_loss: Tensor<1>,
}

/// The metrics TRL's `ORPOTrainer` logs from the loss inputs (`logits/*` belong to the trainer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrpoMetrics {
    /// `rewards/chosen`: mean of beta l_c.
    pub rewards_chosen: f64,
    /// `rewards/rejected`: mean of beta l_r.
    pub rewards_rejected: f64,
    /// `rewards/accuracies`: share of pairs with beta l_c > beta l_r.
    pub rewards_accuracies: f64,
    /// `rewards/margins`: mean of beta (l_c - l_r).
    pub rewards_margins: f64,
    /// `logps/rejected`: mean l_r.
    pub logps_rejected: f64,
    /// `logps/chosen`: mean l_c.
    pub logps_chosen: f64,
    /// `nll_loss`: the NLL term.
    pub nll_loss: f64,
    /// `log_odds_ratio`: mean log sigmoid(log odds).
    pub log_odds_ratio: f64,
    /// `log_odds_chosen`: mean log odds.
    pub log_odds_chosen: f64,
}

impl OrpoMetrics {
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
            ("log_odds_ratio", self.log_odds_ratio),
            ("log_odds_chosen", self.log_odds_chosen),
        ]
    }
}

/// The loss and its metrics.
#[derive(Debug, Clone)]
pub struct OrpoOutput {
    /// NLL - mean(beta log sigmoid(log odds)), `[1]`, differentiable w.r.t. the log-probs and
    /// the NLL term.
    pub loss: Tensor<1>,
    /// The logged metrics.
    pub metrics: OrpoMetrics,
}

const NEG_LN_2: f64 = -std::f64::consts::LN_2;

/// log(1 - e^x) for x < 0, on the host (TRL's branch at -ln 2).
fn log1mexp_host(x: f64) -> f64 {
    if x < NEG_LN_2 {
        (-x.exp()).ln_1p()
    } else {
        (-x.exp_m1()).ln()
    }
}

/// log(1 - e^x) for x < 0, `[batch]` (differentiable). Below -ln 2, log1p(-e^x); above,
/// log(tanh(-x/2)) + log1p(e^x) (= log(-expm1(x)), which burn lacks, without its cancellation
/// near 0). Both branches are finite for every x < 0.
fn log1mexp(x: Tensor<1>) -> Tensor<1> {
    let low = x.clone().exp().neg().log1p();
    let high = x
        .clone()
        .mul_scalar(-0.5)
        .tanh()
        .log()
        .add(x.clone().exp().log1p());
    high.mask_where(x.lower_elem(NEG_LN_2), low)
}

/// TRL 1.16.0's ORPO loss.
pub fn orpo_loss(config: &OrpoConfig, inputs: &OrpoInputs) -> Result<OrpoOutput> {
    config.validate()?;
    let c = check_1d(&inputs.chosen_logps, "chosen_logps", None)?;
    let n = c.len();
    let r = check_1d(&inputs.rejected_logps, "rejected_logps", Some(n))?;
    let nll = check_scalar(&inputs.nll_loss, "nll_loss")?;
    for (name, v) in [("chosen_logps", &c), ("rejected_logps", &r)] {
        if let Some(i) = v.iter().position(|&x| x >= 0.0) {
            return Err(PreferenceError::BadValue {
                input: name,
                index: i,
                value: v[i],
                expected: "average log-probs < 0 (the odds of a certain completion are infinite)",
            });
        }
    }
    let beta = config.beta;
    let lc = inputs.chosen_logps.clone();
    let lr = inputs.rejected_logps.clone();
    let log_odds = lc
        .clone()
        .sub(lr.clone())
        .sub(log1mexp(lc).sub(log1mexp(lr)));
    let ratio = log_sigmoid(log_odds);
    let loss = inputs.nll_loss.clone().sub(ratio.mul_scalar(beta).mean());

    let odds: Vec<f64> = c
        .iter()
        .zip(&r)
        .map(|(&a, &b)| (a - b) - (log1mexp_host(a) - log1mexp_host(b)))
        .collect();
    let log_sig = |z: f64| -> f64 {
        // log sigmoid(z) = -softplus(-z), stable on both sides.
        if z >= 0.0 {
            -(-z).exp().ln_1p()
        } else {
            z - z.exp().ln_1p()
        }
    };
    let rc: Vec<f64> = c.iter().map(|x| beta * x).collect();
    let rr: Vec<f64> = r.iter().map(|x| beta * x).collect();
    let metrics = OrpoMetrics {
        rewards_chosen: mean(&rc),
        rewards_rejected: mean(&rr),
        rewards_accuracies: rc.iter().zip(&rr).filter(|(a, b)| a > b).count() as f64 / n as f64,
        rewards_margins: mean(&rc.iter().zip(&rr).map(|(a, b)| a - b).collect::<Vec<_>>()),
        logps_rejected: mean(&r),
        logps_chosen: mean(&c),
        nll_loss: nll,
        log_odds_ratio: mean(&odds.iter().map(|&z| log_sig(z)).collect::<Vec<_>>()),
        log_odds_chosen: mean(&odds),
    };
    Ok(OrpoOutput { loss, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log1mexp_host_is_accurate_on_both_branches() {
        for x in [-1e-8f64, -1e-3, -0.5, -0.7, -2.0, -30.0] {
            // log(1 - e^x) from the series-free identity 1 - e^x = -expm1(x).
            let want = (-x.exp_m1()).ln();
            let got = log1mexp_host(x);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1.0),
                "{x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn defaults_are_trls() {
        assert_eq!(serde_json::from_str::<OrpoConfig>("{}").unwrap().beta, 0.1);
        assert!(serde_json::from_str::<OrpoConfig>(r#"{"lambda": 1}"#).is_err());
    }
}
