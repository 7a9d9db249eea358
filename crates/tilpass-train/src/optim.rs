//! AdamW with PyTorch's exact update (`torch.optim.AdamW`, single-tensor path) and HF's
//! global-norm gradient clipping, over named parameters (state survives parameters being
//! replaced between steps, and can be saved for resuming).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::tensor::{Gradients, Tensor};
use serde::{Deserialize, Serialize};
use tilpass_core::HostTensor;
use tilpass_peft::ParamMut;

/// AdamW hyper-parameters (PyTorch's defaults except `weight_decay`, which is HF's 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε (PyTorch: 1e-8; burn's own AdamW uses 1e-5).
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// First and second moments of one parameter, flattened.
#[derive(Debug, Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// The optimiser and its state.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// Steps taken (PyTorch's `step`, shared by all parameters here).
    pub step: u64,
    state: BTreeMap<String, Moments>,
}

/// The gradients of named parameters, flattened (`[numel]`, no autodiff).
pub type NamedGrads = Vec<(String, Tensor<1>)>;

fn flat_grad<const D: usize>(p: &Param<Tensor<D>>, grads: &Gradients) -> Option<Tensor<1>> {
    p.val().grad(grads).map(|g| {
        let n: usize = g.dims().iter().product();
        g.reshape([n])
    })
}

/// Collects the gradients of `params` from a backward pass (parameters without one are left
/// out).
pub fn collect_grads(params: &[(String, ParamMut<'_>)], grads: &Gradients) -> NamedGrads {
    params
        .iter()
        .filter_map(|(name, p)| {
            let g = match p {
                ParamMut::D1(p) => flat_grad(p, grads),
                ParamMut::D2(p) => flat_grad(p, grads),
            }?;
            Some((name.clone(), g))
        })
        .collect()
}

/// The global L2 norm of all gradients, `sqrt(Σ ‖g‖²)` (as `clip_grad_norm_` computes it).
pub fn global_norm(grads: &NamedGrads) -> f64 {
    grads
        .iter()
        .map(|(_, g)| {
            // Each parameter's norm in f32 as torch does, then the norm of the norms in f64.
            let sq: f32 = g.clone().square().sum().into_scalar::<f32>();
            f64::from(sq)
        })
        .sum::<f64>()
        .sqrt()
}

/// HF / PyTorch `clip_grad_norm_(max_norm)`: scales every gradient by
/// `min(1, max_norm / (norm + 1e-6))`. Returns the norm before clipping.
pub fn clip_global_norm(grads: &mut NamedGrads, max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    for (_, g) in grads.iter_mut() {
        *g = g.clone().mul_scalar(coef);
    }
    norm
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            step: 0,
            state: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`, at learning rate `lr`.
    pub fn step(&mut self, params: &mut [(String, ParamMut<'_>)], grads: &NamedGrads, lr: f64) {
        self.begin_step();
        let by_name: BTreeMap<&str, &Tensor<1>> =
            grads.iter().map(|(n, g)| (n.as_str(), g)).collect();
        for (name, p) in params.iter_mut() {
            let Some(g) = by_name.get(name.as_str()) else {
                continue;
            };
            match p {
                ParamMut::D1(p) => {
                    let decay = decays(name, 1);
                    apply(p, |v| self.update(name, v, g, lr, decay))
                }
                ParamMut::D2(p) => apply(p, |v| self.update(name, v, g, lr, true)),
            }
        }
    }

    /// Starts an optimiser step (PyTorch's `step += 1`); then call [`Self::update`] for each
    /// parameter. [`Self::step`] does both.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// The AdamW update of one parameter `name` (value and gradient flattened to `[numel]`,
    /// no autodiff) in the current step; returns the new value. `decay`: whether weight decay
    /// applies (see [`decays`]).
    pub fn update(
        &mut self,
        name: &str,
        value: Tensor<1>,
        grad: &Tensor<1>,
        lr: f64,
        decay: bool,
    ) -> Tensor<1> {
        let c = self.config;
        let step = self.step.max(1) as i32;
        let bc1 = 1.0 - c.beta1.powi(step);
        let bc2_sqrt = (1.0 - c.beta2.powi(step)).sqrt();
        let step_size = lr / bc1;
        let g = grad.clone();
        let st = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                m: g.zeros_like(),
                v: g.zeros_like(),
            });
        // exp_avg.lerp_(grad, 1 - β₁); exp_avg_sq.mul_(β₂).addcmul_(grad, grad, 1 - β₂)
        st.m = st.m.clone() + (g.clone() - st.m.clone()).mul_scalar(1.0 - c.beta1);
        st.v = st.v.clone().mul_scalar(c.beta2) + (g.clone() * g).mul_scalar(1.0 - c.beta2);
        let denom = st.v.clone().sqrt().div_scalar(bc2_sqrt).add_scalar(c.eps);
        let update = (st.m.clone() / denom).mul_scalar(step_size);
        let factor = if decay {
            1.0 - lr * c.weight_decay
        } else {
            1.0
        };
        value.mul_scalar(factor) - update
    }

    /// Names of the parameters with optimiser state, and their sizes.
    pub fn state_sizes(&self) -> BTreeMap<String, usize> {
        self.state
            .iter()
            .map(|(k, m)| (k.clone(), m.m.dims()[0]))
            .collect()
    }

    /// The optimiser state as host tensors (`m.<name>`, `v.<name>`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, HostTensor)> {
        let mut out = Vec::new();
        for (name, st) in &self.state {
            out.push((format!("m.{name}"), HostTensor::from_tensor(&st.m)));
            out.push((format!("v.{name}"), HostTensor::from_tensor(&st.v)));
        }
        out
    }

    /// Restores state written by [`Self::state_tensors`] (tensors on `device`).
    pub fn load_state(
        &mut self,
        step: u64,
        tensors: &[(String, HostTensor)],
        device: &burn::tensor::Device,
    ) -> tilpass_core::Result<()> {
        self.step = step;
        self.state.clear();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix("m.") else {
                continue;
            };
            let v = tensors
                .iter()
                .find(|(k, _)| k == &format!("v.{name}"))
                .map(|(_, v)| v.to_tensor::<1>(device))
                .transpose()?;
            if let Some(v) = v {
                self.state.insert(
                    name.to_string(),
                    Moments {
                        m: t.to_tensor(device)?,
                        v,
                    },
                );
            }
        }
        Ok(())
    }
}

/// Whether weight decay applies to a parameter of rank `rank` named `name`: HF's rule (no decay
/// on parameters whose name contains `bias`, nor on normalisation weights) read as "every
/// vector except DoRA magnitudes, and no matrix named `...bias...`" (T5's
/// `relative_attention_bias` tables, which `Trainer.get_decay_parameter_names` leaves out by
/// their name; tilpass's parameter paths for them, `encoder_bias` / `decoder_bias`, say `bias`
/// too).
pub fn decays(name: &str, rank: usize) -> bool {
    (rank >= 2 && !name.contains("bias")) || name.contains("magnitude")
}

fn apply<const D: usize>(p: &mut Param<Tensor<D>>, f: impl FnOnce(Tensor<1>) -> Tensor<1>) {
    let current = p.val().inner();
    let shape = current.dims();
    let numel: usize = shape.iter().product();
    let updated = f(current.reshape([numel])).inner().reshape(shape);
    *p = Param::from_tensor(Tensor::from_inner(updated).require_grad());
}
