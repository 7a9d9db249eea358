//! Decoder-only language models loaded from a Hugging Face directory, behind one API.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tilpass_core::{CONFIG_FILE, ModelDir, SaveDtype, save_safetensors};
use tilpass_tokenize::{Batch, Padding};

use crate::attention::causal_mask;
pub use crate::decoder_family::DecoderFamily;
use crate::error::{ModelError, Result};
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::kv_cache::KvCache;
use crate::llama::{Llama, LlamaConfig};
use crate::params::hf_tensors;

/// `model_type`s that [`DecoderLm::load`] understands.
pub const SUPPORTED_DECODERS: [&str; 3] = ["llama", "mistral", "gpt2"];

/// A decoder-only causal language model.
#[derive(Debug)]
pub enum DecoderLm {
    /// Llama or Mistral.
    Llama(Box<Llama>),
    /// GPT-2.
    Gpt2(Box<Gpt2>),
}

/// A batch of token rows for [`DecoderLm::forward`], as host arrays.
#[derive(Debug, Clone)]
pub struct DecoderInput {
    /// Token ids, `[batch, seq]` row-major.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding, over cached + new columns: `[batch, past + seq]`.
    /// Packed rows (several documents in one row) number their documents instead — 1, 2, 3,
    /// ... per token — and attention then stays within each document (block-diagonal causal
    /// attention, as flash-attention's varlen packing does).
    pub attention_mask: Vec<u8>,
    /// Positions of the new tokens, `[batch, seq]`.
    pub position_ids: Vec<i64>,
    /// Rows.
    pub batch: usize,
    /// New tokens per row.
    pub seq: usize,
}

impl DecoderInput {
    /// A batch from rows of equal length with no padding (positions `0..seq`).
    pub fn unpadded(rows: &[Vec<u32>]) -> Result<Self> {
        let seq = rows.first().map(Vec::len).unwrap_or(0);
        if rows.iter().any(|r| r.len() != seq) || seq == 0 {
            return Err(ModelError::Input(
                "rows must be non-empty and of equal length".into(),
            ));
        }
        Self::from_batch(&Batch::from_ids(rows, Padding::right(0)))
    }

    /// The model input of a padded [`Batch`] (`tilpass_tokenize::Batch::pad`, any padding side,
    /// packed rows included): its ids, attention mask (document numbers in packed rows) and
    /// positions, `[batch, seq]`; its labels and token types are not model inputs. Errors on
    /// an empty batch, arrays that are not `batch × seq`, or a row without any token.
    pub fn from_batch(batch: &Batch) -> Result<Self> {
        let (b, seq) = (batch.batch_size, batch.seq_len);
        let n = b * seq;
        if batch.input_ids.len() != n
            || batch.attention_mask.len() != n
            || batch.position_ids.len() != n
        {
            return Err(ModelError::Input(format!(
                "expected input_ids, attention_mask and position_ids of {b}x{seq}, got {}, {} \
                 and {} values",
                batch.input_ids.len(),
                batch.attention_mask.len(),
                batch.position_ids.len()
            )));
        }
        if n == 0 || (0..b).any(|r| batch.row_mask(r).iter().all(|m| *m == 0)) {
            return Err(ModelError::Input(
                "every row needs at least one token".into(),
            ));
        }
        Ok(Self {
            input_ids: batch.input_ids.clone(),
            attention_mask: batch.attention_mask.clone(),
            position_ids: batch.position_ids.clone(),
            batch: b,
            seq,
        })
    }
}

impl DecoderLm {
    /// Loads a model directory (`config.json` + safetensors, single or sharded, any float dtype),
    /// dispatching on `model_type`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let path = md.path().join(CONFIG_FILE).display().to_string();
        let model_type = md.model_type().unwrap_or("").to_string();
        let ckpt = md.checkpoint()?;
        match model_type.as_str() {
            "llama" | "mistral" => {
                let cfg: LlamaConfig = md.config()?;
                Ok(Self::Llama(Box::new(Llama::load(
                    cfg, &ckpt, &path, device,
                )?)))
            }
            "gpt2" => {
                let cfg: Gpt2Config = md.config()?;
                Ok(Self::Gpt2(Box::new(Gpt2::load(cfg, &ckpt, &path, device)?)))
            }
            other => Err(ModelError::UnsupportedModelType {
                path,
                model_type: if other.is_empty() {
                    "(none)".into()
                } else {
                    other.into()
                },
                supported: SUPPORTED_DECODERS.join(", "),
            }),
        }
    }

    /// Writes the model as transformers' `save_pretrained` lays it out: `config.json` and
    /// `model.safetensors` with HF tensor names and `[out, in]` linear weights, so that
    /// `AutoModelForCausalLM.from_pretrained(dir)` and [`DecoderLm::load`] read it back.
    pub fn save(&self, dir: impl AsRef<Path>, dtype: SaveDtype) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        let t = hf_tensors(self.family())?;
        let mut config = self
            .family()
            .hf_config()
            .map_err(|e| ModelError::Input(format!("config does not serialise: {e}")))?;
        if let serde_json::Value::Object(o) = &mut config {
            // transformers 4 (< 4.56) spelled it `torch_dtype`; one key, with the written dtype.
            o.shift_remove("torch_dtype");
            o.insert(
                "dtype".into(),
                match dtype {
                    SaveDtype::F32 => "float32",
                    SaveDtype::Bf16 => "bfloat16",
                    SaveDtype::F16 => "float16",
                }
                .into(),
            );
        }
        tilpass_core::write_atomic(
            dir.join(CONFIG_FILE),
            serde_json::to_string_pretty(&config).expect("JSON value"),
        )?;
        save_safetensors(
            dir.join(tilpass_core::SAFETENSORS_FILE),
            t.iter().map(|(n, x)| (n.as_str(), x)),
            dtype,
            None,
        )?;
        Ok(())
    }

    /// Token embeddings `[batch, seq, hidden]` of `input`'s ids.
    pub fn embed_input(&self, input: &DecoderInput) -> Result<Tensor<3>> {
        if let Some(t) = input
            .input_ids
            .iter()
            .find(|t| **t as usize >= self.vocab_size())
        {
            return Err(ModelError::Input(format!(
                "token id {t} is outside the vocabulary of {}",
                self.vocab_size()
            )));
        }
        let ids: Vec<i64> = input.input_ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(ids, [input.batch, input.seq]),
            &self.device(),
        );
        Ok(self.family().embed(ids))
    }

    /// The family behind the model.
    pub fn family(&self) -> &dyn DecoderFamily {
        match self {
            Self::Llama(m) => m.as_ref(),
            Self::Gpt2(m) => m.as_ref(),
        }
    }

    /// The family behind the model, mutable.
    pub fn family_mut(&mut self) -> &mut dyn DecoderFamily {
        match self {
            Self::Llama(m) => m.as_mut(),
            Self::Gpt2(m) => m.as_mut(),
        }
    }

    /// Stores every linear weight (the LM head included; not the embeddings, norms, biases or
    /// adapters) in `dtype`, for inference: bf16 halves the bytes a decode step reads, and on
    /// Flex a decode step reads them as they are (f32 activations, bf16 converted in
    /// registers). Other backends cast the weight back to the activations' dtype in every
    /// product (correct, not faster). Changing it back to f32 does not restore the dropped
    /// precision. Saving writes the weights as they are stored now.
    pub fn set_weight_dtype(&mut self, dtype: crate::matvec::WeightDtype) {
        for slot in self.family_mut().param_slots_mut() {
            if let crate::params::SlotMut::Linear(l) = slot {
                l.set_weight_dtype(dtype);
            }
        }
    }

    /// Width of the model (embedding size).
    pub fn hidden_size(&self) -> usize {
        self.family().hidden_size()
    }

    /// `(key/value heads, head dim)` of the attention layers (what a KV cache holds).
    pub fn kv_shape(&self) -> (usize, usize) {
        self.family().kv_shape()
    }

    /// Number of layers (for [`KvCache::new`]).
    pub fn num_layers(&self) -> usize {
        self.family().num_layers()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.family().vocab_size()
    }

    /// Maximum positions.
    pub fn max_positions(&self) -> usize {
        self.family().max_positions()
    }

    /// EOS ids from the config.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.family().eos_token_ids()
    }

    fn device(&self) -> Device {
        self.family().device()
    }

    /// Logits `[batch, seq, vocab]` for the new tokens of `input`; with a cache, the cached
    /// columns are attended to and the new keys/values are appended.
    pub fn forward(&self, input: &DecoderInput, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        crate::pool::on_pool_polled(&self.device(), few_rows(input), || {
            let hidden = self.forward_hidden(input, cache)?;
            Ok(self.logits(hidden))
        })
    }

    /// Logits `[batch, seq, vocab]` from final hidden states `[batch, seq, hidden]`.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        crate::pool::on_pool(&self.device(), || self.family().lm_logits(hidden))
    }

    /// The LM head when it is a plain frozen matrix (adapter training: no bias, no adapter on
    /// it, no gradient), for the loss fused with it ([`crate::head_loss`]); `None` otherwise.
    pub fn frozen_lm_head(&self) -> Option<crate::head_loss::LmHead> {
        self.family().frozen_lm_head()
    }

    /// Final hidden states `[batch, seq, hidden]` (after the last norm) for the new tokens of
    /// `input`, e.g. for embeddings or a value head.
    pub fn forward_hidden(
        &self,
        input: &DecoderInput,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<3>> {
        self.forward_hidden_with_prompt(input, cache, None)
    }

    /// Logits like [`Self::forward`], with the embeddings of the first `n` columns replaced by
    /// `prompt [batch, n, hidden]` (prompt tuning / P-tuning: learned virtual tokens; their ids
    /// in `input` are placeholders).
    pub fn forward_with_prompt(
        &self,
        input: &DecoderInput,
        cache: Option<&mut KvCache>,
        prompt: Option<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        Ok(self.logits(self.forward_hidden_with_prompt(input, cache, prompt)?))
    }

    /// [`Self::forward_hidden`] with optional prompt embeddings (see [`Self::forward_with_prompt`]).
    pub fn forward_hidden_with_prompt(
        &self,
        input: &DecoderInput,
        cache: Option<&mut KvCache>,
        prompt: Option<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        crate::pool::on_pool_polled(&self.device(), few_rows(input), || {
            self.forward_hidden_here(input, cache, prompt)
        })
    }

    /// [`Self::forward_hidden_with_prompt`] on the calling thread.
    fn forward_hidden_here(
        &self,
        input: &DecoderInput,
        cache: Option<&mut KvCache>,
        prompt: Option<Tensor<3>>,
    ) -> Result<Tensor<3>> {
        let (b, s) = (input.batch, input.seq);
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        if input.input_ids.len() != b * s
            || input.position_ids.len() != b * s
            || input.attention_mask.len() != b * (past + s)
        {
            return Err(ModelError::Input(format!(
                "expected input_ids and position_ids of {b}x{s} and attention_mask of {b}x{}",
                past + s
            )));
        }
        let max = self.max_positions() as i64;
        if let Some(p) = input.position_ids.iter().find(|p| **p >= max) {
            return Err(ModelError::TooLong {
                len: *p as usize + 1,
                max: max as usize,
            });
        }
        if let Some(t) = input
            .input_ids
            .iter()
            .find(|t| **t as usize >= self.vocab_size())
        {
            return Err(ModelError::Input(format!(
                "token id {t} is outside the vocabulary of {}",
                self.vocab_size()
            )));
        }
        let device = self.device();
        let ids: Vec<i64> = input.input_ids.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let f = self.family();
        let mask = causal_mask(
            &input.attention_mask,
            b,
            s,
            past,
            f.sliding_window(),
            &device,
        );
        let x = crate::encoder::splice_prompt(f.embed(ids), prompt)?;
        Ok(f.hidden_from(x, &input.position_ids, &mask, cache))
    }
}

/// Log-probabilities of the next token, shifted as in causal-LM training: entry `[b, t]` is
/// `log p(labels[b, t + 1] | tokens ..= t)` from `logits [batch, seq, vocab]` and `labels`
/// (`[batch, seq]` row-major, -100 = ignored). Returns `[batch, seq - 1]` with 0 at ignored
/// labels, and the mask of scored positions (`[batch, seq - 1]`, true = scored).
pub fn shifted_log_probs(logits: Tensor<3>, labels: &[i64]) -> Result<(Tensor<2>, Vec<bool>)> {
    let [b, s, v] = logits.dims();
    if labels.len() != b * s || s < 2 {
        return Err(ModelError::Input(format!(
            "labels must be {b}x{s} (and seq >= 2), got {} values",
            labels.len()
        )));
    }
    let mut idx = Vec::with_capacity(b * (s - 1));
    let mut mask = Vec::with_capacity(b * (s - 1));
    for r in 0..b {
        for t in 1..s {
            let l = labels[r * s + t];
            if l >= v as i64 {
                return Err(ModelError::Input(format!(
                    "label {l} is outside the vocabulary of {v}"
                )));
            }
            mask.push(l >= 0);
            idx.push(l.max(0));
        }
    }
    let device = logits.device();
    let lp = burn::tensor::activation::log_softmax(logits.slice([0..b, 0..s - 1, 0..v]), 2);
    let idx = Tensor::<3, Int>::from_data(TensorData::new(idx, [b, s - 1, 1]), &device);
    let keep: Vec<f32> = mask.iter().map(|&m| f32::from(u8::from(m))).collect();
    let keep = Tensor::<2>::from_data(TensorData::new(keep, [b, s - 1]), &device);
    let picked = lp.gather(2, idx).reshape([b, s - 1]) * keep;
    Ok((picked, mask))
}

crate::linear::has_linears_via!(DecoderLm, family, family_mut);

/// Whether `input` is a few-row forward (a decode step: at most [`crate::matvec::MAX_ROWS`]
/// new positions in all), which runs with the pool's threads polling ([`crate::pool`]).
fn few_rows(input: &DecoderInput) -> bool {
    input.batch.saturating_mul(input.seq) <= crate::matvec::MAX_ROWS
}
