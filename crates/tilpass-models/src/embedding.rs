//! Embedding tables: loading, and logits through a head tied to them.

use burn::module::Param;
use burn::nn::Embedding;
use burn::tensor::{Device, Tensor};
use tilpass_core::Checkpoint;

use crate::error::Result;

/// Loads an embedding table `[n, dim]`.
pub fn load_embedding(
    ckpt: &Checkpoint,
    name: &str,
    n: usize,
    dim: usize,
    device: &Device,
) -> Result<Embedding> {
    Ok(Embedding {
        weight: Param::from_tensor(ckpt.tensor(name, [n, dim], device)?),
    })
}

/// Logits through a tied head: `hidden [b, s, d] · embeddingᵀ` with `embedding [vocab, d]`,
/// computed as `(E · hᵀ)ᵀ` so the large embedding matrix is never transposed (a transposed
/// view would be copied by the matmul on every call).
pub fn tied_logits(hidden: Tensor<3>, embedding: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = hidden.dims();
    let [v, _] = embedding.dims();
    let h = hidden.reshape([b * s, d]).transpose();
    embedding.matmul(h).transpose().reshape([b, s, v])
}
