//! The interface of a decoder-only family (`llama`, `gpt2`) to [`crate::DecoderLm`]; the
//! families import it, `decoder` dispatches over it.

use burn::tensor::{Bool, Device, Int, Tensor};

use crate::kv_cache::KvCache;
use crate::linear::HasLinears;
use crate::params::ParamTable;

/// What a decoder family (its file: `llama.rs`, `gpt2.rs`) gives [`crate::DecoderLm`]: its config's
/// sizes, its embedding, layers and head, and its `config.json`. Weights go through the
/// family's [`ParamTable`].
pub trait DecoderFamily: ParamTable + HasLinears {
    /// The `config.json` that `save_pretrained` writes (before the dtype key).
    fn hf_config(&self) -> serde_json::Result<serde_json::Value>;
    /// Width of the model (embedding size).
    fn hidden_size(&self) -> usize;
    /// `(key/value heads, head dim)` of the attention layers.
    fn kv_shape(&self) -> (usize, usize);
    /// Number of layers.
    fn num_layers(&self) -> usize;
    /// Vocabulary size.
    fn vocab_size(&self) -> usize;
    /// Maximum positions.
    fn max_positions(&self) -> usize;
    /// EOS ids from the config.
    fn eos_token_ids(&self) -> Vec<u32>;
    /// The sliding-window size of attention, if any.
    fn sliding_window(&self) -> Option<usize> {
        None
    }
    /// The device of the weights.
    fn device(&self) -> Device;
    /// Token embeddings `[batch, seq, hidden]` of ids `[batch, seq]`.
    fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3>;
    /// Final hidden states `[batch, seq, hidden]` from input embeddings (see
    /// [`crate::Llama::hidden_from`]).
    fn hidden_from(
        &self,
        embeds: Tensor<3>,
        positions: &[i64],
        mask: &Tensor<4, Bool>,
        cache: Option<&mut KvCache>,
    ) -> Tensor<3>;
    /// Logits `[batch, seq, vocab]` from final hidden states.
    fn lm_logits(&self, hidden: Tensor<3>) -> Tensor<3>;
    /// The LM head as a plain frozen matrix (no bias, no active adapter, no gradient), for
    /// the fused loss ([`crate::head_loss`]); `None` otherwise.
    fn frozen_lm_head(&self) -> Option<crate::head_loss::LmHead>;
}
