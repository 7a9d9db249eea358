//! Model configurations as in `config.json` (transformers 4.x and 5.x field names).
//!
//! A key absent from `config.json` takes the default of transformers' config class for that
//! `model_type` (Mistral: 8 KV heads, 131072 positions, a 4096-token sliding window; Llama and
//! Mistral: BOS 1, EOS 2; GPT-2: BOS/EOS 50256), as `from_pretrained` does; an explicit `null`
//! stays `None` (and is written back as `null`, so that a saved config reads back the same). Both RoPE spellings are read: transformers 4 `rope_theta` + `rope_scaling`
//! and transformers 5 `rope_parameters` (with `rope_theta` inside), `type` or `rope_type`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

fn one() -> f64 {
    1.0
}

fn is_one(f: &f64) -> bool {
    *f == 1.0
}

/// RoPE parameters: transformers 4 `rope_scaling` (+ `rope_theta`) or transformers 5
/// `rope_parameters`. Reads `type` (transformers 4) or `rope_type`; when both are present (both
/// versions write both when given `type`), `rope_type` wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct RopeParameters {
    /// `default`, `linear` or `llama3`.
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
    /// Base of the frequencies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Scaling factor (`linear`, `llama3`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub factor: f64,
    /// `llama3`: low-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: high-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// `llama3`: the context length before scaling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_rope_type() -> String {
    "default".into()
}

impl<'de> Deserialize<'de> for RopeParameters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Value::deserialize(d)?;
        normalise_rope_dict(&mut v);
        RopeParameters::deserialize(v).map_err(D::Error::custom)
    }
}

impl Serialize for RopeParameters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        RopeParameters::serialize(self, s)
    }
}

/// `eos_token_id` may be one id or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// Llama / Mistral configuration (`model_type` `llama` or `mistral`).
///
/// Deserialising fills absent keys with the class defaults of `model_type` and normalises the
/// RoPE dictionaries (see the module documentation); serialising writes every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct LlamaConfig {
    /// `llama` or `mistral`.
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `None`: `num_attention_heads` (an absent key
    /// is 8 for Mistral, as `MistralConfig`).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head size; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// Context length (absent: 2048 for Llama, 131072 for Mistral).
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4; wins over `rope_parameters` when both are present, as in
    /// transformers 5's conversion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE parameters (transformers 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Biases on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases in the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// The LM head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Mistral's sliding-window attention size (absent: 4096 for Mistral; Llama ignores it,
    /// see [`LlamaConfig::sliding_window`]).
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Activation of the MLP (only `silu` is supported).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// BOS id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// EOS id(s).
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Padding id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Any other fields, kept for saving.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn default_max_pos() -> usize {
    2048
}

/// Renames a RoPE dictionary's transformers-4 `type` to `rope_type` (`rope_type` wins when both
/// are present, as transformers' `standardize_rope_params`).
fn normalise_rope_dict(v: &mut Value) {
    if let Value::Object(m) = v
        && let Some(t) = m.remove("type")
    {
        m.entry("rope_type").or_insert(t);
    }
}

/// Inserts `defaults` for keys that `m` lacks.
fn class_defaults(m: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (k, v) in defaults {
        m.entry(*k).or_insert_with(|| v.clone());
    }
}

impl<'de> Deserialize<'de> for LlamaConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = Map::deserialize(d)?;
        let common = [
            ("bos_token_id", Value::from(1)),
            ("eos_token_id", Value::from(2)),
        ];
        class_defaults(&mut m, &common);
        if m.get("model_type").and_then(Value::as_str) == Some("mistral") {
            let mistral = [
                ("num_key_value_heads", Value::from(8)),
                ("max_position_embeddings", Value::from(4096 * 32)),
                ("sliding_window", Value::from(4096)),
            ];
            class_defaults(&mut m, &mistral);
        }
        LlamaConfig::deserialize(Value::Object(m)).map_err(D::Error::custom)
    }
}

impl Serialize for LlamaConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        LlamaConfig::serialize(self, s)
    }
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// The sliding-window size attention uses: Mistral's `sliding_window`; `None` for Llama,
    /// whose attention has none whatever the config says (as transformers' `LlamaAttention`).
    pub fn sliding_window(&self) -> Option<usize> {
        if self.model_type == "mistral" {
            self.sliding_window
        } else {
            None
        }
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Size of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The effective RoPE parameters as transformers 5 standardises them: `rope_scaling`
    /// (transformers 4) when present, else `rope_parameters`, else the default type; the base
    /// from the dictionary, else the top-level `rope_theta`, else 10000; for `llama3`, a missing
    /// `original_max_position_embeddings` is `max_position_embeddings`.
    pub fn rope(&self) -> RopeParameters {
        let mut p = self
            .rope_scaling
            .clone()
            .or_else(|| self.rope_parameters.clone())
            .unwrap_or(RopeParameters {
                rope_type: "default".into(),
                rope_theta: None,
                factor: 1.0,
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            });
        if p.rope_theta.is_none() {
            p.rope_theta = Some(self.rope_theta.unwrap_or(10_000.0));
        }
        if p.rope_type == "llama3" && p.original_max_position_embeddings.is_none() {
            p.original_max_position_embeddings = Some(self.max_position_embeddings);
        }
        p
    }
}

/// GPT-2 configuration (`model_type` `gpt2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Context length.
    #[serde(default = "default_gpt2_pos")]
    pub n_positions: usize,
    /// MLP inner size; defaults to `4 * n_embd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_inner: Option<usize>,
    /// `gelu_new` (also accepted: `gelu_pytorch_tanh`, `gelu_fast`, `gelu`).
    #[serde(default = "default_gpt2_act")]
    pub activation_function: String,
    /// LayerNorm epsilon.
    #[serde(default = "default_gpt2_eps")]
    pub layer_norm_epsilon: f64,
    /// Scale attention by `1 / (layer + 1)` as well (not supported).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Scale attention weights by `1/sqrt(head_dim)`.
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// BOS id (absent: 50256, `GPT2Config`'s default).
    #[serde(default = "gpt2_special")]
    pub bos_token_id: Option<u32>,
    /// EOS id(s) (absent: 50256).
    #[serde(default = "gpt2_eos")]
    pub eos_token_id: Option<TokenIds>,
    /// The LM head is the token-embedding matrix (`GPT2Config` default true; tilpass implements
    /// only the tied head).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Any other fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn gpt2_special() -> Option<u32> {
    Some(50256)
}
fn gpt2_eos() -> Option<TokenIds> {
    Some(TokenIds::One(50256))
}

fn default_gpt2_pos() -> usize {
    1024
}
fn default_gpt2_act() -> String {
    "gelu_new".into()
}
fn default_gpt2_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
