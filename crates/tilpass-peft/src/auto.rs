//! Loading a model directory together with an adapter directory, whichever kind the adapter
//! is (PEFT's `AutoPeftModelForCausalLM`): LoRA / DoRA goes into the model's layers, a
//! prompt-learning adapter comes back beside the model.

use std::path::Path;

use burn::tensor::Device;
use tilpass_models::{AnyModel, DecoderLm, Head, ModelKind};

use crate::config::is_prompt_adapter;
use crate::error::{PeftError, Result};
use crate::lora::PeftModel;
use crate::prompt::PromptAdapter;

/// The causal LM in `dir` (config.json's `architectures` must name a causal LM head) with the
/// adapter in `adapter` applied: a LoRA / DoRA adapter merged into its layers' forward, or a
/// prompt-learning adapter (prefix / prompt / P-tuning) returned beside it.
pub fn load_causal_lm(
    dir: &Path,
    adapter: Option<&Path>,
    device: &Device,
) -> Result<(DecoderLm, Option<PromptAdapter>)> {
    let kind = ModelKind::from_dir(dir)?;
    let not_causal = || PeftError::Mismatch {
        path: dir.display().to_string(),
        message: format!(
            "this command needs a causal LM (*ForCausalLM / *LMHeadModel); this is {} ({})",
            kind.class_name(),
            kind.head.describe()
        ),
    };
    if kind.head != Head::CausalLm {
        return Err(not_causal());
    }
    let AnyModel::CausalLm(model) = AnyModel::load_kind(&kind, device)? else {
        return Err(not_causal());
    };
    match adapter {
        None => Ok((model, None)),
        Some(a) if is_prompt_adapter(a)? => {
            let prompt = PromptAdapter::load(a, &model)?;
            Ok((model, Some(prompt)))
        }
        Some(a) => {
            let mut peft = PeftModel::new(model);
            peft.load_adapter(a, "default")?;
            tracing::info!("adapter {}: {}", a.display(), peft.trainable_parameters());
            Ok((peft.into_model(), None))
        }
    }
}
