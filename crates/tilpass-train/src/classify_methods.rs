//! The adaptation methods of a sequence classifier (`tilpass train classify --method`), which
//! families PEFT can apply each to, the prompt-learning classifier (virtual tokens or a prefix
//! plus the trained head, as PEFT's `PeftModelForSequenceClassification`), and loading what a
//! run saved (LoRA / DoRA adapter, prompt-learning adapter, or full model) for prediction.
//!
//! | family \ method                     | lora | dora | prefix | p-tuning | prompt | full |
//! |-------------------------------------|------|------|--------|----------|--------|------|
//! | BERT (`bert`)                       | yes  | yes  | yes    | yes      | yes    | yes  |
//! | NorBERT3 / LTG-BERT (`ltgbert`, `norbert`) | yes | yes | no | no     | no     | yes  |
//! | Llama / Mistral / GPT-2 (`llama`, `mistral`, `gpt2`) | yes | yes | yes | yes | yes | yes |
//!
//! PEFT's prompt learning for `SEQ_CLS` hands the base model `inputs_embeds` (prompt tuning,
//! P-tuning) or `past_key_values` (prefix tuning); LTG-BERT's remote modelling code takes
//! neither, so PEFT cannot apply these methods to it and tilpass refuses them with
//! [`TrainError::InvalidSetting`] naming `method`.
//!
//! With prompt tuning / P-tuning the `n` virtual tokens go in front of `[CLS]` (attention mask
//! extended with ones, token type 0), so BERT's pooler reads the first *virtual* token, as in
//! PEFT; prefix tuning leaves the sequence alone and the pooler reads `[CLS]`. The head
//! (`classifier`) trains alongside, as PEFT's `modules_to_save`, and is saved in the adapter as
//! `base_model.classifier.weight` / `.bias`.
//!
//! Decoders train as transformers' `*ForSequenceClassification` ([`DecoderClassifier`]): the
//! logits are the score head (`score`, `[num_labels, hidden]`, no bias) on the row's last
//! token that is not the pad id. A checkpoint without `score.weight` (a causal LM) gets a new
//! head drawn as transformers initialises it (normal, std `initializer_range`); one with a
//! head must have one output per label (else a typed error). The pad id is the config's
//! `pad_token_id`; when the config has none, the tokenizer's pad token and else its EOS token,
//! as TRL / transformers users set `model.config.pad_token_id = tokenizer.pad_token_id` (the
//! saved full model's `config.json` records it; an adapter's base is given the same id when
//! loaded). A model without any of them scores the last column and takes only batches of one
//! row (`batch_size` > 1 is a typed error, as transformers refuses it). LoRA / DoRA use PEFT's
//! default targets of the family (`q_proj`, `v_proj`; GPT-2 `c_attn`) and train the head as
//! `modules_to_save = ["classifier", "score"]` as PEFT's `SEQ_CLS` (saved as
//! `base_model.model.score.weight`). Prompt learning on decoders
//! follows PEFT's `PeftModelForSequenceClassification` exactly, including where it scores
//! (the last column with prompt tuning / P-tuning): see
//! [`crate::decoder_prompt_classifier`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Gradients, Tensor};
use serde::{Deserialize, Serialize};
use tilpass_core::HostTensor;
use tilpass_models::linear::ParamFn;
use tilpass_models::params::hf_tensors;
use tilpass_models::{
    Bert, DecoderClassifier, EncoderInput, EncoderModel, HasLinears, ProblemType, ScoreInit,
    SequenceClassifier,
};
use tilpass_peft::{ParamMut, PeftModel, PromptAdapter, PromptDims, PromptMethod};

use crate::classify::{ClsBatch, classification_loss};
pub use crate::decoder_prompt_classifier::{DecoderPromptClassifier, decoder_prompt_dims};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, NamedGrads, collect_grads};
use crate::trainer::{BatchLoss, EvalLog, Event, Summary, TrainConfig, Trainable, train_trainable};

/// The file beside a classifier's adapter / model that names its labels, in class order.
pub const LABELS_FILE: &str = "labels.json";

/// How a classifier is adapted (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifyMethod {
    /// LoRA on the family's targets, the head trained in full (`modules_to_save`).
    #[default]
    Lora,
    /// LoRA with weight decomposition (PEFT's `use_dora`).
    Dora,
    /// Prefix tuning (`PREFIX_TUNING`): learned keys and values in every layer.
    Prefix,
    /// P-tuning (`P_TUNING`): virtual tokens from PEFT's MLP prompt encoder.
    PTuning,
    /// Prompt tuning (`PROMPT_TUNING`): learned virtual-token embeddings.
    Prompt,
    /// Every weight trained; saved as a transformers model directory.
    Full,
}

impl ClassifyMethod {
    /// Every method, in `--help` order.
    pub const ALL: [Self; 6] = [
        Self::Lora,
        Self::Dora,
        Self::Prefix,
        Self::PTuning,
        Self::Prompt,
        Self::Full,
    ];

    /// The `--method` spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Lora => "lora",
            Self::Dora => "dora",
            Self::Prefix => "prefix",
            Self::PTuning => "p-tuning",
            Self::Prompt => "prompt",
            Self::Full => "full",
        }
    }

    /// The prompt-learning method (`None` for LoRA, DoRA and full).
    pub fn prompt_method(self) -> Option<PromptMethod> {
        match self {
            Self::Prefix => Some(PromptMethod::Prefix),
            Self::PTuning => Some(PromptMethod::PTuning),
            Self::Prompt => Some(PromptMethod::PromptTuning),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClassifyMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why PEFT cannot apply `method` to a classifier of HF `model_type`; `None` when it can and
/// tilpass implements it (see the module's table).
pub fn unsupported_reason(model_type: &str, method: ClassifyMethod) -> Option<String> {
    let prompt = method.prompt_method().is_some();
    match model_type {
        "bert" => None,
        "ltgbert" | "norbert" | "norbert3" if prompt => Some(format!(
            "PEFT cannot apply {method} to NorBERT3 / LTG-BERT: its prompt learning for \
             SEQ_CLS passes `inputs_embeds` / `past_key_values`, which LTG-BERT's modelling \
             code does not take; use lora, dora or full"
        )),
        "ltgbert" | "norbert" | "norbert3" => None,
        t if is_decoder(t) => None,
        other => Some(format!(
            "`tilpass train classify` trains BERT, NorBERT3 / LTG-BERT and Llama / Mistral / \
             GPT-2 classifiers; model_type `{other}` is not one of them"
        )),
    }
}

/// Whether HF `model_type` is a decoder family that trains as a sequence classifier
/// ([`DecoderClassifier`]: Llama, Mistral, GPT-2).
pub fn is_decoder(model_type: &str) -> bool {
    matches!(model_type, "llama" | "mistral" | "gpt2")
}

/// The `model_type` of the model directory `dir` (its `config.json`).
pub fn model_type_of(dir: &Path) -> Result<String> {
    let md = tilpass_core::ModelDir::open(dir)?;
    Ok(md.model_type().unwrap_or("").to_string())
}

/// The pad id a decoder classifier scores with: the config's `pad_token_id`, else the
/// tokenizer's pad token, else its EOS token (what TRL / transformers users copy into
/// `model.config.pad_token_id`); `None` when there is none of them.
pub fn decoder_pad_id(
    model: &DecoderClassifier,
    tok: Option<&tilpass_tokenize::Tokenizer>,
) -> Option<u32> {
    model
        .pad_token_id()
        .or_else(|| tok.and_then(|t| t.pad_id()))
}

/// Loads the decoder of `dir` (a causal LM or a `*ForSequenceClassification`) as a classifier
/// of `labels`: the checkpoint's score head when it has one (it must have `labels.len()`
/// outputs), else a new one drawn from `seed`; the pad id set as [`decoder_pad_id`] finds it
/// with the tokenizer of `dir` (when it has one).
pub fn load_decoder_classifier(
    dir: &Path,
    labels: &[String],
    seed: u64,
    device: &Device,
) -> Result<DecoderClassifier> {
    let init = ScoreInit::NewIfMissing {
        num_labels: labels.len(),
        seed,
    };
    let mut model = DecoderClassifier::load_with(dir, init, device)?;
    model.set_labels(labels.to_vec())?;
    let tok = tilpass_tokenize::Tokenizer::from_dir(dir).ok();
    let pad = decoder_pad_id(&model, tok.as_ref());
    model.set_pad_token_id(pad);
    Ok(model)
}

/// A decoder without a pad id takes batches of one row only (transformers: "Cannot handle
/// batch sizes > 1 if no padding token is defined"): a typed error naming `setting` otherwise.
pub fn check_decoder_batch(
    model: &DecoderClassifier,
    setting: &str,
    batch_size: usize,
) -> Result<()> {
    if model.pad_token_id().is_none() && batch_size > 1 {
        return Err(TrainError::setting(
            setting,
            batch_size,
            format!(
                "1: the {} model has no pad_token_id and its tokenizer no pad or EOS token, \
                 so padded batches cannot be scored (as in transformers)",
                model.model_type()
            ),
        ));
    }
    Ok(())
}

/// Writes a fully fine-tuned decoder classifier as transformers'
/// `*ForSequenceClassification` directory ([`DecoderClassifier::save`]: `config.json` with
/// `id2label` / `label2id` and `pad_token_id`, `model.safetensors`), the base's tokenizer
/// files and `labels.json`.
pub fn save_full_decoder_classifier(
    model: &DecoderClassifier,
    base: &Path,
    labels: &[String],
    out: &Path,
) -> Result<()> {
    model.save(out, tilpass_core::SaveDtype::F32)?;
    copy_tokenizer_files(base, out)?;
    write_labels(out, labels)
}

fn copy_tokenizer_files(base: &Path, out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(base).map_err(|e| tilpass_core::Error::io(base, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let copy = name.starts_with("tokenizer")
            || name == "vocab.txt"
            || name == "special_tokens_map.json"
            || name.ends_with(".py");
        if copy && entry.path().is_file() {
            std::fs::copy(entry.path(), out.join(&name))
                .map_err(|e| tilpass_core::Error::io(out.join(&name), e))?;
        }
    }
    Ok(())
}

/// [`unsupported_reason`] as a typed error naming the `method` setting.
pub fn check_method(model_type: &str, method: ClassifyMethod) -> Result<()> {
    match unsupported_reason(model_type, method) {
        None => Ok(()),
        Some(why) => Err(TrainError::setting("method", method, why)),
    }
}

/// The prompt dimensions of a BERT model (prefix tuning: every layer, all heads).
pub fn bert_prompt_dims(model: &Bert) -> PromptDims {
    let c = model.config();
    PromptDims {
        hidden: c.hidden_size,
        layers: c.num_hidden_layers,
        kv_heads: c.num_attention_heads,
        head_dim: c.hidden_size / c.num_attention_heads.max(1),
    }
}

/// A BERT sequence classifier with a prompt-learning adapter, as PEFT's
/// `PeftModelForSequenceClassification`: the encoder frozen, the adapter (table or prompt
/// encoder) and the head (`classifier`, PEFT's `modules_to_save`) trained.
#[derive(Debug)]
pub struct PromptClassifier {
    /// The classifier (frozen except its `classifier` head).
    pub model: Bert,
    /// The adapter.
    pub prompt: PromptAdapter,
}

const HEAD: &str = "classifier";

impl PromptClassifier {
    /// Freezes `model` except its head and makes the adapter's parameters trainable.
    pub fn new(mut model: Bert, mut prompt: PromptAdapter) -> Self {
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

    /// Loads a PEFT `SEQ_CLS` prompt-learning adapter saved by [`Self::save`] (or PEFT) onto
    /// `model` (a BERT classifier with the adapter's number of labels): its table and head.
    pub fn load(mut model: Bert, dir: &Path, device: &Device) -> Result<Self> {
        let prompt = PromptAdapter::load_with(dir, bert_prompt_dims(&model), device)?;
        if prompt.apply_saved_modules(&mut model)? == 0 {
            return Err(TrainError::Config(format!(
                "{}: the adapter holds no `base_model.{HEAD}.weight` (a SEQ_CLS adapter saves \
                 its classifier head)",
                dir.display()
            )));
        }
        Ok(Self { model, prompt })
    }

    /// The head's parameters: `classifier.weight` `[hidden, labels]`, `classifier.bias`.
    fn head_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let mut out = Vec::new();
        for (name, lin) in self.model.linears_mut() {
            if name == HEAD {
                out.push((format!("{HEAD}.weight"), ParamMut::D2(&mut lin.weight)));
                if let Some(b) = lin.bias.as_mut() {
                    out.push((format!("{HEAD}.bias"), ParamMut::D1(b)));
                }
            }
        }
        out
    }

    fn params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let Self { model, prompt } = self;
        let mut out = prompt.trainable_params_mut();
        for (name, lin) in model.linears_mut() {
            if name == HEAD {
                out.push((format!("{HEAD}.weight"), ParamMut::D2(&mut lin.weight)));
                if let Some(b) = lin.bias.as_mut() {
                    out.push((format!("{HEAD}.bias"), ParamMut::D1(b)));
                }
            }
        }
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

    /// Writes the adapter in PEFT's layout with the head as `base_model.classifier.weight`
    /// (`[labels, hidden]`) and `.bias`.
    pub fn save(&mut self, dir: &Path) -> Result<()> {
        let mut saved = Vec::new();
        for (name, lin) in self.model.linears() {
            if name == HEAD {
                let w = HostTensor::from_tensor(&lin.weight.val()).transposed()?;
                saved.push((format!("base_model.{HEAD}.weight"), w));
                if let Some(b) = &lin.bias {
                    saved.push((
                        format!("base_model.{HEAD}.bias"),
                        HostTensor::from_tensor(&b.val()),
                    ));
                }
            }
        }
        self.prompt.saved_modules = saved;
        Ok(self.prompt.save(dir)?)
    }
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

impl HasLinears for PromptClassifier {
    fn linears(&self) -> Vec<(String, &tilpass_models::Linear)> {
        self.model.linears()
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut tilpass_models::Linear)> {
        self.model.linears_mut()
    }
    fn model_type(&self) -> String {
        self.model.model_type()
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

impl SequenceClassifier for PromptClassifier {
    fn classify(&self, input: &EncoderInput) -> tilpass_models::Result<Tensor<2>> {
        self.prompt
            .forward_classifier(&self.model, input)
            .map_err(|e| tilpass_models::ModelError::Input(e.to_string()))
    }
    fn problem_type(&self) -> tilpass_models::Result<ProblemType> {
        SequenceClassifier::problem_type(&self.model)
    }
    fn num_labels(&self) -> usize {
        SequenceClassifier::num_labels(&self.model)
    }
}

/// `Trainable` for a prompt-learning classifier (fields `prompt: PromptAdapter` and `model`,
/// methods `params_mut`, `save`): the adapter's table / encoder and the head, named `$head`
/// in progress lines.
macro_rules! prompt_classifier_trainable {
    ($ty:ty, $head:literal) => {
        impl Trainable for $ty {
            fn tag(&self) -> (String, bool, Option<String>) {
                (
                    "default".into(),
                    false,
                    Some(self.prompt.config.peft_type.clone()),
                )
            }
            fn describe(&self) -> String {
                format!(
                    concat!("the {} adapter and the ", $head),
                    self.prompt.config.peft_type
                )
            }
            fn param_sizes(&mut self) -> BTreeMap<String, usize> {
                self.params_mut()
                    .iter()
                    .map(|(n, p)| (n.clone(), numel(p)))
                    .collect()
            }
            fn grads(&mut self, grads: &Gradients) -> NamedGrads {
                collect_grads(&self.params_mut(), grads)
            }
            fn update(&mut self, opt: &mut AdamW, grads: &NamedGrads, lr: f64) {
                let mut params = self.params_mut();
                opt.step(&mut params, grads, lr);
            }
            fn save_weights(&mut self, dir: &Path) -> Result<()> {
                self.save(dir)
            }
            fn restore_weights(&mut self, dir: &Path) -> Result<()> {
                let device = self.device();
                let loaded = PromptAdapter::load_with(dir, self.prompt.dims(), &device)?;
                if loaded.method != self.prompt.method
                    || loaded.encoder.as_ref().map(|e| e.kind())
                        != self.prompt.encoder.as_ref().map(|e| e.kind())
                {
                    return Err(TrainError::Resume {
                        path: dir.display().to_string(),
                        message: format!(
                            "the checkpoint's adapter ({}) is not the one this run trains ({})",
                            loaded.config.peft_type, self.prompt.config.peft_type
                        ),
                    });
                }
                loaded.apply_saved_modules(&mut self.model)?;
                // Keep the run's config (base_model_name_or_path, ...) with the restored weights.
                let run = std::mem::replace(&mut self.prompt, loaded);
                self.prompt.config = run.config;
                for (_, p) in self.params_mut() {
                    track(p);
                }
                Ok(())
            }
            fn device(&mut self) -> Device {
                self.prompt.table.val().device()
            }
        }
    };
}
pub(crate) use prompt_classifier_trainable;

prompt_classifier_trainable!(PromptClassifier, "classifier head");

/// Trains `pm` (adapter and head: [`PromptClassifier`] or
/// [`DecoderPromptClassifier`]) on `train` with the shared loop: AdamW, schedule,
/// accumulation, clipping, checkpoints, `metrics.jsonl`.
pub fn train_prompt_classifier<P: Trainable + SequenceClassifier>(
    pm: &mut P,
    train: &[ClsBatch],
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_trainable(
        pm,
        &tokens,
        &mut |m: &mut P, i| {
            let (loss, items) = classification_loss(m, &train[i])?;
            Ok(BatchLoss {
                loss,
                items,
                metrics: Vec::new(),
            })
        },
        &mut |_: &mut P, _| -> Result<Option<EvalLog>> { Ok(None) },
        cfg,
        resume,
        on_event,
    )
}

/// Writes a fully fine-tuned classifier as a transformers model directory: `config.json` (the
/// base's, with `architectures`, `id2label` / `label2id` of `labels`), `model.safetensors`
/// (HF names, `[out, in]` linear weights), the base's tokenizer files and remote code
/// (`*.py`), and `labels.json`.
pub fn save_full_classifier(
    model: &EncoderModel,
    base: &Path,
    labels: &[String],
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| tilpass_core::Error::io(out, e))?;
    let (tensors, arch) = match model {
        EncoderModel::Bert(b) => (hf_tensors(b.as_ref())?, "BertForSequenceClassification"),
        EncoderModel::LtgBert(b) => (hf_tensors(b.as_ref())?, "NorbertForSequenceClassification"),
    };
    let mut config: serde_json::Value =
        tilpass_core::read_json(base.join(tilpass_core::CONFIG_FILE))?;
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), l.as_str().into()))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), i.into()))
        .collect();
    if let Some(o) = config.as_object_mut() {
        // LTG-BERT keeps its own class family (`Norbert…`, `Ltgbert…`) with the
        // sequence-classification head: the loader picks the head (`head.*`) from it.
        let arch = match (model, o.get("architectures").and_then(|a| a[0].as_str())) {
            (EncoderModel::LtgBert(_), Some(base_arch)) => {
                let family = ["ForMaskedLM", "ForSequenceClassification", "Model"]
                    .iter()
                    .find_map(|s| base_arch.strip_suffix(s))
                    .unwrap_or(base_arch);
                format!("{family}ForSequenceClassification")
            }
            _ => arch.to_string(),
        };
        o.insert("architectures".into(), serde_json::json!([arch]));
        o.insert("id2label".into(), id2label.into());
        o.insert("label2id".into(), label2id.into());
        o.remove("num_labels");
    }
    tilpass_core::write_atomic(
        out.join(tilpass_core::CONFIG_FILE),
        serde_json::to_string_pretty(&config).map_err(|e| TrainError::Config(e.to_string()))?,
    )?;
    tilpass_core::save_safetensors(
        out.join(tilpass_core::SAFETENSORS_FILE),
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        tilpass_core::SaveDtype::F32,
        Some(
            [("format".to_string(), "pt".to_string())]
                .into_iter()
                .collect(),
        ),
    )?;
    copy_tokenizer_files(base, out)?;
    write_labels(out, labels)
}

/// Writes `labels.json` into `dir`.
pub fn write_labels(dir: &Path, labels: &[String]) -> Result<()> {
    let json = serde_json::to_string(labels).map_err(|e| TrainError::Config(e.to_string()))?;
    tilpass_core::write_atomic(dir.join(LABELS_FILE), json)?;
    Ok(())
}

/// A classifier ready to predict, whatever method trained it.
#[derive(Debug)]
pub enum LoadedClassifier {
    /// A LoRA / DoRA adapter merged into its encoder, or a full model.
    Encoder(EncoderModel),
    /// A BERT with a prompt-learning adapter.
    Prompt(Box<PromptClassifier>),
    /// A Llama / Mistral / GPT-2 sequence classifier (a LoRA / DoRA adapter merged, or a full
    /// model).
    Decoder(Box<DecoderClassifier>),
    /// A Llama / Mistral / GPT-2 sequence classifier with a prompt-learning adapter.
    DecoderPrompt(Box<DecoderPromptClassifier>),
}

impl LoadedClassifier {
    /// The padding token id of the encoder's vocabulary.
    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Encoder(m) => m.pad_token_id(),
            Self::Prompt(p) => p.model.config().pad_token_id.unwrap_or(0),
            // Without a pad id only one-row batches are scored: no padding is needed.
            Self::Decoder(d) => d.pad_token_id().unwrap_or(0),
            Self::DecoderPrompt(d) => d.model.pad_token_id().unwrap_or(0),
        }
    }
}

impl HasLinears for LoadedClassifier {
    fn linears(&self) -> Vec<(String, &tilpass_models::Linear)> {
        match self {
            Self::Encoder(m) => m.linears(),
            Self::Prompt(p) => p.linears(),
            Self::Decoder(d) => d.linears(),
            Self::DecoderPrompt(d) => d.linears(),
        }
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut tilpass_models::Linear)> {
        match self {
            Self::Encoder(m) => m.linears_mut(),
            Self::Prompt(p) => p.linears_mut(),
            Self::Decoder(d) => d.linears_mut(),
            Self::DecoderPrompt(d) => d.linears_mut(),
        }
    }
    fn model_type(&self) -> String {
        match self {
            Self::Encoder(m) => m.model_type(),
            Self::Prompt(p) => p.model_type(),
            Self::Decoder(d) => d.model_type(),
            Self::DecoderPrompt(d) => d.model_type(),
        }
    }
    fn parameter_count(&self) -> usize {
        match self {
            Self::Encoder(m) => m.parameter_count(),
            Self::Prompt(p) => p.parameter_count(),
            Self::Decoder(d) => d.parameter_count(),
            Self::DecoderPrompt(d) => d.parameter_count(),
        }
    }
    fn freeze(&mut self) {
        match self {
            Self::Encoder(m) => m.freeze(),
            Self::Prompt(p) => p.freeze(),
            Self::Decoder(d) => d.freeze(),
            Self::DecoderPrompt(d) => d.freeze(),
        }
    }
    fn map_params(&mut self, grads: Option<&Gradients>, f: &mut ParamFn<'_>) {
        match self {
            Self::Encoder(m) => m.map_params(grads, f),
            Self::Prompt(p) => p.map_params(grads, f),
            Self::Decoder(d) => d.map_params(grads, f),
            Self::DecoderPrompt(d) => d.map_params(grads, f),
        }
    }
}

impl SequenceClassifier for LoadedClassifier {
    fn classify(&self, input: &EncoderInput) -> tilpass_models::Result<Tensor<2>> {
        match self {
            Self::Encoder(m) => m.classify(input),
            Self::Prompt(p) => p.classify(input),
            Self::Decoder(d) => d.classify(input),
            Self::DecoderPrompt(d) => d.classify(input),
        }
    }
    fn problem_type(&self) -> tilpass_models::Result<ProblemType> {
        match self {
            Self::Encoder(m) => m.problem_type(),
            Self::Prompt(p) => p.problem_type(),
            Self::Decoder(d) => d.problem_type(),
            Self::DecoderPrompt(d) => d.problem_type(),
        }
    }
    fn num_labels(&self) -> usize {
        match self {
            Self::Encoder(m) => SequenceClassifier::num_labels(m),
            Self::Prompt(p) => p.num_labels(),
            Self::Decoder(d) => SequenceClassifier::num_labels(d.as_ref()),
            Self::DecoderPrompt(d) => SequenceClassifier::num_labels(d.as_ref()),
        }
    }
}

/// Loads what `tilpass train classify` saved in `saved` — a full model directory
/// (`config.json`), a LoRA / DoRA adapter or a prompt-learning adapter (`adapter_config.json`,
/// on the base encoder in `base`) — with its labels (`labels.json`; for a model directory
/// without it, the config's `id2label`).
pub fn load_classifier(
    base: &Path,
    saved: &Path,
    device: &Device,
) -> Result<(LoadedClassifier, Vec<String>)> {
    let labels_file = saved.join(LABELS_FILE);
    if saved.join(tilpass_core::CONFIG_FILE).exists() && is_decoder(&model_type_of(saved)?) {
        let mut model = DecoderClassifier::load(saved, device)?;
        let names: Vec<String> = if labels_file.exists() {
            tilpass_core::read_json(&labels_file)?
        } else {
            model.labels().to_vec()
        };
        if names.len() != model.num_labels() {
            return Err(TrainError::Config(format!(
                "{}: {} labels for a score head of {} outputs",
                labels_file.display(),
                names.len(),
                model.num_labels()
            )));
        }
        let tok = tilpass_tokenize::Tokenizer::from_dir(saved)
            .or_else(|_| tilpass_tokenize::Tokenizer::from_dir(base))
            .ok();
        let pad = decoder_pad_id(&model, tok.as_ref());
        model.set_pad_token_id(pad);
        return Ok((LoadedClassifier::Decoder(Box::new(model)), names));
    }
    if saved.join(tilpass_core::CONFIG_FILE).exists() {
        let model = EncoderModel::load(saved, device)?;
        let names = match model.labels()? {
            _ if labels_file.exists() => tilpass_core::read_json(&labels_file)?,
            Some(names) => names,
            None => {
                return Err(TrainError::Config(format!(
                    "{}: no id2label in config.json and no {LABELS_FILE}",
                    saved.display()
                )));
            }
        };
        return Ok((LoadedClassifier::Encoder(model), names));
    }
    let names: Vec<String> = tilpass_core::read_json(&labels_file)?;
    let cfg_path = saved.join(tilpass_peft::ADAPTER_CONFIG);
    let cfg: serde_json::Value = tilpass_core::read_json(&cfg_path)?;
    let peft_type = cfg
        .get("peft_type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let base_type = model_type_of(base)?;
    if is_decoder(&base_type) {
        let model = load_decoder_classifier(base, &names, 0, device)?;
        if matches!(peft_type, "PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING") {
            let pm = DecoderPromptClassifier::load(model, saved, device)?;
            return Ok((LoadedClassifier::DecoderPrompt(Box::new(pm)), names));
        }
        let mut peft = PeftModel::new(model);
        peft.load_adapter(saved, "default")?;
        return Ok((
            LoadedClassifier::Decoder(Box::new(peft.into_model())),
            names,
        ));
    }
    let model = EncoderModel::load(base, device)?.with_new_classifier(&names, 0)?;
    match (peft_type, model) {
        ("PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING", EncoderModel::Bert(bert)) => {
            let pm = PromptClassifier::load(*bert, saved, device)?;
            Ok((LoadedClassifier::Prompt(Box::new(pm)), names))
        }
        ("PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING", m) => Err(TrainError::Config(format!(
            "{}: a {peft_type} adapter; prompt learning applies to BERT classifiers, not \
             model_type `{}`",
            cfg_path.display(),
            m.model_type()
        ))),
        (_, model) => {
            let mut peft = PeftModel::new(model);
            peft.load_adapter(saved, "default")?;
            Ok((LoadedClassifier::Encoder(peft.into_model()), names))
        }
    }
}

/// The directory a run saves into: `out/adapter` for adapters, `out/model` for `full`.
pub fn saved_dir(out: &Path, method: ClassifyMethod) -> PathBuf {
    match method {
        ClassifyMethod::Full => out.join("model"),
        _ => out.join("adapter"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_spell_as_the_flag_and_round_trip_through_serde() {
        for m in ClassifyMethod::ALL {
            let v = serde_json::to_value(m).unwrap();
            assert_eq!(v, serde_json::json!(m.name()));
            assert_eq!(serde_json::from_value::<ClassifyMethod>(v).unwrap(), m);
        }
        assert!(serde_json::from_value::<ClassifyMethod>(serde_json::json!("ia3")).is_err());
    }

    #[test]
    fn ltg_bert_refuses_prompt_learning_and_names_the_setting() {
        for m in ClassifyMethod::ALL {
            assert!(check_method("bert", m).is_ok(), "{m}");
            let ltg = check_method("ltgbert", m);
            assert_eq!(ltg.is_err(), m.prompt_method().is_some(), "{m}");
            if let Err(e) = ltg {
                let e = e.to_string();
                assert!(e.contains("method") && e.contains("LTG-BERT"), "{e}");
            }
        }
        let e = check_method("t5", ClassifyMethod::Lora)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t5"), "{e}");
        for family in ["llama", "mistral", "gpt2"] {
            for m in ClassifyMethod::ALL {
                assert!(check_method(family, m).is_ok(), "{family} {m}");
            }
        }
    }
}
