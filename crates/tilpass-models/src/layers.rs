//! The shared layers, re-exported from their modules ([`crate::attention`], [`crate::rope`],
//! [`crate::norm`], [`crate::mlp`], [`crate::kv_cache`], [`crate::linear`],
//! [`crate::embedding`]) under one path.

pub use crate::attention::{attention, causal_mask};
pub use crate::embedding::{load_embedding, tied_logits};
pub use crate::kv_cache::KvCache;
pub use crate::linear::{
    HasLinears, Linear, LoraBranch, ParamFn, load_conv1d, load_linear, map_module_params,
};
pub use crate::mlp::{Activation, gelu_exact, gelu_new};
pub use crate::norm::{LayerNorm, RmsNorm, plain_layer_norm};
pub use crate::rope::{Rope, apply_rope};
