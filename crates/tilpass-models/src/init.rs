//! New models from scratch: a Llama-style config and freshly initialised weights written as an
//! HF model directory (`config.json` + `model.safetensors`), loadable here and by transformers.

use std::path::Path;

use tilpass_core::{HostTensor, SaveDtype, SplitMix64, save_safetensors};

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};

/// Writes a new Llama model to `dir`: `config` (its `model_type` set to `llama`) and weights
/// initialised as transformers' `LlamaPreTrainedModel._init_weights` does — linear and
/// embedding weights normal with standard deviation `initializer_range` (HF default 0.02),
/// biases zero, RMSNorm weights one — from `seed` (deterministic).
///
/// ```
/// use tilpass_models::{LlamaConfig, create_llama};
/// let cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
///     "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
///     "num_hidden_layers": 1, "num_attention_heads": 2
/// })).unwrap();
/// let dir = std::env::temp_dir().join("tilpass-doc-create-llama");
/// create_llama(&dir, &cfg, 0.02, 0).unwrap();
/// assert!(dir.join("model.safetensors").is_file());
/// ```
pub fn create_llama(
    dir: impl AsRef<Path>,
    config: &LlamaConfig,
    initializer_range: f64,
    seed: u64,
) -> Result<()> {
    let dir = dir.as_ref();
    let c = config;
    c.validate()?;
    if c.hidden_size == 0 || c.num_attention_heads == 0 || c.vocab_size == 0 {
        return Err(ModelError::Input(
            "create_llama: vocab_size, hidden_size and num_attention_heads must be positive".into(),
        ));
    }
    if c.head_dim.is_none() && !c.hidden_size.is_multiple_of(c.num_attention_heads) {
        return Err(ModelError::Input(format!(
            "create_llama: hidden_size {} is not a multiple of num_attention_heads {}",
            c.hidden_size, c.num_attention_heads
        )));
    }
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim(),
        c.kv_heads() * c.head_dim(),
    );
    let mut rng = SplitMix64::from_state(seed ^ 0x11A3_A0DE_1000);
    let mut normal = |shape: Vec<usize>| -> Result<HostTensor> {
        let n = shape.iter().product();
        Ok(HostTensor::new(
            shape,
            rng.normal_vec(n, initializer_range),
        )?)
    };
    let ones = |n: usize| HostTensor::new(vec![n], vec![1.0; n]);
    let zeros = |n: usize| HostTensor::new(vec![n], vec![0.0; n]);
    let mut t: Vec<(String, HostTensor)> =
        vec![("model.embed_tokens.weight".into(), normal(vec![v, h])?)];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp, bias) in [
            ("self_attn.q_proj", q, h, c.attention_bias),
            ("self_attn.k_proj", kv, h, c.attention_bias),
            ("self_attn.v_proj", kv, h, c.attention_bias),
            ("self_attn.o_proj", h, q, c.attention_bias),
            ("mlp.gate_proj", i, h, c.mlp_bias),
            ("mlp.up_proj", i, h, c.mlp_bias),
            ("mlp.down_proj", h, i, c.mlp_bias),
        ] {
            t.push((format!("{p}.{name}.weight"), normal(vec![out, inp])?));
            if bias {
                t.push((format!("{p}.{name}.bias"), zeros(out)?));
            }
        }
        t.push((format!("{p}.input_layernorm.weight"), ones(h)?));
        t.push((format!("{p}.post_attention_layernorm.weight"), ones(h)?));
    }
    t.push(("model.norm.weight".into(), ones(h)?));
    if !c.tie_word_embeddings {
        t.push(("lm_head.weight".into(), normal(vec![v, h])?));
    }
    std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
    let mut cfg = serde_json::to_value(c).map_err(|e| ModelError::Input(e.to_string()))?;
    if let Some(o) = cfg.as_object_mut() {
        o.insert("model_type".into(), "llama".into());
        o.insert(
            "architectures".into(),
            serde_json::json!(["LlamaForCausalLM"]),
        );
        o.insert("initializer_range".into(), initializer_range.into());
    }
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| ModelError::Input(e.to_string()))?;
    tilpass_core::write_atomic(dir.join("config.json"), text.as_bytes())?;
    save_safetensors(
        dir.join("model.safetensors"),
        t.iter().map(|(n, x)| (n.as_str(), x)),
        SaveDtype::F32,
        None,
    )?;
    Ok(())
}
