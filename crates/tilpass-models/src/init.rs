//! New models from scratch: a Llama-style config and freshly initialised weights written as an
//! HF model directory (`config.json` + `model.safetensors`), loadable here and by transformers.

use std::path::Path;

use tilpass_core::{HostTensor, SaveDtype, SplitMix64, save_safetensors};

use crate::error::{ModelError, Result};
use crate::llama::{LlamaConfig, llama_params};
use crate::params::{ParamKind, ParamSpec};

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
    let mut rng = SplitMix64::from_state(seed ^ 0x11A3_A0DE_1000);
    let t = init_tensors(&llama_params(c), |n| rng.normal_vec(n, initializer_range))?;
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

/// Tensors for a parameter table as transformers' `_init_weights` makes them: linear, `Conv1D`,
/// embedding and bare weights from `normal(numel)` (drawn in table order), biases zero, norm
/// weights one.
pub fn init_tensors(
    table: &[ParamSpec],
    mut normal: impl FnMut(usize) -> Vec<f32>,
) -> Result<Vec<(String, HostTensor)>> {
    let mut out = Vec::new();
    for spec in table {
        for (i, (name, shape)) in spec.tensors().into_iter().enumerate() {
            let n = shape.iter().product();
            let data = match (spec.kind, i) {
                (ParamKind::RmsNorm | ParamKind::LayerNorm, 0) => vec![1.0; n],
                (_, 0) => normal(n),
                _ => vec![0.0; n],
            };
            out.push((name, HostTensor::new(shape, data)?));
        }
    }
    Ok(out)
}
