//! `tilpass train orpo`: ORPO (TRL's `trl.experimental.orpo.ORPOTrainer`) of a decoder on
//! preference pairs (TRL formats or `builtin:norsk-pref`) with a LoRA adapter or every weight
//! (`full`); no reference model. The settings carry TRL's `ORPOConfig` names and defaults
//! (`beta` 0.1, `max_length` 1024) and those of `tilpass train dpo` for data, adapter and
//! optimiser (transformers' `TrainingArguments` defaults; one deviation: the learning rate
//! defaults to 5e-5, not TRL's 1e-6, which barely moves a LoRA adapter). The data is encoded as
//! TRL's ORPO does (BOS before the prompt, EOS after each answer) and batched in the file's
//! order (TRL shuffles with its seed).

use burn::tensor::Device;
use tilpass_models::DecoderLm;
use tilpass_peft::PeftModel;
use tilpass_train::{Event, Summary, Target};

use crate::error::Result;
use crate::orpo::OrpoConfig;
use crate::orpo_trainer::train_orpo;
use crate::pref_run::{
    COMMON_RESUME_SETTINGS, load_model, paired_batches, preference_run, save, start,
};

preference_run! {
    /// Settings of an ORPO run: the `tilpass train orpo` flags, TRL's `ORPOConfig` names for
    /// the loss; the LoRA settings are PEFT's `LoraConfig` under `lora` (also taken at the top
    /// level: `lora_r`, `lora_alpha`, `target_modules`, ...).
    pub struct OrpoRun (job = "orpo") {
        /// ORPO's beta, the weight of the odds-ratio term (the paper's λ; TRL: 0.1).
        pub beta: f64 = 0.1,
    }
}

/// What an ORPO, CPO or KTO run did.
#[derive(Debug)]
pub struct PreferenceOutcome {
    /// Steps and losses.
    pub summary: Summary,
    /// Where the result went: `out/adapter` (HF PEFT layout) or, with `full`, `out/model`.
    pub saved: std::path::PathBuf,
    /// The trained model (with its adapter).
    pub model: PeftModel<DecoderLm>,
}

impl OrpoRun {
    /// The loss settings (TRL's `ORPOConfig`).
    pub fn orpo_config(&self) -> OrpoConfig {
        OrpoConfig { beta: self.beta }
    }

    /// The training batches of `spec` as this run encodes them: TRL's DPO encoding
    /// ([`tilpass_tokenize::encode_preferences`]), then BOS before the prompt and EOS after
    /// each answer where missing (TRL's `add_bos_token_if_needed` /
    /// `add_eos_token_if_needed`), collated `[all chosen; all rejected]` in the data's order,
    /// the start kept. A row of another format or with an empty answer is an error naming
    /// `file:line`.
    pub fn encode(
        &self,
        tokenizer: &tilpass_tokenize::Tokenizer,
        spec: &tilpass_data::DatasetSpec,
        progress: &mut dyn FnMut(Event),
    ) -> Result<Vec<crate::dpo_trainer::DpoBatch>> {
        paired_batches(
            tokenizer,
            spec,
            self.max_length,
            self.batch_size,
            self.chat_template.as_deref(),
            progress,
        )
    }

    fn validate_own(&self) -> Result<()> {
        self.orpo_config().validate()
    }

    /// Runs ORPO on `device`, reporting progress to `progress`: checks the settings, writes
    /// `out/run_config.json`, encodes and batches the data, trains, saves the adapter (or the
    /// model).
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<PreferenceOutcome> {
        let mut resume = COMMON_RESUME_SETTINGS.to_vec();
        resume.push("beta");
        let common = self.common();
        let started = start(self, &common, &resume, device)?;
        let batches = self.encode(&started.tokenizer, &started.data, progress)?;
        let eval_batches = match &self.eval_data {
            Some(spec) => self.encode(&started.tokenizer, spec, progress)?,
            None => Vec::new(),
        };
        let mut peft = load_model(&common, &started, progress)?;
        let target = if self.full {
            Target::Full
        } else {
            Target::Adapter("default")
        };
        let summary = train_orpo(
            &mut peft,
            target,
            &self.orpo_config(),
            &batches,
            &eval_batches,
            &self.train_config(),
            self.resume.as_deref(),
            progress,
        )?;
        let saved = save(&common, &started, &peft)?;
        drop(started.fresh);
        Ok(PreferenceOutcome {
            summary,
            saved,
            model: peft,
        })
    }
}
