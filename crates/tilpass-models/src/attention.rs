//! Attention: decoder masks and scaled dot-product attention with grouped-query heads.

use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor, TensorData};

/// Decoder attention mask `[batch, 1, q_len, past + q_len]`, `true` where query `i` (column
/// `past + i`) may **not** see key column `j`: it may see it when `j <= past + i`,
/// `attention_mask[b][j] != 0`, the key belongs to the query's document (packed rows number
/// their documents 1, 2, ...; a 0/1 mask is one document) and, with a sliding window `w`,
/// `past + i - j < w` (as transformers' causal / sliding-window masks).
pub fn causal_mask(
    attention_mask: &[u8],
    batch: usize,
    q_len: usize,
    past: usize,
    sliding_window: Option<usize>,
    device: &Device,
) -> Tensor<4, Bool> {
    let k_len = past + q_len;
    debug_assert_eq!(attention_mask.len(), batch * k_len);
    let mut masked = vec![true; batch * q_len * k_len];
    for b in 0..batch {
        for i in 0..q_len {
            let qpos = past + i;
            // Packed rows number their documents 1, 2, ...: a real query sees only keys of
            // its own document (the usual 0/1 mask is one document).
            let doc = attention_mask[b * k_len + qpos];
            for j in 0..=qpos {
                let key = attention_mask[b * k_len + j];
                let visible = key != 0
                    && (doc == 0 || key == doc)
                    && sliding_window.is_none_or(|w| qpos - j < w);
                if visible {
                    masked[(b * q_len + i) * k_len + j] = false;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(masked, [batch, 1, q_len, k_len]), device)
}

/// Scaled dot-product attention with grouped-query heads: `q [b, h, s, d]`, `k`/`v`
/// `[b, kv, t, d]` with `h % kv == 0`; `mask [b, 1 or h, s, t]` is `true` where a key is hidden,
/// `bias [b, 1 or h, s, t]` is added to the scaled scores (relative positions). Returns
/// `[b, h, s, d]`. A query row that sees no key gets zeros.
///
/// Runs burn's fused `attention` (on Flex: tiled with an online softmax for long sequences,
/// so the `[s, t]` scores of every head are never materialised at once). Key/value heads are
/// expanded to the query heads first, since not every backend's kernel accepts GQA.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<&Tensor<4, Bool>>,
    bias: Option<&Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    let [b, h, _, d] = q.dims();
    let [_, kv, t, _] = k.dims();
    let (k, v) = if kv == h {
        (k, v)
    } else {
        let rep = h / kv;
        let expand = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kv, rep, t, d])
                .reshape([b, h, t, d])
        };
        (expand(k), expand(v))
    };
    burn::tensor::module::attention(
        q,
        k,
        v,
        mask.cloned(),
        bias.cloned(),
        AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: false,
        },
    )
}

/// [`attention`] with the heads merged, `[b, s, h·d]` (the output projection's layout; `mask`
/// `[b, 1, s, t]`): under autodiff on Flex one recorded operation with a host backward
/// (`train_kernels::attention`, with the `flex` feature; a constant `bias` only), burn's
/// attention and a head transpose otherwise.
pub fn attention_merged(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: &Tensor<4, Bool>,
    bias: Option<&Tensor<4>>,
    scale: f64,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if let Some(ctx) = crate::train_kernels::attention(&q, &k, &v, mask, bias, scale) {
        return ctx;
    }
    let [b, h, s, d] = q.dims();
    attention(q, k, v, Some(mask), bias, scale)
        .swap_dims(1, 2)
        .reshape([b, s, h * d])
}
