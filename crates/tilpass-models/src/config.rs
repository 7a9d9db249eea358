//! Shared configuration types (`RopeParameters`, `TokenIds`) and serde helpers. Each family's
//! config lives beside its model (`LlamaConfig` in [`crate::llama`], `Gpt2Config` in
//! [`crate::gpt2`], ...), re-exported at the crate root. Configs read `config.json` with
//! transformers 4.x and 5.x field names.
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
pub(crate) fn class_defaults(m: &mut Map<String, Value>, defaults: &[(&str, Value)]) {
    for (k, v) in defaults {
        m.entry(*k).or_insert_with(|| v.clone());
    }
}
