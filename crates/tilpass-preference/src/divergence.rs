//! f-divergence regularisers of f-DPO: the score each side of a pair gets from its log-ratio
//! u = l_policy - l_ref.

use burn::tensor::Tensor;
use burn::tensor::activation::log_sigmoid;
use serde::{Deserialize, Serialize};

/// TRL's `f_divergence_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FDivergence {
    /// s(u) = u: standard DPO (the default).
    #[default]
    ReverseKl,
    /// s(u) = 1 - e^{-u}.
    ForwardKl,
    /// s(u) = log 2 + log sigmoid(u).
    JsDivergence,
    /// s(u) = (e^{(a-1)u} - 1) / (a-1) with a = `f_alpha_divergence_coef`; u itself when
    /// |a - 1| < 1e-6. (a-1)u is clamped at 80 before the exponential, as TRL does in float32.
    AlphaDivergence,
}

impl FDivergence {
    /// TRL's name of the divergence.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReverseKl => "reverse_kl",
            Self::ForwardKl => "forward_kl",
            Self::JsDivergence => "js_divergence",
            Self::AlphaDivergence => "alpha_divergence",
        }
    }

    /// The score of log-ratios `u`, `[batch] -> [batch]` (differentiable).
    pub fn score(self, u: Tensor<1>, alpha_coef: f64) -> Tensor<1> {
        match self {
            Self::ReverseKl => u,
            Self::ForwardKl => u.neg().exp().neg().add_scalar(1.0),
            Self::JsDivergence => log_sigmoid(u).add_scalar(std::f64::consts::LN_2),
            Self::AlphaDivergence => {
                if (alpha_coef - 1.0).abs() < 1e-6 {
                    u
                } else {
                    let coef = 1.0 / (alpha_coef - 1.0);
                    u.mul_scalar(alpha_coef - 1.0)
                        .clamp_max(80.0)
                        .exp()
                        .sub_scalar(1.0)
                        .mul_scalar(coef)
                }
            }
        }
    }
}
