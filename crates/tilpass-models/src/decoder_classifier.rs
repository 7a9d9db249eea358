//! Decoder sequence classifiers — transformers' `LlamaForSequenceClassification`,
//! `MistralForSequenceClassification` and `GPT2ForSequenceClassification` — the reward models
//! of preference optimisation.
//!
//! The layout is transformers': the base decoder under its usual prefix (`model.` for Llama /
//! Mistral, `transformer.` for GPT-2), no LM head, and `score.weight [num_labels, hidden]`
//! without a bias. The logits of a row are the score head applied to the final hidden state of
//! the row's **rightmost token that is not `pad_token_id`** — transformers 5.23 computes
//! `argmax(arange(seq) * (input_ids != pad_token_id))`, which handles right and left padding
//! alike, ignores the attention mask, takes column 0 for a row made only of pad ids, and stops
//! before a trailing token equal to the pad id (when pad = EOS, the EOS is not scored). Without
//! a `pad_token_id` the last column is scored, and a batch of more than one row is refused, as
//! transformers refuses it ([`ModelError::NoPadToken`]).
//!
//! PEFT names the head `score` (a `modules_to_save` module for the `SEQ_CLS` task type):
//! [`HasLinears`] lists it after the base decoder's layers, so a LoRA adapter with
//! `modules_to_save = ["score"]` trains and saves it as PEFT does.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde_json::Value;
use tilpass_core::{CONFIG_FILE, Checkpoint, HostTensor, ModelDir, SaveDtype, save_safetensors};

use crate::auto::{Family, Head};
use crate::decoder::{DecoderInput, DecoderLm, SUPPORTED_DECODERS};
use crate::encoder::{EncoderInput, ProblemType, SequenceClassifier};
use crate::error::{ModelError, Result};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::linear::{HasLinears, Linear, ParamFn, map_module_params};
use crate::llama::{Llama, LlamaConfig};
use crate::params::hf_tensors;

/// The score head's tensor name.
pub const SCORE_WEIGHT: &str = "score.weight";

/// A decoder with a sequence-classification (reward) head, transformers'
/// `*ForSequenceClassification` for Llama, Mistral and GPT-2.
#[derive(Debug)]
pub struct DecoderClassifier {
    /// The base decoder (loaded without an LM head; its LM logits are not used).
    base: DecoderLm,
    /// `score`: `[hidden, num_labels]` (burn's layout of `nn.Linear(hidden, num_labels,
    /// bias=False)`).
    score: Linear,
    /// The family (for the class name).
    family: Family,
    /// `pad_token_id` of the config: which token is padding when looking for a row's last token.
    pad_token_id: Option<u32>,
    /// The config's `tie_word_embeddings` as read (the base is loaded without an LM head).
    tie_word_embeddings: bool,
    /// Label names (`id2label`), one per output.
    labels: Vec<String>,
}

/// Where the score head comes from when loading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScoreInit {
    /// From the checkpoint's `score.weight`: an error if it is absent.
    Checkpoint,
    /// From the checkpoint when it holds `score.weight`, else a new head of `num_labels`
    /// outputs drawn as transformers initialises it (normal, mean 0, std `initializer_range`,
    /// default 0.02) from `seed` — what `AutoModelForSequenceClassification` does with a
    /// causal-LM checkpoint and what TRL's `RewardTrainer` starts from.
    NewIfMissing {
        /// Outputs of a new head (1 for a reward model).
        num_labels: usize,
        /// Seed of the new head's random numbers.
        seed: u64,
    },
}

fn num_labels_of(config: &Value) -> usize {
    match config.get("id2label").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m.len(),
        // transformers' `PretrainedConfig` default.
        _ => config
            .get("num_labels")
            .and_then(Value::as_u64)
            .map_or(2, |n| n as usize),
    }
}

fn labels_of(config: &Value, n: usize) -> Vec<String> {
    let map = config.get("id2label").and_then(Value::as_object);
    (0..n)
        .map(|i| {
            map.and_then(|m| m.get(&i.to_string()))
                .and_then(Value::as_str)
                .map_or_else(|| format!("LABEL_{i}"), str::to_string)
        })
        .collect()
}

impl DecoderClassifier {
    /// Loads a `*ForSequenceClassification` directory saved by transformers (or by
    /// [`Self::save`]): the base decoder and `score.weight`. Errors name the file: an
    /// unsupported `model_type`, or [`ModelError::MissingHead`] when the checkpoint holds no
    /// score head (a causal LM: see [`Self::load_with`]).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(dir, ScoreInit::Checkpoint, device)
    }

    /// Loads the base decoder of any Llama / Mistral / GPT-2 directory (causal LM or sequence
    /// classifier; an LM head in the checkpoint is not read) and the score head as `init`
    /// says.
    pub fn load_with(dir: impl AsRef<Path>, init: ScoreInit, device: &Device) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let path = md.path().join(CONFIG_FILE).display().to_string();
        let model_type = md.model_type().unwrap_or("").to_string();
        let json = md.config_json().clone();
        let ckpt = md.checkpoint()?;
        let family = Family::from_model_type(&model_type)
            .filter(|f| matches!(f, Family::Llama | Family::Mistral | Family::Gpt2))
            .ok_or_else(|| ModelError::UnsupportedModelType {
                path: path.clone(),
                model_type: if model_type.is_empty() {
                    "(none)".into()
                } else {
                    model_type.clone()
                },
                supported: SUPPORTED_DECODERS.join(", "),
            })?;
        // The base without an LM head: the head's tensor is neither needed nor read. The
        // config's own `tie_word_embeddings` (its class default when absent) is kept for saving.
        let (base, tie) = match family {
            Family::Gpt2 => {
                let mut cfg: Gpt2Config = md.config()?;
                let tie = std::mem::replace(&mut cfg.tie_word_embeddings, true);
                let m = Gpt2::load(cfg, &ckpt, &path, device)?;
                (DecoderLm::Gpt2(Box::new(m)), tie)
            }
            _ => {
                let mut cfg: LlamaConfig = md.config()?;
                let tie = std::mem::replace(&mut cfg.tie_word_embeddings, true);
                let m = Llama::load(cfg, &ckpt, &path, device)?;
                (DecoderLm::Llama(Box::new(m)), tie)
            }
        };
        let hidden = base.hidden_size();
        let initializer_range = json
            .get("initializer_range")
            .and_then(Value::as_f64)
            .unwrap_or(0.02);
        let (score, n) = match (init, ckpt.contains(SCORE_WEIGHT)) {
            (_, true) => {
                let n = match init {
                    ScoreInit::NewIfMissing { num_labels, .. } => num_labels,
                    ScoreInit::Checkpoint => num_labels_of(&json),
                };
                (read_score(&ckpt, &path, n, hidden, device)?, n)
            }
            (ScoreInit::Checkpoint, false) => {
                return Err(ModelError::MissingHead {
                    path,
                    tensor: SCORE_WEIGHT.into(),
                    class: family.class_name(Head::SequenceClassification),
                });
            }
            (ScoreInit::NewIfMissing { num_labels, seed }, false) => {
                if num_labels == 0 {
                    return Err(ModelError::Input(
                        "a score head needs at least one label".into(),
                    ));
                }
                let mut rng = tilpass_core::SplitMix64::from_state(seed ^ 0x0005_C04E_4EAD);
                let w = rng.normal_vec(hidden * num_labels, initializer_range);
                let w = Tensor::<2>::from_data(TensorData::new(w, [hidden, num_labels]), device);
                (Linear::new(w, None), num_labels)
            }
        };
        let labels = if num_labels_of(&json) == n {
            labels_of(&json, n)
        } else {
            labels_of(&Value::Null, n)
        };
        Ok(Self {
            base,
            score,
            family,
            pad_token_id: json
                .get("pad_token_id")
                .and_then(Value::as_u64)
                .map(|p| p as u32),
            tie_word_embeddings: tie,
            labels,
        })
    }

    /// The base decoder.
    pub fn base(&self) -> &DecoderLm {
        &self.base
    }

    /// The score head (`[hidden, num_labels]`).
    pub fn score_head(&self) -> &Linear {
        &self.score
    }

    /// Number of outputs (1 for a reward model).
    pub fn num_labels(&self) -> usize {
        self.score.dims().1
    }

    /// The label names (`id2label`).
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Names the outputs (`id2label`, written by [`Self::save`]); an error unless there is one
    /// name per output.
    pub fn set_labels(&mut self, labels: Vec<String>) -> Result<()> {
        if labels.len() != self.num_labels() {
            return Err(ModelError::Input(format!(
                "{} label names for a score head of {} outputs",
                labels.len(),
                self.num_labels()
            )));
        }
        self.labels = labels;
        Ok(())
    }

    /// The score head, mutable (`weight` `[hidden, num_labels]`), e.g. to start from a
    /// reference's initial head.
    pub fn score_head_mut(&mut self) -> &mut Linear {
        &mut self.score
    }

    /// The family (Llama, Mistral or GPT-2).
    pub fn family(&self) -> Family {
        self.family
    }

    /// `pad_token_id` (the config's, or the one set with [`Self::set_pad_token_id`]).
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// Sets `pad_token_id`, as TRL's `RewardTrainer` copies the tokenizer's pad id into the
    /// model config (it is also written by [`Self::save`]).
    pub fn set_pad_token_id(&mut self, pad: Option<u32>) {
        self.pad_token_id = pad;
    }

    /// The column scored in each row of `input_ids` (`[batch, seq]` row-major), as
    /// transformers finds it (see the module docs). Errors on a batch of several rows without
    /// a pad id, or arrays that are not `batch × seq`.
    pub fn score_positions(
        &self,
        input_ids: &[u32],
        batch: usize,
        seq: usize,
    ) -> Result<Vec<usize>> {
        if input_ids.len() != batch * seq || seq == 0 {
            return Err(ModelError::Input(format!(
                "expected {batch}x{seq} input ids (seq >= 1), got {}",
                input_ids.len()
            )));
        }
        let Some(pad) = self.pad_token_id else {
            if batch != 1 {
                return Err(ModelError::NoPadToken { batch });
            }
            return Ok(vec![seq - 1]);
        };
        Ok(input_ids
            .chunks(seq)
            .map(|row| row.iter().rposition(|t| *t != pad).unwrap_or(0))
            .collect())
    }

    /// Scores `[batch, num_labels]` of `input` (transformers' pooled `logits`),
    /// differentiable w.r.t. the trained parameters.
    pub fn scores(&self, input: &DecoderInput) -> Result<Tensor<2>> {
        let (b, s) = (input.batch, input.seq);
        let pos = self.score_positions(&input.input_ids, b, s)?;
        let hidden = self.base.forward_hidden(input, None)?;
        let h = hidden.dims()[2];
        let idx: Vec<i64> = pos
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p as i64, h))
            .collect();
        let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, 1, h]), &hidden.device());
        let last = hidden.gather(1, idx).reshape([b, h]);
        Ok(self.score.forward(last))
    }

    /// The `config.json` that `save_pretrained` of the `*ForSequenceClassification` class
    /// writes: the base config with `architectures`, `id2label` / `label2id`, `pad_token_id`,
    /// the original `tie_word_embeddings` and `dtype`.
    pub fn hf_config(&self, dtype: SaveDtype) -> Result<Value> {
        let mut config = self
            .base
            .family()
            .hf_config()
            .map_err(|e| ModelError::Input(format!("config does not serialise: {e}")))?;
        let Value::Object(o) = &mut config else {
            return Err(ModelError::Input("config is not a JSON object".into()));
        };
        o.shift_remove("torch_dtype");
        o.shift_remove("num_labels");
        o.insert(
            "architectures".into(),
            Value::from(vec![self.family.class_name(Head::SequenceClassification)]),
        );
        let id2label: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::from(l.as_str())))
            .collect();
        let label2id: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), Value::from(i)))
            .collect();
        o.insert("id2label".into(), Value::Object(id2label));
        o.insert("label2id".into(), Value::Object(label2id));
        o.insert(
            "pad_token_id".into(),
            self.pad_token_id.map_or(Value::Null, Value::from),
        );
        o.insert(
            "tie_word_embeddings".into(),
            Value::from(self.tie_word_embeddings),
        );
        o.insert(
            "dtype".into(),
            match dtype {
                SaveDtype::F32 => "float32",
                SaveDtype::Bf16 => "bfloat16",
                SaveDtype::F16 => "float16",
            }
            .into(),
        );
        o.sort_keys();
        Ok(config)
    }

    /// Writes the model as transformers' `save_pretrained` of the `*ForSequenceClassification`
    /// class lays it out (`config.json`, `model.safetensors` with the base's HF names and
    /// `score.weight [num_labels, hidden]`), so that `AutoModelForSequenceClassification.
    /// from_pretrained(dir)` and [`Self::load`] read it back.
    pub fn save(&self, dir: impl AsRef<Path>, dtype: SaveDtype) -> Result<()> {
        let dir = dir.as_ref();
        let config = self.hf_config(dtype)?;
        let mut tensors = hf_tensors(self.base.family())?;
        tensors.push((
            SCORE_WEIGHT.to_string(),
            HostTensor::from_tensor(&self.score.weight.val()).transposed()?,
        ));
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        tilpass_core::write_atomic(
            dir.join(CONFIG_FILE),
            // Cannot fail: a serde_json::Value always serialises.
            serde_json::to_string_pretty(&config).expect("JSON value"),
        )?;
        save_safetensors(
            dir.join(tilpass_core::SAFETENSORS_FILE),
            tensors.iter().map(|(n, x)| (n.as_str(), x)),
            dtype,
            None,
        )?;
        Ok(())
    }
}

fn read_score(
    ckpt: &Checkpoint,
    path: &str,
    num_labels: usize,
    hidden: usize,
    device: &Device,
) -> Result<Linear> {
    let w = ckpt
        .read_f32_shaped(SCORE_WEIGHT, &[num_labels, hidden])
        .map_err(|e| ModelError::UnsupportedConfig {
            path: path.into(),
            message: format!(
                "{SCORE_WEIGHT} does not fit {num_labels} label(s) and hidden size {hidden}: {e}"
            ),
        })?;
    Ok(Linear::new(w.transposed()?.to_tensor(device)?, None))
}

impl HasLinears for DecoderClassifier {
    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = self.base.linears();
        out.push(("score".into(), &self.score));
        out
    }
    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = self.base.linears_mut();
        out.push(("score".into(), &mut self.score));
        out
    }
    fn model_type(&self) -> String {
        self.base.model_type()
    }
    fn conv1d_layers(&self) -> bool {
        self.base.conv1d_layers()
    }
    fn parameter_count(&self) -> usize {
        self.base.parameter_count() + self.score.num_params()
    }
    fn freeze(&mut self) {
        self.base.freeze();
        self.score = self.score.clone().no_grad();
    }
    fn map_params(&mut self, grads: Option<&burn::tensor::Gradients>, f: &mut ParamFn<'_>) {
        self.base.map_params(grads, f);
        self.score = map_module_params(self.score.clone(), grads, &mut |p: &str, v, rank, g| {
            f(&format!("score.{p}"), v, rank, g)
        });
    }
}

/// A decoder classifier reads the ids and attention mask of an [`EncoderInput`] (token type ids
/// are ignored; positions are `0..seq` in every row, as transformers makes them without
/// `position_ids`) and scores each row's last non-pad token ([`DecoderClassifier::scores`]).
/// The problem type is transformers' default: regression for one output, single-label
/// classification otherwise.
impl SequenceClassifier for DecoderClassifier {
    fn classify(&self, input: &EncoderInput) -> Result<Tensor<2>> {
        let (batch, seq) = (input.batch, input.seq);
        if input.input_ids.len() != batch * seq || input.attention_mask.len() != batch * seq {
            return Err(ModelError::Input(format!(
                "expected input ids and attention mask of {batch}x{seq}, got {} and {}",
                input.input_ids.len(),
                input.attention_mask.len()
            )));
        }
        let position_ids = (0..batch).flat_map(|_| 0..seq as i64).collect();
        self.scores(&DecoderInput {
            input_ids: input.input_ids.clone(),
            attention_mask: input.attention_mask.clone(),
            position_ids,
            batch,
            seq,
        })
    }
    fn problem_type(&self) -> Result<ProblemType> {
        ProblemType::from_config(None, DecoderClassifier::num_labels(self))
    }
    fn num_labels(&self) -> usize {
        DecoderClassifier::num_labels(self)
    }
}
