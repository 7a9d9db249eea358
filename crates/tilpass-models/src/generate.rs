//! Text generation (greedy decoding so far) with or without the KV cache.

use serde::{Deserialize, Serialize};

use crate::decoder::{DecoderInput, DecoderLm};
use crate::error::{ModelError, Result};
use crate::layers::KvCache;

/// Options for [`generate_greedy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateConfig {
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Stop a row at any of these ids (default: the model's `eos_token_id`).
    pub eos_token_ids: Option<Vec<u32>>,
    /// Padding id for batched prompts and finished rows (default: the first EOS id, else 0).
    pub pad_token_id: Option<u32>,
    /// Reuse keys/values of earlier positions (much faster; same result).
    pub use_cache: bool,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            eos_token_ids: None,
            pad_token_id: None,
            use_cache: true,
        }
    }
}

fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<u32> {
    logits
        .chunks(vocab)
        .map(|row| {
            // First maximum, as torch.argmax.
            let mut best = 0;
            for (i, v) in row.iter().enumerate() {
                if *v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Greedy decoding of a batch of prompts (left-padded). Returns the new tokens of each row,
/// stopping a row at its first EOS (included), like transformers' `generate(do_sample=False)`.
pub fn generate_greedy(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<u32>>> {
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    let pad = cfg
        .pad_token_id
        .or_else(|| eos.first().copied())
        .unwrap_or(0);
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + cfg.max_new_tokens > model.max_positions() {
        return Err(ModelError::TooLong {
            len: longest + cfg.max_new_tokens,
            max: model.max_positions(),
        });
    }
    let first = DecoderInput::left_padded(prompts, pad)?;
    let b = first.batch;
    let vocab = model.vocab_size();
    let mut mask = first.attention_mask.clone();
    let mut ids = first.input_ids.clone();
    let mut seq = first.seq;
    let mut next_pos: Vec<i64> = (0..b)
        .map(|r| {
            mask[r * seq..(r + 1) * seq]
                .iter()
                .map(|&m| i64::from(m))
                .sum()
        })
        .collect();
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut cache = cfg.use_cache.then(|| KvCache::new(model.num_layers()));
    let mut step_input = first;
    for _ in 0..cfg.max_new_tokens {
        let logits = model.forward(&step_input, cache.as_mut())?;
        let [_, s, _] = logits.dims();
        let last = logits
            .slice([0..b, s - 1..s, 0..vocab])
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("{e:?}")))?;
        let next = argmax_rows(&last, vocab);
        let mut tokens = Vec::with_capacity(b);
        for r in 0..b {
            let t = if done[r] { pad } else { next[r] };
            if !done[r] {
                out[r].push(t);
                done[r] = eos.contains(&t);
            }
            tokens.push(t);
        }
        if done.iter().all(|d| *d) {
            break;
        }
        // Grow the rows by one column.
        let mut new_ids = Vec::with_capacity(b * (seq + 1));
        let mut new_mask = Vec::with_capacity(b * (seq + 1));
        for r in 0..b {
            new_ids.extend_from_slice(&ids[r * seq..(r + 1) * seq]);
            new_ids.push(tokens[r]);
            new_mask.extend_from_slice(&mask[r * seq..(r + 1) * seq]);
            new_mask.push(1);
        }
        ids = new_ids;
        mask = new_mask;
        seq += 1;
        step_input = if cfg.use_cache {
            DecoderInput {
                input_ids: tokens,
                attention_mask: mask.clone(),
                position_ids: next_pos.clone(),
                batch: b,
                seq: 1,
            }
        } else {
            let mut position_ids = vec![1i64; b * seq];
            for r in 0..b {
                let mut p = 0;
                for j in 0..seq {
                    if mask[r * seq + j] == 1 {
                        position_ids[r * seq + j] = p;
                        p += 1;
                    }
                }
            }
            DecoderInput {
                input_ids: ids.clone(),
                attention_mask: mask.clone(),
                position_ids,
                batch: b,
                seq,
            }
        };
        for p in &mut next_pos {
            *p += 1;
        }
    }
    Ok(out)
}
