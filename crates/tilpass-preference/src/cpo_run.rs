//! `tilpass train cpo`: CPO, SimPO (`loss_type: simpo`, `cpo_alpha: 0`), CPO-SimPO and AlphaPO
//! (TRL's `trl.experimental.cpo.CPOTrainer`) of a decoder on preference pairs with a LoRA
//! adapter or every weight (`full`); no reference model. The settings carry TRL's `CPOConfig`
//! names and defaults (`beta` 0.1, `loss_type` sigmoid, `cpo_alpha` 1.0, `simpo_gamma` 0.5,
//! `label_smoothing` 0, `alpha` 0, `max_length` 1024) and those of `tilpass train dpo` for data,
//! adapter and optimiser (one deviation: the learning rate defaults to 5e-5, not TRL's 1e-6).
//! The data is encoded as TRL's CPO does (BOS before the prompt, EOS after each answer).

use burn::tensor::Device;
use tilpass_train::{Event, Target};

use crate::cpo::{CpoConfig, CpoLossType};
use crate::cpo_trainer::train_cpo;
use crate::error::Result;
use crate::orpo_run::PreferenceOutcome;
use crate::pref_run::{
    COMMON_RESUME_SETTINGS, load_model, paired_batches, preference_run, save, start,
};

preference_run! {
    /// Settings of a CPO / SimPO run: the `tilpass train cpo` flags, TRL's `CPOConfig` names
    /// for the loss.
    pub struct CpoRun (job = "cpo") {
        /// The temperature of the loss (TRL: 0.1).
        pub beta: f64 = 0.1,
        /// sigmoid (default), hinge, ipo or simpo.
        pub loss_type: CpoLossType = CpoLossType::Sigmoid,
        /// Label smoothing of sigmoid / simpo, in [0, 0.5) (TRL: 0).
        pub label_smoothing: f64 = 0.0,
        /// Weight of the NLL term on the chosen completions (TRL: 1.0; pure SimPO: 0).
        pub cpo_alpha: f64 = 1.0,
        /// SimPO's target reward margin (TRL: 0.5).
        pub simpo_gamma: f64 = 0.5,
        /// AlphaPO's alpha (0: off).
        pub alpha: f64 = 0.0,
    }
}

impl CpoRun {
    /// The loss settings (TRL's `CPOConfig`).
    pub fn cpo_config(&self) -> CpoConfig {
        CpoConfig {
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            loss_type: self.loss_type,
            cpo_alpha: self.cpo_alpha,
            simpo_gamma: self.simpo_gamma,
            alpha: self.alpha,
        }
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
        self.cpo_config().validate()
    }

    /// Runs CPO on `device` (see [`crate::orpo_run::OrpoRun::run`]).
    pub fn run(
        &self,
        device: &Device,
        progress: &mut dyn FnMut(Event),
    ) -> Result<PreferenceOutcome> {
        let mut resume = COMMON_RESUME_SETTINGS.to_vec();
        resume.extend([
            "beta",
            "loss_type",
            "label_smoothing",
            "cpo_alpha",
            "simpo_gamma",
            "alpha",
        ]);
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
        let summary = train_cpo(
            &mut peft,
            target,
            &self.cpo_config(),
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
