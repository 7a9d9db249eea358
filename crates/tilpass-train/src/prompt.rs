//! Training prompt-learning adapters — prompt tuning, P-tuning, prefix tuning — on the shared
//! loop ([`train_trainable`]): the base model frozen, only the virtual-token table or the prompt
//! encoder that produces it trained, with the AdamW / schedule / accumulation / clipping /
//! evaluation / checkpoint / exact-resume machinery of LoRA. Decoders train as PEFT's
//! `PeftModelForCausalLM` (virtual tokens in front, labels padded with -100; prefix tuning
//! through the KV cache), encoder-decoders as `PeftModelForSeq2SeqLM` (virtual tokens in front
//! of the encoder input; prefix tuning in the decoder's self-attention cache; see
//! [`PromptAdapter::forward_seq2seq`]). Checkpoints hold the adapter in PEFT's format plus the
//! prompt encoder's weights (`tilpass_prompt_encoder.safetensors`), so a run resumes exactly;
//! the final adapter loads in PEFT.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Gradients, Tensor};
use tilpass_models::{DecoderLm, EncoderInput, EncoderOutput, HasLinears, Seq2SeqModel, T5Cache};
use tilpass_peft::{ParamMut, PromptAdapter, PromptMethod};
use tilpass_tokenize::IGNORE_INDEX;

use crate::error::{Result, TrainError};
use crate::optim::{AdamW, NamedGrads, collect_grads};
use crate::seq2seq::Seq2SeqTrainBatch;
use crate::trainer::{
    BatchLoss, EvalLog, Event, LmBatch, Summary, TrainConfig, Trainable, train_trainable,
};

/// A frozen base model and the prompt-learning adapter trained on it.
#[derive(Debug)]
pub struct PromptModel<M> {
    /// The base model (frozen by [`PromptModel::new`]).
    pub model: M,
    /// The adapter: its table, or the prompt encoder producing it, is what trains.
    pub prompt: PromptAdapter,
}

impl<M: HasLinears> PromptModel<M> {
    /// Freezes `model` and makes the adapter's trainable parameters require gradients.
    pub fn new(mut model: M, mut prompt: PromptAdapter) -> Self {
        model.freeze();
        for (_, p) in prompt.trainable_params_mut() {
            match p {
                ParamMut::D1(p) => *p = p.clone().set_require_grad(true),
                ParamMut::D2(p) => *p = p.clone().set_require_grad(true),
            }
        }
        Self { model, prompt }
    }

    /// PEFT's trainable-parameter line for this adapter: `trainable params: N || all params:
    /// M || trainable%: P` (all = base + trainable).
    pub fn trainable_report(&mut self) -> String {
        let trainable = self.prompt.trainable_count();
        let all = self.model.parameter_count() + trainable;
        format!(
            "trainable params: {trainable} || all params: {all} || trainable%: {:.4}",
            100.0 * trainable as f64 / all.max(1) as f64
        )
    }
}

impl<M: HasLinears> Trainable for PromptModel<M> {
    fn tag(&self) -> (String, bool, Option<String>) {
        (
            "default".into(),
            false,
            Some(self.prompt.config.peft_type.clone()),
        )
    }
    fn describe(&self) -> String {
        format!("the {} adapter", self.prompt.config.peft_type)
    }
    fn param_sizes(&mut self) -> BTreeMap<String, usize> {
        self.prompt
            .trainable_params_mut()
            .into_iter()
            .map(|(n, p)| {
                let numel = match p {
                    ParamMut::D1(p) => p.dims()[0],
                    ParamMut::D2(p) => p.dims().iter().product(),
                };
                (n, numel)
            })
            .collect()
    }
    fn grads(&mut self, grads: &Gradients) -> NamedGrads {
        collect_grads(&self.prompt.trainable_params_mut(), grads)
    }
    fn update(&mut self, opt: &mut AdamW, grads: &NamedGrads, lr: f64) {
        let mut params = self.prompt.trainable_params_mut();
        opt.step(&mut params, grads, lr);
    }
    fn save_weights(&mut self, dir: &Path) -> Result<()> {
        Ok(self.prompt.save(dir)?)
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
                    "the checkpoint's adapter ({}, prompt encoder {:?}) is not the one this \
                     run trains ({}, prompt encoder {:?})",
                    loaded.config.peft_type,
                    loaded.encoder.as_ref().map(|e| e.kind()),
                    self.prompt.config.peft_type,
                    self.prompt.encoder.as_ref().map(|e| e.kind()),
                ),
            });
        }
        let prompt = std::mem::replace(&mut self.prompt, loaded);
        // Keep the run's config (base_model_name_or_path, ...) with the restored weights.
        self.prompt.config = prompt.config;
        for (_, p) in self.prompt.trainable_params_mut() {
            match p {
                ParamMut::D1(p) => *p = p.clone().set_require_grad(true),
                ParamMut::D2(p) => *p = p.clone().set_require_grad(true),
            }
        }
        Ok(())
    }
    fn device(&mut self) -> Device {
        self.prompt.table.val().device()
    }
}

/// Labels with `n` -100s in front of every row (`[batch, n + seq]`), as PEFT pads them for the
/// virtual tokens of prompt tuning / P-tuning on a decoder.
fn pad_labels(labels: &[i64], batch: usize, n: usize) -> Vec<i64> {
    let seq = labels.len() / batch.max(1);
    let mut out = Vec::with_capacity(batch * (n + seq));
    for r in 0..batch {
        out.extend(std::iter::repeat_n(IGNORE_INDEX, n));
        out.extend_from_slice(&labels[r * seq..(r + 1) * seq]);
    }
    out
}

/// PEFT's causal-LM loss of a batch with the adapter: the mean next-token NLL over labels !=
/// -100 (prompt tuning / P-tuning: the logits cover the virtual tokens too, their labels
/// -100), and the number of supervised tokens.
pub fn prompt_lm_loss(pm: &PromptModel<DecoderLm>, batch: &LmBatch) -> Result<(Tensor<1>, usize)> {
    let hidden = pm.prompt.forward_hidden(&pm.model, &batch.input)?;
    let labels = match pm.prompt.method {
        PromptMethod::Prefix => batch.labels.clone(),
        _ => pad_labels(&batch.labels, batch.input.batch, pm.prompt.len()),
    };
    crate::fused_ce::causal_lm_loss_from_hidden(&pm.model, hidden, &labels)
}

/// The encoder-decoder loss of a batch with the adapter (the model's own loss from `labels`;
/// the decoder's inputs and labels are untouched, as PEFT), and the supervised tokens.
pub fn prompt_seq2seq_loss<M: Seq2SeqModel>(
    pm: &PromptModel<M>,
    batch: &Seq2SeqTrainBatch,
) -> Result<(Tensor<1>, usize)> {
    let logits = pm
        .prompt
        .forward_seq2seq(&pm.model, &batch.input, &batch.decoder_input_ids)?;
    crate::fused_ce::label_cross_entropy(logits, &pm.model.loss_labels(&batch.labels))
}

/// Mean loss per supervised token over `eval` with the adapter (decoder).
pub fn evaluate_prompt_lm(
    pm: &PromptModel<DecoderLm>,
    eval: &[LmBatch],
    step: usize,
) -> Result<EvalLog> {
    crate::trainer::token_mean_eval(step, eval.iter().map(|b| prompt_lm_loss(pm, b)))
}

/// Mean loss per supervised token over `eval` with the adapter (encoder-decoder).
pub fn evaluate_prompt_seq2seq<M: Seq2SeqModel>(
    pm: &PromptModel<M>,
    eval: &[Seq2SeqTrainBatch],
    step: usize,
) -> Result<EvalLog> {
    crate::trainer::token_mean_eval(step, eval.iter().map(|b| prompt_seq2seq_loss(pm, b)))
}

/// Sample generations logged with each evaluation, made with the adapter.
pub type PromptSampler<'a, M> = &'a dyn Fn(&PromptModel<M>) -> Result<Vec<String>>;

/// Trains the adapter of `pm` (a decoder) on `train`, evaluating on `eval` (with `sampler`'s
/// generations) every `cfg.eval_steps`; `resume` continues from a checkpoint directory of an
/// earlier run (the adapter and its prompt encoder are restored from it here).
#[allow(clippy::too_many_arguments)]
pub fn train_prompt_lm(
    pm: &mut PromptModel<DecoderLm>,
    train: &[LmBatch],
    eval: &[LmBatch],
    sampler: Option<PromptSampler<'_, DecoderLm>>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    for (i, b) in train.iter().enumerate() {
        if b.labels.iter().all(|l| *l < 0) {
            return Err(TrainError::NoSupervision { batch: i });
        }
    }
    let tokens: Vec<usize> = train.iter().map(|b| b.input.input_ids.len()).collect();
    train_trainable(
        pm,
        &tokens,
        &mut |m: &mut PromptModel<DecoderLm>, i| {
            let (loss, items) = prompt_lm_loss(m, &train[i])?;
            Ok(BatchLoss {
                loss,
                items,
                metrics: Vec::new(),
            })
        },
        &mut |m: &mut PromptModel<DecoderLm>, step| {
            if eval.is_empty() {
                return Ok(None);
            }
            let mut log = evaluate_prompt_lm(m, eval, step)?;
            if let Some(sample) = sampler {
                log.samples = sample(m)?;
            }
            Ok(Some(log))
        },
        cfg,
        resume,
        on_event,
    )
}

/// [`train_prompt_lm`] for an encoder-decoder (T5, NorT5).
#[allow(clippy::too_many_arguments)]
pub fn train_prompt_seq2seq<M: HasLinears + Seq2SeqModel>(
    pm: &mut PromptModel<M>,
    train: &[Seq2SeqTrainBatch],
    eval: &[Seq2SeqTrainBatch],
    sampler: Option<PromptSampler<'_, M>>,
    cfg: &TrainConfig,
    resume: Option<&Path>,
    on_event: &mut dyn FnMut(Event),
) -> Result<Summary> {
    for (i, b) in train.iter().enumerate() {
        if b.supervised() == 0 {
            return Err(TrainError::NoSupervision { batch: i });
        }
    }
    let tokens: Vec<usize> = train.iter().map(Seq2SeqTrainBatch::tokens).collect();
    train_trainable(
        pm,
        &tokens,
        &mut |m: &mut PromptModel<M>, i| {
            let (loss, items) = prompt_seq2seq_loss(m, &train[i])?;
            Ok(BatchLoss {
                loss,
                items,
                metrics: Vec::new(),
            })
        },
        &mut |m: &mut PromptModel<M>, step| {
            if eval.is_empty() {
                return Ok(None);
            }
            let mut log = evaluate_prompt_seq2seq(m, eval, step)?;
            if let Some(sample) = sampler {
                log.samples = sample(m)?;
            }
            Ok(Some(log))
        },
        cfg,
        resume,
        on_event,
    )
}

/// An encoder-decoder with a prompt adapter applied, as a [`Seq2SeqModel`] for generation
/// (`generate_seq2seq*`: greedy, beam search, sampling): prompt tuning / P-tuning encode the
/// input behind the virtual tokens; prefix tuning fills an empty decoder cache with the prefix
/// before the first decoder step (PEFT's `generate` semantics).
pub struct PromptSeq2Seq<'a, M: ?Sized> {
    /// The base model.
    pub model: &'a M,
    /// The adapter.
    pub prompt: &'a PromptAdapter,
}

impl<M: Seq2SeqModel + ?Sized> Seq2SeqModel for PromptSeq2Seq<'_, M> {
    fn encode(&self, input: &EncoderInput) -> tilpass_models::Result<EncoderOutput> {
        if self.prompt.method == PromptMethod::Prefix {
            return self.model.encode(input);
        }
        let n = self.prompt.config.num_virtual_tokens;
        let (b, s) = (input.batch, input.seq);
        let mut ext = EncoderInput {
            input_ids: Vec::with_capacity(b * (n + s)),
            attention_mask: Vec::with_capacity(b * (n + s)),
            token_type_ids: vec![0; b * (n + s)],
            batch: b,
            seq: n + s,
        };
        for r in 0..b {
            ext.input_ids.extend(std::iter::repeat_n(0, n));
            ext.input_ids
                .extend_from_slice(&input.input_ids[r * s..(r + 1) * s]);
            ext.attention_mask.extend(std::iter::repeat_n(1, n));
            ext.attention_mask
                .extend_from_slice(&input.attention_mask[r * s..(r + 1) * s]);
        }
        let [_, h] = self.prompt.table.dims();
        let rows = self
            .prompt
            .table_tensor()
            .slice([0..n, 0..h])
            .unsqueeze::<3>()
            .expand([b, n, h]);
        self.model.encode_with_prompt(&ext, Some(rows))
    }
    fn decode(
        &self,
        enc: &EncoderOutput,
        decoder_ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> tilpass_models::Result<Tensor<3>> {
        if self.prompt.method != PromptMethod::Prefix {
            return self.model.decode(enc, decoder_ids, t, cache);
        }
        let b = enc.hidden.dims()[0];
        let fresh = || T5Cache {
            self_attn: tilpass_models::KvCache::from_layers(self.prompt.prefix_layers_seq2seq(b)),
            cross: vec![None; self.model.num_decoder_layers()],
        };
        match cache {
            Some(c) if c.is_empty() => {
                *c = fresh();
                self.model.decode(enc, decoder_ids, t, Some(c))
            }
            Some(c) => self.model.decode(enc, decoder_ids, t, Some(c)),
            None => self.model.decode(enc, decoder_ids, t, Some(&mut fresh())),
        }
    }
    fn num_decoder_layers(&self) -> usize {
        self.model.num_decoder_layers()
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.model.eos_token_ids()
    }
    fn decoder_start_token_id(&self) -> u32 {
        self.model.decoder_start_token_id()
    }
    fn pad_token_id(&self) -> u32 {
        self.model.pad_token_id()
    }
    fn loss_labels(&self, labels: &[i64]) -> Vec<i64> {
        self.model.loss_labels(labels)
    }
    fn takes_prefix_cache(&self) -> bool {
        false
    }
    fn hidden_size(&self) -> usize {
        self.model.hidden_size()
    }
    fn kv_shape(&self) -> (usize, usize) {
        self.model.kv_shape()
    }
}
