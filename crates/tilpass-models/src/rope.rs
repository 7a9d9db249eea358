//! Rotary position embeddings (HF rotate-half layout).

use burn::tensor::{Device, Tensor, TensorData};

/// Rotary position embeddings in HF's rotate-half layout.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Inverse frequencies, `[head_dim / 2]`, after any scaling.
    pub inv_freq: Vec<f32>,
    /// Multiplier on cos and sin (1 for the default, linear and llama3 types).
    pub attention_scaling: f32,
}

impl Rope {
    /// `cos` and `sin` for positions `[batch, seq]`, each `[batch, 1, seq, head_dim]`, computed
    /// in f32 as transformers does (`freqs = inv_freq ⊗ position`, duplicated halves).
    pub fn cos_sin(
        &self,
        positions: &[i64],
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let hd = 2 * half;
        let mut cos = Vec::with_capacity(batch * seq * hd);
        let mut sin = Vec::with_capacity(batch * seq * hd);
        for &p in positions {
            let mut c = Vec::with_capacity(hd);
            let mut s = Vec::with_capacity(hd);
            for &f in &self.inv_freq {
                let a = f * p as f32;
                c.push(a.cos() * self.attention_scaling);
                s.push(a.sin() * self.attention_scaling);
            }
            cos.extend_from_slice(&c);
            cos.extend_from_slice(&c);
            sin.extend_from_slice(&s);
            sin.extend_from_slice(&s);
        }
        let shape = [batch, 1, seq, hd];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// `[b, h, s, d]` of `x` when the host rope kernels take it: no empty dimension, an even
/// `head_dim`, and `cos` / `sin` of `[b, 1, s, d]`; `None` otherwise.
#[cfg(feature = "flex")]
pub(crate) fn kernel_dims(x: &Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<[usize; 4]> {
    let [b, h, s, d] = x.dims();
    let fits = !x.dims().contains(&0)
        && d % 2 == 0
        && cos.dims() == [b, 1, s, d]
        && sin.dims() == [b, 1, s, d];
    fits.then_some([b, h, s, d])
}

/// `[-x2, x1]` for `x = [x1, x2]` along the last dimension.
fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..s, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// Applies rotary embeddings to `[batch, heads, seq, head_dim]`.
pub fn apply_rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let Some(y) = crate::train_kernels::rope(&x, cos, sin) {
        return y;
    }
    if let Some(y) = crate::decoder_kernels::try_rope(&x, cos, sin) {
        return y;
    }
    x.clone() * cos.clone() + rotate_half(x) * sin.clone()
}
