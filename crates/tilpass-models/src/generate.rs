//! Text generation: greedy decoding and sampling (temperature, top-k, top-p), repetition
//! penalty, EOS, a streaming callback; with or without the KV cache.

use serde::{Deserialize, Serialize};
use tilpass_tokenize::{Batch, Padding, position_ids_from_mask};

use crate::decoder::{DecoderInput, DecoderLm};
use crate::error::{ModelError, Result};
use burn::tensor::Tensor;

use crate::kv_cache::KvCache;

/// Options for [`generate`] (transformers' `GenerationConfig` names and defaults).
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
    /// Sample instead of taking the most likely token.
    pub do_sample: bool,
    /// Divide logits by this before sampling.
    pub temperature: f32,
    /// Sample only among the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to `p`.
    pub top_p: Option<f32>,
    /// Penalise tokens already in the row (divide positive logits, multiply negative ones, as
    /// transformers' `RepetitionPenaltyLogitsProcessor`); applies to greedy decoding too.
    pub repetition_penalty: Option<f32>,
    /// Seed of the sampler (same seed, same tokens).
    pub seed: u64,
    /// Stop a row once its decoded text contains any of these (transformers' `stop_strings`).
    /// Needs a detokenizer, so only [`generate_text`] honours them; [`generate`] rejects them.
    pub stop_strings: Vec<String>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            eos_token_ids: None,
            pad_token_id: None,
            use_cache: true,
            do_sample: false,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: None,
            seed: 0,
            stop_strings: Vec::new(),
        }
    }
}

/// An [`ModelError::InvalidConfig`] for a generation setting.
pub(crate) fn bad_setting(
    field: &str,
    value: impl std::fmt::Display,
    expected: &str,
) -> ModelError {
    ModelError::InvalidConfig {
        path: "generation settings".into(),
        field: field.into(),
        message: format!("must be {expected}, got {value}"),
    }
}

impl GenerateConfig {
    /// Checks every setting before any work: `max_new_tokens` at least 1, `temperature`
    /// finite and not negative (positive when sampling), `top_k` at least 1, `top_p` in
    /// (0, 1], `repetition_penalty` finite and positive. Errors are
    /// [`ModelError::InvalidConfig`] naming the setting and the accepted range.
    pub fn validate(&self) -> Result<()> {
        if self.max_new_tokens == 0 {
            return Err(bad_setting("max_new_tokens", 0, "an integer >= 1"));
        }
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 || (self.do_sample && t == 0.0) {
            let range = if self.do_sample {
                "a finite number > 0 when sampling"
            } else {
                "a finite number >= 0"
            };
            return Err(bad_setting("temperature", t, range));
        }
        if let Some(k) = self.top_k
            && k == 0
        {
            return Err(bad_setting("top_k", k, "an integer >= 1"));
        }
        if let Some(p) = self.top_p
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(bad_setting("top_p", p, "a number in (0, 1]"));
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return Err(bad_setting("repetition_penalty", r, "a finite number > 0"));
        }
        Ok(())
    }
}

/// A small deterministic generator (SplitMix64) for sampling.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: tilpass_core::SplitMix64,
}

impl Sampler {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: tilpass_core::SplitMix64::from_state(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// A uniform number in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.rng.uniform()
    }
}

/// Logits `[batch, 1, vocab]` of the last column of final hidden states `[batch, seq,
/// hidden]`: generation picks from the last column only (rows are left-padded), so the LM head
/// runs on that column alone (`seq` times fewer FLOPs in the prefill's head).
fn last_logits(model: &DecoderLm, hidden: Tensor<3>) -> Tensor<3> {
    let [b, s, h] = hidden.dims();
    model.logits(hidden.slice([0..b, s - 1..s, 0..h]))
}

/// transformers' `RepetitionPenaltyLogitsProcessor` on one row of logits.
pub fn apply_repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    let mut done = std::collections::HashSet::new();
    for &t in seen {
        if !done.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            *l = if *l < 0.0 { *l * penalty } else { *l / penalty };
        }
    }
}

/// Index of the first maximum (as `torch.argmax`).
pub(crate) fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Picks the next token from one row of logits: the most likely one, or a sample after
/// temperature, top-k and top-p (transformers' warper order).
pub fn next_token(logits: &mut [f32], cfg: &GenerateConfig, sampler: &mut Sampler) -> u32 {
    if !cfg.do_sample {
        return argmax(logits);
    }
    let t = if cfg.temperature > 0.0 {
        cfg.temperature
    } else {
        1.0
    };
    logits.iter_mut().for_each(|l| *l /= t);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    let mut keep = cfg
        .top_k
        .filter(|k| *k > 0)
        .map_or(order.len(), |k| k.min(order.len()));
    // transformers keeps every token tied with the k-th largest logit.
    while keep < order.len() && logits[order[keep]] == logits[order[keep - 1]] {
        keep += 1;
    }
    let max = logits[order[0]];
    let mut probs: Vec<f64> = order[..keep]
        .iter()
        .map(|&i| f64::from(logits[i] - max).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(p) = cfg.top_p.filter(|p| *p < 1.0) {
        // The smallest prefix whose mass reaches p (at least one token).
        let mut cum = 0.0;
        let mut n = 0;
        for q in &probs {
            n += 1;
            cum += q;
            if cum >= f64::from(p) {
                break;
            }
        }
        probs.truncate(n.max(1));
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
    }
    let u = sampler.uniform();
    let mut cum = 0.0;
    for (j, q) in probs.iter().enumerate() {
        cum += q;
        if u < cum {
            return order[j] as u32;
        }
    }
    order[probs.len() - 1] as u32
}

/// Greedy decoding (see [`generate`]).
pub fn generate_greedy(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
) -> Result<Vec<Vec<u32>>> {
    let cfg = GenerateConfig {
        do_sample: false,
        ..cfg.clone()
    };
    generate(model, prompts, &cfg, &mut |_, _| true)
}

/// Generates from a batch of prompts (left-padded). Returns the new tokens of each row; a row
/// stops at its first EOS (included), as in transformers' `generate`, or when
/// `on_token(row, token)` returns `false` (for streaming output and stop strings).
pub fn generate(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    if !cfg.stop_strings.is_empty() {
        return Err(ModelError::Input(
            "stop_strings need the generated text: use generate_text with a detokenizer".into(),
        ));
    }
    generate_ids(model, prompts, cfg, on_token)
}

/// Virtual tokens in front of every row (prompt learning), for [`generate_with_prefix`].
pub enum VirtualPrefix<'a> {
    /// Prefix tuning: `n` cached key/value positions per layer; `make(batch)` builds the cache.
    Cache {
        /// Virtual positions.
        n: usize,
        /// Builds a cache holding the prefix for `batch` rows.
        make: &'a dyn Fn(usize) -> KvCache,
    },
    /// Prompt tuning / P-tuning: `make(batch)` gives `[batch, n, hidden]` embeddings that are
    /// prepended to every row's token embeddings.
    Embeds {
        /// Virtual tokens.
        n: usize,
        /// Builds the prompt embeddings for `batch` rows.
        make: &'a dyn Fn(usize) -> Tensor<3>,
    },
}

impl VirtualPrefix<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Cache { n, .. } | Self::Embeds { n, .. } => *n,
        }
    }
}

/// [`generate`] with virtual tokens in front of every row (PEFT's prompt-learning `generate`):
/// the attention mask starts with `n` ones and positions count them.
pub fn generate_with_prefix(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    prefix: &VirtualPrefix,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    generate_core(model, prompts, cfg, Some(prefix), on_token)
}

fn generate_ids(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    generate_core(model, prompts, cfg, None, on_token)
}

fn generate_core(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    prefix: Option<&VirtualPrefix>,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    cfg.validate()?;
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    let pad = cfg
        .pad_token_id
        .or_else(|| eos.first().copied())
        .unwrap_or(0);
    let n = prefix.map(VirtualPrefix::len).unwrap_or(0);
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let total = n.saturating_add(longest).saturating_add(cfg.max_new_tokens);
    if total > model.max_positions() {
        return Err(ModelError::TooLong {
            len: total,
            max: model.max_positions(),
        });
    }
    let first = DecoderInput::from_batch(&Batch::from_ids(prompts, Padding::left(pad)))?;
    let b = first.batch;
    let vocab = model.vocab_size();
    // Columns: `n` virtual ones (placeholders, always attended), then the padded rows.
    let mut seq = n + first.seq;
    let mut ids = Vec::with_capacity(b * seq);
    let mut mask = Vec::with_capacity(b * seq);
    for r in 0..b {
        ids.extend(std::iter::repeat_n(pad, n));
        ids.extend_from_slice(&first.input_ids[r * first.seq..(r + 1) * first.seq]);
        mask.extend(std::iter::repeat_n(1u8, n));
        mask.extend_from_slice(&first.attention_mask[r * first.seq..(r + 1) * first.seq]);
    }
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut cache: Option<KvCache> = None;
    let mut sampler = Sampler::new(cfg.seed);
    let mut last_tokens: Vec<u32> = Vec::new();
    for step in 0..cfg.max_new_tokens {
        let full = step == 0 || !cfg.use_cache;
        let logits = if full {
            // The whole sequence: virtual prefix + every column so far.
            let positions = position_ids_from_mask(&mask, seq);
            match prefix {
                Some(VirtualPrefix::Cache { make, .. }) => {
                    // The cache holds the `n` virtual positions; feed the real columns.
                    let real = seq - n;
                    let mut c = make(b);
                    let input = DecoderInput {
                        input_ids: (0..b)
                            .flat_map(|r| ids[r * seq + n..(r + 1) * seq].to_vec())
                            .collect(),
                        attention_mask: mask.clone(),
                        position_ids: (0..b)
                            .flat_map(|r| positions[r * seq + n..(r + 1) * seq].to_vec())
                            .collect(),
                        batch: b,
                        seq: real,
                    };
                    let l = last_logits(model, model.forward_hidden(&input, Some(&mut c))?);
                    cache = cfg.use_cache.then_some(c);
                    l
                }
                Some(VirtualPrefix::Embeds { make, .. }) => {
                    let input = DecoderInput {
                        input_ids: ids.clone(),
                        attention_mask: mask.clone(),
                        position_ids: positions,
                        batch: b,
                        seq,
                    };
                    let mut c = KvCache::new(model.num_layers());
                    let l = model.forward_hidden_with_prompt(
                        &input,
                        cfg.use_cache.then_some(&mut c),
                        Some(make(b)),
                    )?;
                    cache = cfg.use_cache.then_some(c);
                    last_logits(model, l)
                }
                None => {
                    let input = DecoderInput {
                        input_ids: ids.clone(),
                        attention_mask: mask.clone(),
                        position_ids: positions,
                        batch: b,
                        seq,
                    };
                    let mut c = KvCache::new(model.num_layers());
                    let l = last_logits(
                        model,
                        model.forward_hidden(&input, cfg.use_cache.then_some(&mut c))?,
                    );
                    cache = cfg.use_cache.then_some(c);
                    l
                }
            }
        } else {
            // The newest column's position: the count of attended columns before it.
            let position_ids = (0..b)
                .map(|r| {
                    mask[r * seq..(r + 1) * seq]
                        .iter()
                        .map(|&m| i64::from(m))
                        .sum::<i64>()
                        - 1
                })
                .collect();
            let input = DecoderInput {
                input_ids: last_tokens.clone(),
                attention_mask: mask.clone(),
                position_ids,
                batch: b,
                seq: 1,
            };
            model.forward(&input, cache.as_mut())?
        };
        let [_, s, _] = logits.dims();
        let last = logits
            .slice([0..b, s - 1..s, 0..vocab])
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("{e:?}")))?;
        let mut tokens = Vec::with_capacity(b);
        for r in 0..b {
            if done[r] {
                tokens.push(pad);
                continue;
            }
            let mut row = last[r * vocab..(r + 1) * vocab].to_vec();
            if let Some(x) = row.iter().find(|x| !x.is_finite()) {
                // A token picked from NaN / inf logits would be a silent wrong answer.
                return Err(ModelError::Input(format!(
                    "the model produced non-finite logits ({x}) for new token {} of row {r}: \
                     check its weights (and an adapter's)",
                    step + 1
                )));
            }
            if let Some(p) = cfg.repetition_penalty.filter(|p| *p != 1.0) {
                let seen: Vec<u32> = (n..seq)
                    .filter(|&j| mask[r * seq + j] == 1)
                    .map(|j| ids[r * seq + j])
                    .collect();
                apply_repetition_penalty(&mut row, &seen, p);
            }
            let t = next_token(&mut row, cfg, &mut sampler);
            out[r].push(t);
            let more = on_token(r, t);
            done[r] = eos.contains(&t) || !more;
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
        last_tokens = tokens;
    }
    Ok(out)
}

/// Why a row of [`generate_text`] stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It produced an EOS token (kept in `ids`, not in `text` if the detokenizer skips it).
    Eos,
    /// Its text reached this stop string.
    StopString(String),
    /// It reached `max_new_tokens`.
    MaxNewTokens,
}

/// One generated row of [`generate_text`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Every new token, including an EOS or the one that completed a stop string.
    pub ids: Vec<u32>,
    /// Decoded text of `ids`, cut before the first stop string.
    pub text: String,
    /// Why the row stopped.
    pub stop: StopReason,
}

/// Per-row text state: decoded text, how much was streamed, where a stop string matched.
struct TextRow {
    ids: Vec<u32>,
    text: String,
    streamed: usize,
    stop: Option<(usize, String)>,
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string (that
/// text may still become a stop string, so it is not streamed yet).
fn pending_stop_prefix(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for s in stops {
        for (k, _) in s.char_indices().skip(1) {
            if k > best && text.ends_with(&s[..k]) {
                best = k;
            }
        }
    }
    best
}

/// [`generate`] with text: every row's tokens are decoded by `decode` (a tokenizer's decode,
/// usually skipping special tokens) as they arrive, a row stops at the first of
/// `cfg.stop_strings` in its text (as transformers' `stop_strings`), and `on_text(row, chunk)`
/// streams the new text of each row. Text that could still turn into a stop string, and a
/// trailing incomplete character (`\u{FFFD}` from byte-level tokens), is held back until it
/// is settled, so the streamed chunks concatenate to exactly the returned `text`.
///
/// ```no_run
/// # use tilpass_models::{DecoderLm, GenerateConfig, generate_text};
/// # fn demo(model: &DecoderLm, prompt: Vec<u32>) -> tilpass_models::Result<()> {
/// let cfg = GenerateConfig { stop_strings: vec!["\n\n".into()], ..Default::default() };
/// let decode = |ids: &[u32]| Ok(format!("{ids:?}")); // a tokenizer's decode in practice
/// let rows = generate_text(model, &[prompt], &cfg, &decode, &mut |_, chunk| print!("{chunk}"))?;
/// println!("\nstopped: {:?}", rows[0].stop);
/// # Ok(()) }
/// ```
pub fn generate_text(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    decode: &dyn Fn(&[u32]) -> std::result::Result<String, String>,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    generate_text_with_prefix(model, prompts, cfg, None, decode, on_text)
}

/// [`generate_text`] with virtual tokens in front of every row (see [`generate_with_prefix`]).
pub fn generate_text_with_prefix(
    model: &DecoderLm,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    prefix: Option<&VirtualPrefix>,
    decode: &dyn Fn(&[u32]) -> std::result::Result<String, String>,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    with_text(
        prompts.len(),
        &eos,
        &cfg.stop_strings,
        decode,
        on_text,
        &mut |on_token| generate_core(model, prompts, cfg, prefix, on_token).map(|_| ()),
    )
}

/// A token callback: `(row, token)`, `false` to stop the row.
pub(crate) type TokenSink<'a> = &'a mut dyn FnMut(usize, u32) -> bool;

/// The text layer shared by decoder and encoder-decoder generation: `run` generates, calling
/// its token callback for each new token of a row (and stopping the row when it returns
/// `false`); every row's tokens are decoded by `decode` as they arrive, a row stops at the first
/// of `stop_strings` in its text, and `on_text(row, chunk)` streams settled text (see
/// [`generate_text`]). Returns one [`Generation`] per row of `rows`.
pub(crate) fn with_text(
    rows: usize,
    eos: &[u32],
    stop_strings: &[String],
    decode: &dyn Fn(&[u32]) -> std::result::Result<String, String>,
    on_text: &mut dyn FnMut(usize, &str),
    run: &mut dyn FnMut(TokenSink<'_>) -> Result<()>,
) -> Result<Vec<Generation>> {
    let stops: Vec<String> = stop_strings
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    let mut rows: Vec<TextRow> = (0..rows)
        .map(|_| TextRow {
            ids: Vec::new(),
            text: String::new(),
            streamed: 0,
            stop: None,
        })
        .collect();
    let mut error: Option<String> = None;
    run(&mut |r, t| {
        let row = &mut rows[r];
        row.ids.push(t);
        match decode(&row.ids) {
            Ok(text) => row.text = text,
            Err(e) => {
                error = Some(e);
                return false;
            }
        }
        row.stop = stops
            .iter()
            .filter_map(|s| row.text.find(s.as_str()).map(|p| (p, s.clone())))
            .min_by_key(|(p, _)| *p);
        let finished = row.stop.is_some() || eos.contains(&t);
        let mut safe = match &row.stop {
            Some((p, _)) => *p,
            None if finished => row.text.len(),
            None => {
                let mut end = row.text.len() - pending_stop_prefix(&row.text, &stops);
                if row.text[..end].ends_with('\u{FFFD}') {
                    end -= '\u{FFFD}'.len_utf8();
                }
                end
            }
        };
        while !row.text.is_char_boundary(safe) {
            safe -= 1;
        }
        if safe > row.streamed && row.text.is_char_boundary(row.streamed) {
            on_text(r, &row.text[row.streamed..safe]);
            row.streamed = safe;
        }
        row.stop.is_none()
    })?;
    if let Some(e) = error {
        return Err(ModelError::Decode(e));
    }
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(r, mut row)| {
            let stop = match row.stop.take() {
                Some((p, s)) => {
                    row.text.truncate(p);
                    StopReason::StopString(s)
                }
                None if row.ids.last().is_some_and(|t| eos.contains(t)) => StopReason::Eos,
                None => StopReason::MaxNewTokens,
            };
            if row.text.len() > row.streamed && row.text.is_char_boundary(row.streamed) {
                on_text(r, &row.text[row.streamed..]);
            }
            Generation {
                ids: row.ids,
                text: row.text,
                stop,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_counts(logits: &[f32], cfg: &GenerateConfig, n: usize) -> Vec<usize> {
        let mut s = Sampler::new(cfg.seed);
        let mut counts = vec![0; logits.len()];
        for _ in 0..n {
            counts[next_token(&mut logits.to_vec(), cfg, &mut s) as usize] += 1;
        }
        counts
    }

    #[test]
    fn sampling_follows_the_softmax() {
        // softmax([ln 1, ln 2, ln 3, ln 4]) = [0.1, 0.2, 0.3, 0.4].
        let logits: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let cfg = GenerateConfig {
            do_sample: true,
            seed: 7,
            ..Default::default()
        };
        let n = 40_000;
        let c = sample_counts(&logits, &cfg, n);
        for (i, want) in [0.1, 0.2, 0.3, 0.4].iter().enumerate() {
            let got = c[i] as f64 / n as f64;
            assert!((got - want).abs() < 0.01, "token {i}: {got} vs {want}");
        }
        // Same seed, same draws.
        assert_eq!(c, sample_counts(&logits, &cfg, n));
    }

    #[test]
    fn top_k_top_p_and_temperature_restrict_the_choice() {
        let logits: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let base = GenerateConfig {
            do_sample: true,
            ..Default::default()
        };
        let k2 = sample_counts(
            &logits,
            &GenerateConfig {
                top_k: Some(2),
                ..base.clone()
            },
            5000,
        );
        assert_eq!((k2[0], k2[1]), (0, 0));
        assert!((k2[3] as f64 / 5000.0 - 4.0 / 7.0).abs() < 0.03);
        // top_p 0.65: {0.4, 0.3} reaches 0.7 >= 0.65, so only tokens 3 and 2.
        let p = sample_counts(
            &logits,
            &GenerateConfig {
                top_p: Some(0.65),
                ..base.clone()
            },
            5000,
        );
        assert_eq!((p[0], p[1]), (0, 0));
        // top_p 0.3: the first token alone reaches it.
        let p1 = sample_counts(
            &logits,
            &GenerateConfig {
                top_p: Some(0.3),
                ..base.clone()
            },
            100,
        );
        assert_eq!(p1[3], 100);
        // A very low temperature is greedy.
        let cold = sample_counts(
            &logits,
            &GenerateConfig {
                temperature: 0.01,
                ..base
            },
            100,
        );
        assert_eq!(cold[3], 100);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut l = vec![2.0, -2.0, 1.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 1.0]);
    }
}
