//! Normalisation layers: RMS norm (Llama, T5), layer norm with and without parameters.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};
use tilpass_core::Checkpoint;

use crate::error::Result;

/// RMS normalisation as HF Llama computes it: `w * x / sqrt(mean(x²) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// Epsilon inside the square root.
    pub eps: f64,
}

impl RmsNorm {
    /// Loads `{prefix}.weight`.
    pub fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(ckpt.tensor(&format!("{prefix}.weight"), [dim], device)?),
            eps,
        })
    }

    /// Normalises the last dimension of `[.., hidden]` (on Flex outside autodiff in one host
    /// pass, [`crate::decoder_kernels::rms_norm`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if crate::decoder_kernels::applies(&x) {
            return crate::decoder_kernels::rms_norm(x, self.weight.val(), self.eps);
        }
        let var = x.clone().square().mean_dim(D - 1);
        let normed = x * (var.add_scalar(self.eps).sqrt().recip());
        normed * self.weight.val().unsqueeze::<D>()
    }

    /// [`RmsNorm::forward`], but under autodiff on Flex with a frozen weight as one recorded
    /// operation (`train_kernels::rms_norm`, with the `flex` feature: row statistics in f64, closer to the exact
    /// values and gradient than the composed ops). The Llama-family decoders and T5 train
    /// through it.
    pub fn forward_fused<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        #[cfg(feature = "flex")]
        if !crate::decoder_kernels::applies(&x)
            && let Some(y) = crate::train_kernels::rms_norm(&x, &self.weight.val(), self.eps)
        {
            return y;
        }
        self.forward(x)
    }
}

/// Layer normalisation with weight and bias (biased variance, as PyTorch).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[hidden]`.
    pub weight: Param<Tensor<1>>,
    /// Shift, `[hidden]`.
    pub bias: Param<Tensor<1>>,
    /// Epsilon.
    pub eps: f64,
}

impl LayerNorm {
    /// Loads `{prefix}.weight` and `{prefix}.bias`.
    pub fn load(
        ckpt: &Checkpoint,
        prefix: &str,
        dim: usize,
        eps: f64,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: Param::from_tensor(ckpt.tensor(&format!("{prefix}.weight"), [dim], device)?),
            bias: Param::from_tensor(ckpt.tensor(&format!("{prefix}.bias"), [dim], device)?),
            eps,
        })
    }

    /// Normalises the last dimension of `[.., hidden]` (burn's fused `layer_norm`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

/// Layer normalisation without weight and bias over the last dimension (PyTorch's
/// `LayerNorm(elementwise_affine=False)`).
pub fn plain_layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let d = x.dims()[D - 1];
    let ones = Tensor::<1>::ones([d], &x.device());
    burn::tensor::module::layer_norm(x, ones, None, eps)
}
