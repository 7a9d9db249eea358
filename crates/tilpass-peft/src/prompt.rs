//! Prompt learning on decoders — prefix tuning, prompt tuning, P-tuning — in HF PEFT's file
//! format. PEFT saves all three as one table, `prompt_embeddings`: the prompt encoder's output
//! for the virtual tokens (`[n, layers·2·token_dim]` for prefix tuning, `[n, hidden]` for the
//! other two), so a loaded adapter is that table; PEFT cannot resume training from it either.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tilpass_core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass_models::{
    Bert, DecoderInput, DecoderLm, EncoderInput, GenerateConfig, HasLinears, KvCache, Seq2SeqModel,
    T5Cache, VirtualPrefix, generate_with_prefix,
};

use crate::config::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::error::{PeftError, Result};
use crate::lora::{KEY_PREFIX, ParamMut};
use crate::prompt_encoder::{ENCODER_SIDECAR, EncoderKind, PromptEncoder};

/// The prompt-learning methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptMethod {
    /// `PREFIX_TUNING`: learned keys and values in front of every layer's attention.
    Prefix,
    /// `PROMPT_TUNING`: learned input embeddings in front of the tokens.
    PromptTuning,
    /// `P_TUNING`: input embeddings produced by a prompt encoder (saved as its output).
    PTuning,
}

/// `adapter_config.json` of PEFT's prompt-learning configs (`PrefixTuningConfig`,
/// `PromptTuningConfig`, `PromptEncoderConfig`); fields tilpass does not read are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// `PREFIX_TUNING`, `PROMPT_TUNING` or `P_TUNING`.
    pub peft_type: String,
    /// `CAUSAL_LM` (the task implemented).
    #[serde(default)]
    pub task_type: Option<String>,
    /// Virtual tokens.
    pub num_virtual_tokens: usize,
    /// Width of one virtual token (prefix tuning: `kv_heads · head_dim`).
    #[serde(default)]
    pub token_dim: Option<usize>,
    /// 1 for decoders.
    #[serde(default)]
    pub num_transformer_submodules: Option<usize>,
    /// Heads of the prefix (prefix tuning: the key/value heads).
    #[serde(default)]
    pub num_attention_heads: Option<usize>,
    /// Layers of the model.
    #[serde(default)]
    pub num_layers: Option<usize>,
    /// Every other field.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl PromptConfig {
    /// The method of `peft_type`.
    pub fn method(&self) -> Result<PromptMethod> {
        Ok(match self.peft_type.as_str() {
            "PREFIX_TUNING" => PromptMethod::Prefix,
            "PROMPT_TUNING" => PromptMethod::PromptTuning,
            "P_TUNING" => PromptMethod::PTuning,
            other => {
                return Err(PeftError::Config(format!(
                    "peft_type `{other}` is not a prompt-learning method"
                )));
            }
        })
    }
}

/// The model sizes a prompt adapter must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptDims {
    /// Embedding width.
    pub hidden: usize,
    /// Transformer layers (of the decoder, for prefix tuning).
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
}

impl PromptDims {
    /// Width of one table row for `method`.
    pub fn width(&self, method: PromptMethod) -> usize {
        match method {
            PromptMethod::Prefix => self.layers * 2 * self.kv_heads * self.head_dim,
            _ => self.hidden,
        }
    }
}

/// A loaded prompt-learning adapter: its config and `prompt_embeddings` table.
#[derive(Debug)]
pub struct PromptAdapter {
    /// The config.
    pub config: PromptConfig,
    /// The method.
    pub method: PromptMethod,
    /// `prompt_embeddings`, `[n, width]` (used when there is no encoder).
    pub table: Param<Tensor<2>>,
    /// The reparameterisation network, when training one (from [`Self::new_with_encoder`] or a
    /// sidecar file next to the adapter); its output replaces `table`.
    pub encoder: Option<PromptEncoder>,
    /// Other tensors of the adapter file (e.g. `base_model.classifier.weight` of a SEQ_CLS
    /// adapter), applied by [`Self::apply_saved_modules`].
    pub saved_modules: Vec<(String, HostTensor)>,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl PromptAdapter {
    /// Loads a PEFT prompt-learning adapter for a decoder, checking that its shapes fit
    /// (number of layers, key/value width for prefix tuning, hidden size otherwise).
    pub fn load(dir: impl AsRef<Path>, model: &DecoderLm) -> Result<Self> {
        let (kv_heads, head_dim) = model.kv_shape();
        let dims = PromptDims {
            hidden: model.hidden_size(),
            layers: model.num_layers(),
            kv_heads,
            head_dim,
        };
        Self::load_with(dir, dims, &model_device(model))
    }

    /// Loads a PEFT prompt-learning adapter for a model of the given dimensions.
    pub fn load_with(dir: impl AsRef<Path>, dims: PromptDims, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg_path = dir.join(ADAPTER_CONFIG);
        let config: PromptConfig = serde_json::from_value(tilpass_core::read_json(&cfg_path)?)
            .map_err(|e| PeftError::Mismatch {
                path: cfg_path.display().to_string(),
                message: format!("not a prompt-learning config: {e}"),
            })?;
        let method = config.method()?;
        let file = dir.join(ADAPTER_WEIGHTS);
        let ckpt = Checkpoint::open(&file)?;
        // Prompt tuning stores a row per virtual token and submodule (seq2seq: 2); prefix
        // tuning one per virtual token (PEFT duplicates it for the decoder's two caches).
        let n = match method {
            PromptMethod::Prefix => config.num_virtual_tokens,
            _ => config.num_virtual_tokens * config.num_transformer_submodules.unwrap_or(1),
        };
        let width = dims.width(method);
        let t = ckpt
            .read_f32_shaped("prompt_embeddings", &[n, width])
            .map_err(|e| PeftError::Mismatch {
                path: file.display().to_string(),
                message: format!("{e} (this model needs [{n}, {width}])"),
            })?;
        let mut saved_modules = Vec::new();
        for k in ckpt.keys().filter(|k| *k != "prompt_embeddings") {
            saved_modules.push((k.to_string(), ckpt.read_f32(k)?));
        }
        let sidecar = dir.join(ENCODER_SIDECAR);
        let encoder = if sidecar.exists() {
            let kind = encoder_kind(&config, method).ok_or_else(|| PeftError::Mismatch {
                path: sidecar.display().to_string(),
                message: format!("{} has no prompt encoder", config.peft_type),
            })?;
            Some(PromptEncoder::load(&sidecar, kind, device)?)
        } else {
            None
        };
        Ok(Self {
            config,
            method,
            table: Param::from_tensor(t.to_tensor(device)?),
            encoder,
            saved_modules,
            layers: dims.layers,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim,
        })
    }

    /// Copies the adapter's saved modules (`base_model.<path>.weight` / `.bias`, e.g. a
    /// classifier head PEFT trained alongside the prompt) into the model's layer at `<path>`;
    /// returns how many layers were set.
    pub fn apply_saved_modules<M: HasLinears>(&self, model: &mut M) -> Result<usize> {
        let mut set = 0;
        for (path, lin) in model.linears_mut() {
            let w = self.saved_modules.iter().find(|(k, _)| {
                *k == format!("base_model.{path}.weight")
                    || *k == format!("{KEY_PREFIX}{path}.weight")
            });
            let Some((key, w)) = w else {
                continue;
            };
            let (d_in, d_out) = lin.dims();
            if w.shape != [d_out, d_in] {
                return Err(PeftError::Mismatch {
                    path: key.clone(),
                    message: format!(
                        "shape {:?}, the model's layer is [{d_out}, {d_in}]",
                        w.shape
                    ),
                });
            }
            let device = lin.weight.device();
            lin.weight = Param::from_tensor(w.transposed()?.to_tensor(&device)?);
            let bias_key = key.replace(".weight", ".bias");
            if let Some((_, b)) = self.saved_modules.iter().find(|(k, _)| *k == bias_key) {
                lin.bias = Some(Param::from_tensor(b.to_tensor(&device)?));
            }
            set += 1;
        }
        Ok(set)
    }

    /// The first `n` table rows (the encoder's virtual tokens) for `batch` rows.
    fn first_rows(&self, batch: usize) -> Tensor<3> {
        let n = self.config.num_virtual_tokens;
        let [_, h] = self.table.dims();
        self.table_tensor()
            .slice([0..n, 0..h])
            .unsqueeze::<3>()
            .expand([batch, n, h])
    }

    /// Prompt tuning / P-tuning on a BERT sequence classifier, as PEFT's
    /// `PeftModelForSequenceClassification`: virtual tokens in front (attended, token type 0);
    /// logits `[batch, num_labels]`. Call [`Self::apply_saved_modules`] first to use the
    /// adapter's classifier.
    pub fn forward_classifier(&self, model: &Bert, input: &EncoderInput) -> Result<Tensor<2>> {
        if self.method == PromptMethod::Prefix {
            // Virtual keys/values in every layer; positions start after them.
            return Ok(model.classify_with_prefix(input, &self.prefix_layers(input.batch))?);
        }
        let prefixed = self.prefix_encoder_input(input);
        Ok(model.classify_with_prompt(&prefixed, Some(self.first_rows(input.batch)))?)
    }

    /// The adapter on an encoder-decoder (T5, NorT5), as PEFT 0.21's
    /// `PeftModelForSeq2SeqLM.forward`: prompt tuning / P-tuning put the table's first `n`
    /// rows in front of the encoder input (attention mask extended with ones; the decoder
    /// inputs and labels are untouched, though the table has `n · num_transformer_submodules`
    /// rows); prefix tuning fills the decoder's self-attention cache. Decoder logits
    /// `[batch, t, vocab]`. Prefix tuning on a model that cannot take a prefilled cache
    /// (NorT5) is an error.
    pub fn forward_seq2seq<M: Seq2SeqModel + ?Sized>(
        &self,
        model: &M,
        input: &EncoderInput,
        decoder_ids: &[Vec<u32>],
    ) -> Result<Tensor<3>> {
        let t = decoder_ids.first().map(Vec::len).unwrap_or(0);
        if decoder_ids.len() != input.batch || decoder_ids.iter().any(|r| r.len() != t) {
            return Err(PeftError::Config(format!(
                "decoder ids must be {} rows of equal length",
                input.batch
            )));
        }
        if self.method == PromptMethod::Prefix {
            if !model.takes_prefix_cache() {
                return Err(PeftError::Config(
                    "prefix tuning needs a decoder that takes a prefilled self-attention cache \
                     with its causal mask (T5); NorT5's modelling code drops the mask with a \
                     cache, so PEFT cannot apply a prefix to it: use prompt tuning or P-tuning"
                        .into(),
                ));
            }
            // PEFT: the prefix goes into the decoder's self-attention cache only; the
            // cross-attention cache is reset (computed from the encoder output).
            let enc = model.encode(input)?;
            let mut cache = T5Cache {
                self_attn: KvCache::from_layers(self.prefix_layers_seq2seq(input.batch)),
                cross: vec![None; model.num_decoder_layers()],
            };
            return Ok(model.decode(&enc, &decoder_ids.concat(), t, Some(&mut cache))?);
        }
        let prefixed = self.prefix_encoder_input(input);
        let enc = model.encode_with_prompt(&prefixed, Some(self.first_rows(input.batch)))?;
        Ok(model.decode(&enc, &decoder_ids.concat(), t, None)?)
    }

    fn prefix_encoder_input(&self, input: &EncoderInput) -> EncoderInput {
        let (b, s, n) = (input.batch, input.seq, self.config.num_virtual_tokens);
        let mut out = EncoderInput {
            input_ids: Vec::with_capacity(b * (n + s)),
            attention_mask: Vec::with_capacity(b * (n + s)),
            token_type_ids: Vec::with_capacity(b * (n + s)),
            batch: b,
            seq: n + s,
        };
        for r in 0..b {
            out.input_ids.extend(std::iter::repeat_n(0, n));
            out.input_ids
                .extend_from_slice(&input.input_ids[r * s..(r + 1) * s]);
            out.attention_mask.extend(std::iter::repeat_n(1, n));
            out.attention_mask
                .extend_from_slice(&input.attention_mask[r * s..(r + 1) * s]);
            out.token_type_ids.extend(std::iter::repeat_n(0, n));
            out.token_type_ids
                .extend_from_slice(&input.token_type_ids[r * s..(r + 1) * s]);
        }
        out
    }

    /// A fresh adapter for an encoder-decoder (PEFT task `SEQ_2_SEQ_LM`,
    /// `num_transformer_submodules` 2): prompt tuning / P-tuning tables of `2n` rows (only the
    /// first `n` reach the encoder, as PEFT), a prefix table of `n` rows of
    /// `decoder layers · 2 · heads · head_dim`; drawn from N(0, 1) with `seed`. Then
    /// [`Self::with_encoder`] for prefix projection or P-tuning. Errors for `n` = 0 and for
    /// prefix tuning on a model that cannot take it (NorT5).
    pub fn new_seq2seq<M: Seq2SeqModel + ?Sized>(
        model: &M,
        method: PromptMethod,
        n: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if n == 0 {
            return Err(PeftError::Config(
                "num_virtual_tokens must be at least 1".into(),
            ));
        }
        if method == PromptMethod::Prefix && !model.takes_prefix_cache() {
            return Err(PeftError::Config(
                "prefix tuning is not available for this encoder-decoder (NorT5's modelling \
                 code drops the decoder's causal mask with a cache, so PEFT cannot apply it): \
                 use prompt tuning or P-tuning"
                    .into(),
            ));
        }
        let dims = seq2seq_dims(model);
        let width = dims.width(method);
        let rows = match method {
            PromptMethod::Prefix => n,
            _ => 2 * n,
        };
        let table = normal_table(rows, width, seed, device);
        Ok(Self {
            encoder: None,
            saved_modules: Vec::new(),
            config: PromptConfig {
                peft_type: peft_type_name(method).into(),
                task_type: Some("SEQ_2_SEQ_LM".into()),
                num_virtual_tokens: n,
                token_dim: Some(if method == PromptMethod::Prefix {
                    dims.kv_heads * dims.head_dim
                } else {
                    dims.hidden
                }),
                num_transformer_submodules: Some(2),
                num_attention_heads: Some(dims.kv_heads),
                num_layers: Some(dims.layers),
                other: BTreeMap::new(),
            },
            method,
            table: Param::from_tensor(table),
            layers: dims.layers,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim,
        })
    }

    /// Loads a PEFT prompt-learning adapter for an encoder-decoder (T5, NorT5), checking its
    /// shapes against the model.
    pub fn load_seq2seq<M: Seq2SeqModel + ?Sized>(
        dir: impl AsRef<Path>,
        model: &M,
        device: &Device,
    ) -> Result<Self> {
        let me = Self::load_with(dir.as_ref(), seq2seq_dims(model), device)?;
        if me.method == PromptMethod::Prefix && !model.takes_prefix_cache() {
            return Err(PeftError::Mismatch {
                path: dir.as_ref().display().to_string(),
                message: "a prefix-tuning adapter; this encoder-decoder (NorT5) cannot take a \
                          prefix"
                    .into(),
            });
        }
        Ok(me)
    }

    /// Adds the trainable prompt encoder PEFT trains for this adapter's method — prefix
    /// tuning's projection MLP (`Linear → tanh → Linear`), P-tuning's MLP, or its
    /// bidirectional LSTM with `lstm_layers` — of hidden width `hidden` (PEFT's
    /// `encoder_hidden_size`), one input row per table row, PyTorch's initialisation with
    /// `seed`. Errors for prompt tuning (no encoder) and a zero width.
    pub fn with_encoder(
        mut self,
        hidden: usize,
        lstm_layers: Option<usize>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if hidden == 0 {
            return Err(PeftError::Config(
                "encoder_hidden_size must be at least 1".into(),
            ));
        }
        let [rows, width] = self.table.dims();
        let (kind, d_in) = match (self.method, lstm_layers) {
            (PromptMethod::Prefix, _) => (
                EncoderKind::PrefixMlp,
                self.config
                    .token_dim
                    .unwrap_or(self.kv_heads * self.head_dim),
            ),
            (PromptMethod::PTuning, None) => (EncoderKind::PTuningMlp, width),
            (PromptMethod::PTuning, Some(_)) => (EncoderKind::PTuningLstm, width),
            (PromptMethod::PromptTuning, _) => {
                return Err(PeftError::Config(
                    "prompt tuning has no prompt encoder (prefix_projection / \
                     encoder_hidden_size apply to prefix tuning and P-tuning)"
                        .into(),
                ));
            }
        };
        self.encoder = Some(PromptEncoder::new(
            kind,
            rows,
            d_in,
            hidden,
            width,
            lstm_layers.unwrap_or(2),
            seed,
            device,
        ));
        let other = &mut self.config.other;
        other.insert("encoder_hidden_size".into(), hidden.into());
        match kind {
            EncoderKind::PrefixMlp => {
                other.insert("prefix_projection".into(), true.into());
            }
            EncoderKind::PTuningMlp => {
                other.insert("encoder_reparameterization_type".into(), "MLP".into());
            }
            EncoderKind::PTuningLstm => {
                other.insert("encoder_reparameterization_type".into(), "LSTM".into());
                other.insert("encoder_num_layers".into(), lstm_layers.unwrap_or(2).into());
            }
        }
        Ok(self)
    }

    /// The trainable parameters — the prompt encoder's (sidecar names) when there is one, else
    /// the table itself as `prompt_embeddings` — for an optimiser (names stable across steps).
    pub fn trainable_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        match &mut self.encoder {
            Some(e) => e.params_mut(),
            None => vec![("prompt_embeddings".into(), ParamMut::D2(&mut self.table))],
        }
    }

    /// The number of trainable values (prompt encoder or table).
    pub fn trainable_count(&mut self) -> usize {
        self.trainable_params_mut()
            .into_iter()
            .map(|(_, p)| match p {
                ParamMut::D1(p) => p.dims()[0],
                ParamMut::D2(p) => p.dims().iter().product(),
            })
            .sum()
    }

    /// The model sizes this adapter was made for.
    pub fn dims(&self) -> PromptDims {
        PromptDims {
            hidden: match self.method {
                PromptMethod::Prefix => self.config.token_dim.unwrap_or(0),
                _ => self.table.dims()[1],
            },
            layers: self.layers,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }

    /// A fresh adapter whose table comes from a trainable prompt encoder (prefix tuning's
    /// projection MLP, or P-tuning's MLP — `lstm: false` — or bidirectional LSTM with
    /// `lstm_layers`), with hidden width `hidden` (PEFT's `encoder_hidden_size`).
    pub fn new_with_encoder(
        model: &DecoderLm,
        method: PromptMethod,
        n: usize,
        hidden: usize,
        lstm_layers: Option<usize>,
        seed: u64,
    ) -> Result<Self> {
        let device = model_device(model);
        Self::new(model, method, n, seed, None)?.with_encoder(hidden, lstm_layers, seed, &device)
    }

    /// The virtual-token table in use, `[n, width]`: the encoder's output, else `table`.
    pub fn table_tensor(&self) -> Tensor<2> {
        match &self.encoder {
            Some(e) => e.forward(),
            None => self.table.val(),
        }
    }

    /// One SGD step on the trainable prompt parameters (the encoder's, else the table) that
    /// have a gradient in `grads`; returns how many tensors were updated.
    pub fn sgd_step(&mut self, grads: &burn::tensor::Gradients, lr: f64) -> usize {
        match &mut self.encoder {
            Some(e) => e.sgd_step(grads, lr),
            None => usize::from(crate::lora::sgd(&mut self.table, grads, lr)),
        }
    }

    /// A fresh adapter for `model` with `n` virtual tokens, the table drawn from N(0, 1) (PEFT's
    /// `nn.Embedding` init; prompt tuning's `RANDOM`) with `seed`, or — for prompt tuning and
    /// P-tuning — copied from the embeddings of `init_ids` (`TEXT` / `SAMPLE_VOCAB`: repeated
    /// or cut to `n`).
    pub fn new(
        model: &DecoderLm,
        method: PromptMethod,
        n: usize,
        seed: u64,
        init_ids: Option<&[u32]>,
    ) -> Result<Self> {
        if n == 0 {
            return Err(PeftError::Config(
                "num_virtual_tokens must be at least 1".into(),
            ));
        }
        let width = Self::width(method, model);
        let device = model_device(model);
        let (kv_heads, head_dim) = model.kv_shape();
        let table = match init_ids {
            Some(ids) if method != PromptMethod::Prefix && !ids.is_empty() => {
                let ids: Vec<u32> = ids.iter().copied().cycle().take(n).collect();
                let input = DecoderInput::unpadded(&[ids])?;
                model.embed_input(&input)?.reshape([n, width])
            }
            Some(_) => {
                return Err(PeftError::Config(
                    "text / vocabulary initialisation needs prompt tuning or P-tuning and at least one id".into(),
                ));
            }
            None => normal_table(n, width, seed, &device),
        };
        let peft_type = peft_type_name(method);
        let token_dim = if method == PromptMethod::Prefix {
            kv_heads * head_dim
        } else {
            width
        };
        Ok(Self {
            encoder: None,
            saved_modules: Vec::new(),
            config: PromptConfig {
                peft_type: peft_type.into(),
                task_type: Some("CAUSAL_LM".into()),
                num_virtual_tokens: n,
                token_dim: Some(token_dim),
                num_transformer_submodules: Some(1),
                num_attention_heads: Some(if method == PromptMethod::Prefix {
                    kv_heads
                } else {
                    kv_heads.max(1)
                }),
                num_layers: Some(model.num_layers()),
                other: BTreeMap::new(),
            },
            method,
            table: Param::from_tensor(table),
            layers: model.num_layers(),
            kv_heads,
            head_dim,
        })
    }

    /// A fresh adapter for a model of the given dimensions (e.g. a BERT sequence classifier,
    /// `task_type` `SEQ_CLS`): `n` virtual tokens, the table (`[n, width]`, see
    /// [`PromptDims::width`]) drawn from N(0, 1) with `seed`; one transformer submodule, as
    /// PEFT for encoders and decoders. Then [`Self::with_encoder`] for prefix projection or
    /// P-tuning. Errors for `n` = 0.
    pub fn new_for_dims(
        dims: PromptDims,
        method: PromptMethod,
        n: usize,
        task_type: &str,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if n == 0 {
            return Err(PeftError::Config(
                "num_virtual_tokens must be at least 1".into(),
            ));
        }
        let width = dims.width(method);
        Ok(Self {
            encoder: None,
            saved_modules: Vec::new(),
            config: PromptConfig {
                peft_type: peft_type_name(method).into(),
                task_type: Some(task_type.into()),
                num_virtual_tokens: n,
                token_dim: Some(if method == PromptMethod::Prefix {
                    dims.kv_heads * dims.head_dim
                } else {
                    dims.hidden
                }),
                num_transformer_submodules: Some(1),
                num_attention_heads: Some(dims.kv_heads),
                num_layers: Some(dims.layers),
                other: BTreeMap::new(),
            },
            method,
            table: Param::from_tensor(normal_table(n, width, seed, device)),
            layers: dims.layers,
            kv_heads: dims.kv_heads,
            head_dim: dims.head_dim,
        })
    }

    fn width(method: PromptMethod, model: &DecoderLm) -> usize {
        let (kv_heads, head_dim) = model.kv_shape();
        PromptDims {
            hidden: model.hidden_size(),
            layers: model.num_layers(),
            kv_heads,
            head_dim,
        }
        .width(method)
    }

    /// Virtual tokens.
    pub fn len(&self) -> usize {
        self.table.dims()[0]
    }

    /// True when there are no virtual tokens (never, for a valid adapter).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Prefix tuning: the cache holding the virtual keys/values of every layer for `batch`
    /// rows. The table row of a virtual token is `[L0_K | L0_V | L1_K | …]`, each chunk
    /// `heads × head_dim`, as PEFT's `get_prompt` reads it.
    pub fn prefix_cache(&self, batch: usize) -> KvCache {
        KvCache::from_layers(self.prefix_layers(batch))
    }

    /// Prefix tuning: the virtual `(keys, values)` of every layer, `[batch, kv_heads, n,
    /// head_dim]` each.
    pub fn prefix_layers(&self, batch: usize) -> Vec<(Tensor<4>, Tensor<4>)> {
        self.prefix_chunks(batch, |l| (2 * l, 2 * l + 1))
    }

    /// Prefix tuning on an encoder-decoder, as PEFT builds its `EncoderDecoderCache`: the
    /// table's `2·L` chunks are doubled and read four per layer (self K, self V, cross K,
    /// cross V), so layer `l`'s self-attention gets chunks `4l mod 2L` and `4l+1 mod 2L`; the
    /// cross-attention part is discarded.
    pub fn prefix_layers_seq2seq(&self, batch: usize) -> Vec<(Tensor<4>, Tensor<4>)> {
        let chunks = 2 * self.layers;
        self.prefix_chunks(batch, |l| ((4 * l) % chunks, (4 * l + 1) % chunks))
    }

    fn prefix_chunks(
        &self,
        batch: usize,
        pick_of: impl Fn(usize) -> (usize, usize),
    ) -> Vec<(Tensor<4>, Tensor<4>)> {
        let (n, kv, hd) = (self.len(), self.kv_heads, self.head_dim);
        // [n, L·2, kv, hd] → [L·2, kv, n, hd]
        let t = self
            .table_tensor()
            .reshape([n, self.layers * 2, kv, hd])
            .permute([1, 2, 0, 3]);
        (0..self.layers)
            .map(|l| {
                let pick = |j: usize| {
                    t.clone()
                        .slice([j..j + 1, 0..kv, 0..n, 0..hd])
                        .expand([batch, kv, n, hd])
                };
                let (k, v) = pick_of(l);
                (pick(k), pick(v))
            })
            .collect()
    }

    /// Prompt / P-tuning: the virtual token embeddings for `batch` rows, `[batch, n, hidden]`.
    pub fn prompt_embeds(&self, batch: usize) -> Tensor<3> {
        let [n, h] = self.table.dims();
        self.table_tensor().unsqueeze::<3>().expand([batch, n, h])
    }

    /// Logits as PEFT's forward computes them for `input` (its `position_ids` are ignored, as
    /// PEFT drops them: positions count every column): prefix tuning gives `[batch, seq,
    /// vocab]`; prompt tuning and P-tuning prepend the virtual tokens, `[batch, n + seq, vocab]`.
    pub fn forward(&self, model: &DecoderLm, input: &DecoderInput) -> Result<Tensor<3>> {
        Ok(model.logits(self.forward_hidden(model, input)?))
    }

    /// The final hidden states `[batch, seq (+ n), hidden]` behind [`Self::forward`]'s logits.
    pub fn forward_hidden(&self, model: &DecoderLm, input: &DecoderInput) -> Result<Tensor<3>> {
        let (inp, cache) = self.decoder_input(
            &input.input_ids,
            &input.attention_mask,
            input.batch,
            input.seq,
        );
        Ok(match cache {
            Some(mut cache) => model.forward_hidden(&inp, Some(&mut cache))?,
            None => model.forward_hidden_with_prompt(
                &inp,
                None,
                Some(self.prompt_embeds(input.batch)),
            )?,
        })
    }

    /// The decoder input PEFT builds around `batch` rows of `input_ids` / `attention_mask`
    /// (`[batch, seq]`), the mask extended with `n` ones in front: prefix tuning keeps the ids,
    /// counts positions from `n` and returns the prefix cache to pass along; prompt tuning and
    /// P-tuning put `n` placeholder ids in front (their embeddings are replaced by
    /// [`Self::prompt_embeds`]), count positions from 0 and return no cache.
    pub fn decoder_input(
        &self,
        input_ids: &[u32],
        attention_mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> (DecoderInput, Option<KvCache>) {
        let (b, s, n) = (batch, seq, self.len());
        let mut mask = Vec::with_capacity(b * (n + s));
        for r in 0..b {
            mask.extend(std::iter::repeat_n(1u8, n));
            mask.extend_from_slice(&attention_mask[r * s..(r + 1) * s]);
        }
        if self.method == PromptMethod::Prefix {
            let inp = DecoderInput {
                input_ids: input_ids.to_vec(),
                attention_mask: mask,
                position_ids: (0..b).flat_map(|_| (n..n + s).map(|p| p as i64)).collect(),
                batch: b,
                seq: s,
            };
            return (inp, Some(self.prefix_cache(b)));
        }
        let mut ids = Vec::with_capacity(b * (n + s));
        for r in 0..b {
            ids.extend(std::iter::repeat_n(0u32, n));
            ids.extend_from_slice(&input_ids[r * s..(r + 1) * s]);
        }
        let inp = DecoderInput {
            input_ids: ids,
            attention_mask: mask,
            position_ids: (0..b).flat_map(|_| 0..(n + s) as i64).collect(),
            batch: b,
            seq: n + s,
        };
        (inp, None)
    }

    /// Generation with the virtual tokens in front (greedy or sampled per `cfg`).
    pub fn generate(
        &self,
        model: &DecoderLm,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
        on_token: &mut dyn FnMut(usize, u32) -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        let n = self.len();
        let cache = |b: usize| self.prefix_cache(b);
        let embeds = |b: usize| self.prompt_embeds(b);
        let prefix = match self.method {
            PromptMethod::Prefix => VirtualPrefix::Cache { n, make: &cache },
            _ => VirtualPrefix::Embeds { n, make: &embeds },
        };
        Ok(generate_with_prefix(
            model, prompts, cfg, &prefix, on_token,
        )?)
    }

    /// Writes the adapter as PEFT does (`adapter_config.json`, `prompt_embeddings` and the
    /// saved modules, e.g. a SEQ_CLS head as `base_model.classifier.weight`).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        let t = HostTensor::from_tensor(&self.table_tensor());
        if let Some(e) = &self.encoder {
            e.save(dir.join(ENCODER_SIDECAR))?;
        }
        let meta = [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect();
        save_safetensors(
            dir.join(ADAPTER_WEIGHTS),
            std::iter::once(("prompt_embeddings", &t))
                .chain(self.saved_modules.iter().map(|(k, v)| (k.as_str(), v))),
            SaveDtype::F32,
            Some(meta),
        )?;
        let mut v =
            serde_json::to_value(&self.config).map_err(|e| PeftError::Config(e.to_string()))?;
        v["inference_mode"] = Value::Bool(true);
        // Sorted keys, 2-space indent: PEFT's `json.dumps(..., indent=2, sort_keys=True)`.
        v.sort_all_objects();
        let text =
            serde_json::to_string_pretty(&v).map_err(|e| PeftError::Config(e.to_string()))?;
        tilpass_core::write_atomic(dir.join(ADAPTER_CONFIG), text.as_bytes())?;
        Ok(())
    }
}

/// PEFT's `peft_type` of a method.
fn peft_type_name(method: PromptMethod) -> &'static str {
    match method {
        PromptMethod::Prefix => "PREFIX_TUNING",
        PromptMethod::PromptTuning => "PROMPT_TUNING",
        PromptMethod::PTuning => "P_TUNING",
    }
}

/// The dimensions of an encoder-decoder a prompt adapter must fit (prefix: the decoder's).
fn seq2seq_dims<M: Seq2SeqModel + ?Sized>(model: &M) -> PromptDims {
    let (kv_heads, head_dim) = model.kv_shape();
    PromptDims {
        hidden: model.hidden_size(),
        layers: model.num_decoder_layers(),
        kv_heads,
        head_dim,
    }
}

/// A `[rows, width]` table drawn from N(0, 1) (Box–Muller on SplitMix64 seeded with `seed`).
fn normal_table(rows: usize, width: usize, seed: u64, device: &Device) -> Tensor<2> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let v: Vec<f32> = (0..rows * width)
        .map(|_| {
            let (u1, u2) = (uniform().max(1e-300), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [rows, width]), device)
}

/// The encoder a config describes (`prefix_projection`, `encoder_reparameterization_type`).
fn encoder_kind(config: &PromptConfig, method: PromptMethod) -> Option<EncoderKind> {
    match method {
        PromptMethod::Prefix => config
            .other
            .get("prefix_projection")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then_some(EncoderKind::PrefixMlp),
        PromptMethod::PTuning => Some(
            match config
                .other
                .get("encoder_reparameterization_type")
                .and_then(Value::as_str)
            {
                Some("LSTM") => EncoderKind::PTuningLstm,
                _ => EncoderKind::PTuningMlp,
            },
        ),
        PromptMethod::PromptTuning => None,
    }
}

fn model_device(model: &DecoderLm) -> Device {
    model
        .linears()
        .first()
        .map(|(_, l)| l.weight.device())
        .unwrap_or_default()
}
