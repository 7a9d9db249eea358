//! What encoder-decoder families share and generation uses: the encoder's output, the
//! decoder cache, the [`Seq2SeqModel`] trait each family implements (`t5`, `nort5`) and a full
//! forward pass over it. The families and [`crate::seq2seq`] (the `Seq2SeqLm` wrapper and
//! generation) import this module; it imports neither.

use burn::tensor::{Int, Tensor, TensorData};

use crate::encoder::EncoderInput;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;

/// Encoder states a decoder attends to.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Final encoder hidden states `[batch, seq, d_model]`.
    pub hidden: Tensor<3>,
    /// The encoder's attention mask (`[batch, seq]`, 1 = real token).
    pub attention_mask: Vec<u8>,
}

impl EncoderOutput {
    /// Repeats every row `n` times (row `i` becomes rows `i*n .. i*n+n`), for beam search.
    pub fn repeat_rows(&self, n: usize) -> Self {
        let [b, s, d] = self.hidden.dims();
        let hidden = self
            .hidden
            .clone()
            .unsqueeze_dim::<4>(1)
            .expand([b, n, s, d])
            .reshape([b * n, s, d]);
        let mut mask = Vec::with_capacity(b * n * s);
        for r in 0..b {
            for _ in 0..n {
                mask.extend_from_slice(&self.attention_mask[r * s..(r + 1) * s]);
            }
        }
        Self {
            hidden,
            attention_mask: mask,
        }
    }
}

/// Decoder cache: self-attention keys/values and the cross-attention projections of the
/// encoder output (computed once).
#[derive(Debug, Clone)]
pub struct T5Cache {
    /// Self-attention keys/values, `[batch, heads, past, d_kv]` per layer.
    pub self_attn: KvCache,
    /// Cross-attention keys/values per layer.
    pub cross: Vec<Option<(Tensor<4>, Tensor<4>)>>,
}

impl T5Cache {
    /// An empty cache for `layers` decoder layers.
    pub fn new(layers: usize) -> Self {
        Self {
            self_attn: KvCache::new(layers),
            cross: vec![None; layers],
        }
    }

    /// Decoder positions already cached.
    pub fn len(&self) -> usize {
        self.self_attn.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps rows `rows` (in that order) of every cached tensor: beam reordering.
    pub fn select_rows(&mut self, rows: &[usize]) {
        let Some(device) = self.cross.iter().flatten().next().map(|(k, _)| k.device()) else {
            return;
        };
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
        self.self_attn.map(|t| t.select(0, idx.clone()));
        for c in self.cross.iter_mut().flatten() {
            *c = (
                c.0.clone().select(0, idx.clone()),
                c.1.clone().select(0, idx.clone()),
            );
        }
    }
}

/// What generation needs from an encoder-decoder.
pub trait Seq2SeqModel {
    /// Encoder states of a batch.
    fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput>;
    /// [`Self::encode`] with the input embeddings of the first `n` columns replaced by
    /// `prompt [batch, n, hidden]` (prompt tuning / P-tuning: PEFT's virtual tokens in front of
    /// the encoder input, given as the word-embedding output). The default supports no prompt.
    fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        match prompt {
            None => self.encode(input),
            Some(_) => Err(ModelError::Input(
                "this encoder-decoder takes no prompt embeddings".into(),
            )),
        }
    }
    /// Whether PEFT's prefix tuning applies: virtual keys/values prefilled into the decoder's
    /// self-attention cache, attended by every position (T5: yes; NorT5's modelling code turns
    /// its causal mask off when given a cache, so PEFT cannot train a prefix on it).
    fn takes_prefix_cache(&self) -> bool {
        true
    }
    /// Embedding width of the encoder input (`d_model` / `hidden_size`).
    fn hidden_size(&self) -> usize;
    /// Decoder self-attention key/value shape per layer: `(heads, head_dim)`.
    fn kv_shape(&self) -> (usize, usize);
    /// Decoder logits `[batch, t, vocab]` for `decoder_ids` (`[batch, t]`) after the cache.
    fn decode(
        &self,
        enc: &EncoderOutput,
        decoder_ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>>;
    /// What [`Self::decode`] would multiply by its LM head — the decoder's final states
    /// `[batch, t, hidden]` — with that head, when the head takes no gradient and the model
    /// exposes it (T5), for a loss fused with the head ([`crate::head_loss`]); `Ok(None)`
    /// without decoding otherwise (the default; then [`Self::decode`]).
    fn decode_to_head(
        &self,
        _enc: &EncoderOutput,
        _decoder_ids: &[u32],
        _t: usize,
        _cache: Option<&mut T5Cache>,
    ) -> Result<Option<(Tensor<3>, crate::head_loss::LmHead)>> {
        Ok(None)
    }
    /// Decoder layers (for the cache).
    fn num_decoder_layers(&self) -> usize;
    /// End-of-sequence ids.
    fn eos_token_ids(&self) -> Vec<u32>;
    /// The first decoder token.
    fn decoder_start_token_id(&self) -> u32;
    /// Padding for finished rows.
    fn pad_token_id(&self) -> u32;
    /// The labels the model's own loss compares its logits with, from target ids `[batch * t]`
    /// (-100 = none). T5's `forward(labels=...)` takes them as they are (the default); NorT5's
    /// maps `[CLS]` / `[SEP]` to `[BOS]` / `[EOS]` and ignores its pad id.
    fn loss_labels(&self, labels: &[i64]) -> Vec<i64> {
        labels.to_vec()
    }
}

/// Logits `[batch, t, vocab]` of a full pass of any encoder-decoder: encode `input`, decode
/// `decoder_ids` (one row of equal length per input row).
pub fn forward_seq2seq(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    decoder_ids: &[Vec<u32>],
) -> Result<Tensor<3>> {
    let t = decoder_rows(input, decoder_ids)?;
    let enc = model.encode(input)?;
    model.decode(&enc, &decoder_ids.concat(), t, None)
}

/// What [`forward_seq2seq_to_head`] returns.
#[derive(Debug, Clone)]
pub enum Seq2SeqOutput {
    /// The decoder's final states `[batch, t, hidden]` and the frozen head they go through.
    Hidden(Tensor<3>, Box<crate::head_loss::LmHead>),
    /// Logits `[batch, t, vocab]` (the model exposes no frozen head).
    Logits(Tensor<3>),
}

/// [`forward_seq2seq`] stopped before the LM head where the model exposes a frozen one
/// ([`Seq2SeqModel::decode_to_head`]), for a loss fused with the head; the logits otherwise.
pub fn forward_seq2seq_to_head(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    decoder_ids: &[Vec<u32>],
) -> Result<Seq2SeqOutput> {
    let t = decoder_rows(input, decoder_ids)?;
    let enc = model.encode(input)?;
    let ids = decoder_ids.concat();
    Ok(match model.decode_to_head(&enc, &ids, t, None)? {
        Some((hidden, head)) => Seq2SeqOutput::Hidden(hidden, Box::new(head)),
        None => Seq2SeqOutput::Logits(model.decode(&enc, &ids, t, None)?),
    })
}

/// The decoder length `t` of `decoder_ids`, which must hold one row of equal length per
/// encoder row.
fn decoder_rows(input: &EncoderInput, decoder_ids: &[Vec<u32>]) -> Result<usize> {
    let t = decoder_ids.first().map(Vec::len).unwrap_or(0);
    if decoder_ids.len() != input.batch || decoder_ids.iter().any(|r| r.len() != t) {
        return Err(ModelError::Input(format!(
            "decoder_input_ids must be {} rows of equal length",
            input.batch
        )));
    }
    Ok(t)
}

/// Errors unless `decoder_ids` is `batch × t` (t ≥ 1) ids inside the vocabulary.
pub fn check_decoder_ids(decoder_ids: &[u32], batch: usize, t: usize, vocab: usize) -> Result<()> {
    if decoder_ids.len() != batch * t || t == 0 {
        return Err(ModelError::Input(format!(
            "expected {batch}x{t} decoder ids (one row per encoder row), got {}",
            decoder_ids.len()
        )));
    }
    if let Some(x) = decoder_ids.iter().find(|x| **x as usize >= vocab) {
        return Err(ModelError::Input(format!(
            "token id {x} is outside the vocabulary of {vocab}"
        )));
    }
    Ok(())
}
