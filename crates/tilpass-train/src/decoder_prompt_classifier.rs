//! Prompt learning (prompt tuning, P-tuning, prefix tuning) on a decoder sequence classifier
//! ([`DecoderClassifier`]: Llama / Mistral / GPT-2), as PEFT 0.21's
//! `PeftModelForSequenceClassification` runs it with transformers 5.23:
//!
//! - **Prompt tuning / P-tuning**: PEFT embeds the ids, puts the `n` virtual tokens in front
//!   and calls the model with `inputs_embeds` only (attention mask extended with `n` ones,
//!   `position_ids` dropped, so positions are `0..n + seq`). transformers cannot find the pad
//!   tokens without `input_ids` (it warns "padding tokens in inputs_embeds will not be
//!   detected") and scores the **last column** of every row — for a right-padded row that is
//!   a pad position (it attends to the virtual tokens and the row's real tokens). tilpass
//!   reproduces exactly that. Without a pad id, a batch of more than one row is refused, as
//!   transformers refuses it.
//! - **Prefix tuning**: PEFT passes `input_ids` with the prefix as `past_key_values` (mask
//!   extended with `n` ones, positions `n..n + seq`); the scored token is the last non-pad
//!   token of the ids, as without an adapter.
//!
//! The head (`score`, PEFT's `modules_to_save`) trains alongside the adapter and is saved in
//! the adapter file as `base_model.score.weight` (`[labels, hidden]`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use tilpass_core::HostTensor;
use tilpass_models::linear::ParamFn;
use tilpass_models::{
    DecoderClassifier, EncoderInput, HasLinears, ModelError, ProblemType, SequenceClassifier,
};
use tilpass_peft::{ParamMut, PromptAdapter, PromptDims};

use crate::error::{Result, TrainError};
use crate::optim::{AdamW, NamedGrads, collect_grads};
use crate::trainer::Trainable;

const HEAD: &str = "score";

/// The prompt dimensions of a decoder classifier (prefix tuning: every layer, the key/value
/// heads).
pub fn decoder_prompt_dims(model: &DecoderClassifier) -> PromptDims {
    let base = model.base();
    let (kv_heads, head_dim) = base.kv_shape();
    PromptDims {
        hidden: base.hidden_size(),
        layers: base.num_layers(),
        kv_heads,
        head_dim,
    }
}

/// A decoder sequence classifier with a prompt-learning adapter (see the module docs): the
/// decoder frozen, the adapter and the `score` head trained.
#[derive(Debug)]
pub struct DecoderPromptClassifier {
    /// The classifier (frozen except its `score` head).
    pub model: DecoderClassifier,
    /// The adapter.
    pub prompt: PromptAdapter,
}

fn track(p: ParamMut<'_>) {
    match p {
        ParamMut::D1(p) => *p = p.clone().set_require_grad(true),
        ParamMut::D2(p) => *p = p.clone().set_require_grad(true),
    }
}

fn numel(p: &ParamMut<'_>) -> usize {
    match p {
        ParamMut::D1(p) => p.dims()[0],
        ParamMut::D2(p) => p.dims().iter().product(),
    }
}

impl DecoderPromptClassifier {
    /// Freezes `model` except its head and makes the adapter's parameters trainable.
    pub fn new(mut model: DecoderClassifier, mut prompt: PromptAdapter) -> Self {
        model.freeze();
        for (_, p) in prompt.trainable_params_mut() {
            track(p);
        }
        let mut me = Self { model, prompt };
        for (_, p) in me.head_params_mut() {
            track(p);
        }
        me
    }

    /// Loads a PEFT `SEQ_CLS` prompt-learning adapter (saved by [`Self::save`] or PEFT) onto
    /// `model` (a decoder classifier with the adapter's number of labels): its table and head.
    pub fn load(mut model: DecoderClassifier, dir: &Path, device: &Device) -> Result<Self> {
        let prompt = PromptAdapter::load_with(dir, decoder_prompt_dims(&model), device)?;
        if prompt.apply_saved_modules(&mut model)? == 0 {
            return Err(TrainError::Config(format!(
                "{}: the adapter holds no `base_model.{HEAD}.weight` (a SEQ_CLS adapter saves \
                 its score head)",
                dir.display()
            )));
        }
        Ok(Self { model, prompt })
    }

    /// The head's parameter: `score.weight` `[hidden, labels]`.
    fn head_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        vec![(
            format!("{HEAD}.weight"),
            ParamMut::D2(&mut self.model.score_head_mut().weight),
        )]
    }

    fn params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let Self { model, prompt } = self;
        let mut out = prompt.trainable_params_mut();
        out.push((
            format!("{HEAD}.weight"),
            ParamMut::D2(&mut model.score_head_mut().weight),
        ));
        out
    }

    /// PEFT's trainable-parameter line (adapter + head).
    pub fn trainable_report(&mut self) -> String {
        let trainable: usize = self.params_mut().iter().map(|(_, p)| numel(p)).sum();
        let head: usize = self.head_params_mut().iter().map(|(_, p)| numel(p)).sum();
        let all = self.model.parameter_count() + trainable - head;
        format!(
            "trainable params: {trainable} || all params: {all} || trainable%: {:.4}",
            100.0 * trainable as f64 / all.max(1) as f64
        )
    }

    /// Writes the adapter in PEFT's layout with the head as `base_model.score.weight`
    /// (`[labels, hidden]`).
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        let w = HostTensor::from_tensor(&self.model.score_head().weight.val()).transposed()?;
        self.prompt.saved_modules = vec![(format!("base_model.{HEAD}.weight"), w)];
        Ok(self.prompt.save(dir)?)
    }

    /// Logits `[batch, num_labels]` as PEFT computes them (see the module docs).
    pub fn logits(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        let (b, s, n) = (input.batch, input.seq, self.prompt.len());
        if input.input_ids.len() != b * s || input.attention_mask.len() != b * s || s == 0 {
            return Err(ModelError::Input(format!(
                "expected input ids and attention mask of {b}x{s} (seq >= 1), got {} and {}",
                input.input_ids.len(),
                input.attention_mask.len()
            ))
            .into());
        }
        if self.model.pad_token_id().is_none() && b != 1 {
            return Err(ModelError::NoPadToken { batch: b }.into());
        }
        let base = self.model.base();
        let (inp, cache) = self
            .prompt
            .decoder_input(&input.input_ids, &input.attention_mask, b, s);
        let (hidden, pos) = match cache {
            Some(mut cache) => (
                base.forward_hidden(&inp, Some(&mut cache))?,
                self.model.score_positions(&input.input_ids, b, s)?,
            ),
            None => (
                base.forward_hidden_with_prompt(&inp, None, Some(self.prompt.prompt_embeds(b)))?,
                // `inputs_embeds` only: transformers scores the last column of every row.
                vec![n + s - 1; b],
            ),
        };
        let h = hidden.dims()[2];
        let idx: Vec<i64> = pos
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p as i64, h))
            .collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, 1, h]), &hidden.device());
        let last = hidden.gather(1, idx).reshape([b, h]);
        Ok(self.model.score_head().forward(last))
    }
}

impl HasLinears for DecoderPromptClassifier {
    fn linears(&self) -> Vec<(String, &tilpass_models::Linear)> {
        self.model.linears()
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut tilpass_models::Linear)> {
        self.model.linears_mut()
    }
    fn model_type(&self) -> String {
        self.model.model_type()
    }
    fn conv1d_layers(&self) -> bool {
        self.model.conv1d_layers()
    }
    fn parameter_count(&self) -> usize {
        self.model.parameter_count()
    }
    fn freeze(&mut self) {
        self.model.freeze();
    }
    fn map_params(&mut self, grads: Option<&Gradients>, f: &mut ParamFn<'_>) {
        self.model.map_params(grads, f);
    }
}

impl SequenceClassifier for DecoderPromptClassifier {
    fn classify(&self, input: &EncoderInput) -> tilpass_models::Result<Tensor<2>> {
        self.logits(input).map_err(|e| match e {
            TrainError::Model(m) => m,
            other => ModelError::Input(other.to_string()),
        })
    }
    fn problem_type(&self) -> tilpass_models::Result<ProblemType> {
        SequenceClassifier::problem_type(&self.model)
    }
    fn num_labels(&self) -> usize {
        SequenceClassifier::num_labels(&self.model)
    }
}

crate::classify_methods::prompt_classifier_trainable!(DecoderPromptClassifier, "score head");
