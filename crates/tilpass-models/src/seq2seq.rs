//! Generation for encoder-decoder models with transformers' semantics: greedy decoding,
//! sampling (temperature, top-k, top-p, seeded) and beam search (`num_beams`, `length_penalty`,
//! `early_stopping` true / false / "never"); a repetition penalty over the decoder ids (as
//! transformers' `RepetitionPenaltyLogitsProcessor` sees them for an encoder-decoder: the decoder
//! start token and the tokens generated so far, not the encoder input); stop strings and
//! streaming ([`generate_seq2seq_text`], [`generate_seq2seq_stream`]).

use serde::{Deserialize, Serialize};

use std::path::Path;

use burn::tensor::{Device, Tensor};

pub use crate::enc_dec::{
    EncoderOutput, Seq2SeqModel, Seq2SeqOutput, T5Cache, forward_seq2seq, forward_seq2seq_to_head,
};
use crate::encoder::EncoderInput;
use crate::error::{ModelError, Result};
use crate::generate::{
    GenerateConfig, Generation, Sampler, apply_repetition_penalty, bad_setting, next_token,
    with_text,
};
use crate::nort5::NorT5;
use crate::t5::T5;

/// `model_type`s that [`Seq2SeqLm::load`] understands.
pub const SUPPORTED_SEQ2SEQ: [&str; 3] = ["t5", "mt5", "nort5"];

/// An encoder-decoder language model: T5 or NorT5.
#[derive(Debug)]
pub enum Seq2SeqLm {
    /// T5, T5.1.1, mT5.
    T5(Box<T5>),
    /// NorT5.
    NorT5(Box<NorT5>),
}

impl Seq2SeqLm {
    /// Loads an encoder-decoder directory, dispatching on `model_type` (or a NorT5
    /// `architectures` entry).
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let md = tilpass_core::ModelDir::open(dir)?;
        let model_type = md.model_type().unwrap_or("").to_string();
        let arch = md.config_json()["architectures"][0]
            .as_str()
            .unwrap_or("")
            .to_string();
        match model_type.as_str() {
            "t5" | "mt5" => Ok(Self::T5(Box::new(T5::from_dir(dir, device)?))),
            "nort5" => Ok(Self::NorT5(Box::new(NorT5::from_dir(dir, device)?))),
            "" if arch.starts_with("NorT5") => {
                Ok(Self::NorT5(Box::new(NorT5::from_dir(dir, device)?)))
            }
            other => Err(ModelError::UnsupportedModelType {
                path: md
                    .path()
                    .join(tilpass_core::CONFIG_FILE)
                    .display()
                    .to_string(),
                model_type: if other.is_empty() {
                    "(none)".into()
                } else {
                    other.into()
                },
                supported: SUPPORTED_SEQ2SEQ.join(", "),
            }),
        }
    }

    fn inner(&self) -> &dyn Seq2SeqModel {
        match self {
            Self::T5(m) => m.as_ref(),
            Self::NorT5(m) => m.as_ref(),
        }
    }

    /// Logits `[batch, t, vocab]` of a full pass: encode `input`, decode `decoder_ids`.
    pub fn forward(&self, input: &EncoderInput, decoder_ids: &[Vec<u32>]) -> Result<Tensor<3>> {
        let device = match self {
            Self::T5(m) => m.weights_device(),
            Self::NorT5(m) => m.weights_device(),
        };
        crate::pool::on_pool(&device, || forward_seq2seq(self, input, decoder_ids))
    }
}

impl Seq2SeqModel for Seq2SeqLm {
    fn encode(&self, input: &EncoderInput) -> Result<EncoderOutput> {
        self.inner().encode(input)
    }
    fn encode_with_prompt(
        &self,
        input: &EncoderInput,
        prompt: Option<Tensor<3>>,
    ) -> Result<EncoderOutput> {
        self.inner().encode_with_prompt(input, prompt)
    }
    fn takes_prefix_cache(&self) -> bool {
        self.inner().takes_prefix_cache()
    }
    fn hidden_size(&self) -> usize {
        self.inner().hidden_size()
    }
    fn kv_shape(&self) -> (usize, usize) {
        self.inner().kv_shape()
    }
    fn decode(
        &self,
        enc: &EncoderOutput,
        ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Tensor<3>> {
        self.inner().decode(enc, ids, t, cache)
    }
    fn decode_to_head(
        &self,
        enc: &EncoderOutput,
        ids: &[u32],
        t: usize,
        cache: Option<&mut T5Cache>,
    ) -> Result<Option<(Tensor<3>, crate::head_loss::LmHead)>> {
        self.inner().decode_to_head(enc, ids, t, cache)
    }
    fn num_decoder_layers(&self) -> usize {
        self.inner().num_decoder_layers()
    }
    fn eos_token_ids(&self) -> Vec<u32> {
        self.inner().eos_token_ids()
    }
    fn decoder_start_token_id(&self) -> u32 {
        self.inner().decoder_start_token_id()
    }
    fn pad_token_id(&self) -> u32 {
        self.inner().pad_token_id()
    }
    fn loss_labels(&self, labels: &[i64]) -> Vec<i64> {
        self.inner().loss_labels(labels)
    }
}

/// When beam search stops (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EarlyStopping {
    /// Stop when the best running beam, scored at the current length, cannot beat the worst
    /// finished one (transformers' default, `False`).
    #[default]
    Heuristic,
    /// Stop as soon as `num_beams` hypotheses are finished (`True`).
    Finished,
    /// The canonical rule: stop only when no running beam can improve (`"never"`).
    Never,
}

/// Options for [`generate_seq2seq`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seq2SeqConfig {
    /// New tokens at most (the decoder start token not counted).
    pub max_new_tokens: usize,
    /// Beams; 1 is greedy decoding.
    pub num_beams: usize,
    /// Exponent of the length normalisation of finished beams' scores.
    pub length_penalty: f32,
    /// Stopping rule of beam search.
    pub early_stopping: EarlyStopping,
    /// End-of-sequence ids (default: the model's).
    pub eos_token_ids: Option<Vec<u32>>,
    /// First decoder token (default: the model's `decoder_start_token_id`).
    pub decoder_start_token_id: Option<u32>,
    /// Reuse decoder keys/values (same result, faster).
    pub use_cache: bool,
    /// Sample instead of taking the most likely token (needs `num_beams == 1`).
    pub do_sample: bool,
    /// Divide logits by this before sampling.
    pub temperature: f32,
    /// Sample only among the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities sum to `p`.
    pub top_p: Option<f32>,
    /// Penalise tokens already among the decoder ids (the start token included), as
    /// transformers' `RepetitionPenaltyLogitsProcessor`: on the logits for greedy decoding and
    /// sampling, on the log-probabilities for beam search.
    pub repetition_penalty: Option<f32>,
    /// Seed of the sampler (same seed, same tokens; the decoder path's generator).
    pub seed: u64,
    /// Stop a row once its decoded text contains any of these (needs a detokenizer: only
    /// [`generate_seq2seq_text`] honours them, and only with `num_beams == 1`).
    pub stop_strings: Vec<String>,
}

impl Default for Seq2SeqConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            eos_token_ids: None,
            decoder_start_token_id: None,
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

impl Seq2SeqConfig {
    /// Checks every setting before any work: `max_new_tokens` and `num_beams` >= 1,
    /// `length_penalty` finite, the sampling settings as [`GenerateConfig::validate`], and no
    /// sampling or stop strings with beam search. Errors are [`ModelError::InvalidConfig`]
    /// naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.sampling().validate()?;
        if self.num_beams > 1 && self.do_sample {
            return Err(bad_setting(
                "do_sample",
                true,
                "false with num_beams > 1 (beam sampling is not implemented)",
            ));
        }
        if self.num_beams > 1 && !self.stop_strings.is_empty() {
            return Err(bad_setting(
                "stop_strings",
                format!("{:?}", self.stop_strings),
                "empty with num_beams > 1 (stop strings apply to greedy decoding and sampling)",
            ));
        }
        if self.max_new_tokens == 0 {
            return Err(bad_setting("max_new_tokens", 0, "an integer >= 1"));
        }
        if self.num_beams == 0 {
            return Err(bad_setting("num_beams", 0, "an integer >= 1"));
        }
        if !self.length_penalty.is_finite() {
            return Err(bad_setting(
                "length_penalty",
                self.length_penalty,
                "a finite number",
            ));
        }
        Ok(())
    }
}

impl Seq2SeqConfig {
    /// The decoder-path settings these imply (the token-picking rules shared with
    /// [`crate::generate()`]).
    pub fn sampling(&self) -> GenerateConfig {
        GenerateConfig {
            max_new_tokens: self.max_new_tokens.max(1),
            eos_token_ids: self.eos_token_ids.clone(),
            pad_token_id: None,
            use_cache: self.use_cache,
            do_sample: self.do_sample,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            stop_strings: Vec::new(),
        }
    }
}

/// Runs the decoder over `rows` (every row the same length) and returns the log-softmax of
/// the last position's logits (or the logits themselves with `raw`), `[rows][vocab]`.
struct Stepper<'a> {
    model: &'a dyn Seq2SeqModel,
    enc: EncoderOutput,
    cache: Option<T5Cache>,
    raw: bool,
}

impl Stepper<'_> {
    fn step(&mut self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let n = rows.len();
        let len = rows[0].len();
        let (ids, t): (Vec<u32>, usize) = match &self.cache {
            Some(c) if !c.is_empty() => (rows.iter().map(|r| r[len - 1]).collect(), 1),
            _ => (rows.concat(), len),
        };
        let logits = self.model.decode(&self.enc, &ids, t, self.cache.as_mut())?;
        let [_, _, v] = logits.dims();
        let last = logits.slice([0..n, t - 1..t, 0..v]);
        let last = if self.raw {
            last
        } else {
            burn::tensor::activation::log_softmax(last, 2)
        };
        let flat = last
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Input(format!("{e:?}")))?;
        // NaN (or +inf) log-probabilities come from non-finite logits: a token picked from
        // them would be a silent wrong answer.
        if let Some(i) = flat.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
            return Err(ModelError::Input(format!(
                "the model produced non-finite logits at decoder step {len} of row {}: check \
                 its weights (and an adapter's)",
                i / v
            )));
        }
        Ok(flat.chunks(v).map(<[f32]>::to_vec).collect())
    }
}

/// Generates from an encoder-decoder: the encoder reads `input`, the decoder starts from the
/// decoder start token. Returns the new tokens of each row (start token excluded), up to and
/// including the first EOS, as transformers' `generate` (greedy when `num_beams == 1`, else
/// beam search returning the best finished hypothesis).
///
/// With `do_sample` it samples (temperature, top-k, top-p, seeded by `seed`), and a
/// `repetition_penalty` applies in every mode. `stop_strings` need text: use
/// [`generate_seq2seq_text`].
pub fn generate_seq2seq(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    cfg: &Seq2SeqConfig,
) -> Result<Vec<Vec<u32>>> {
    generate_seq2seq_stream(model, input, cfg, &mut |_, _| true)
}

/// [`generate_seq2seq`] with a token callback: `on_token(row, token)` sees every new token as
/// it is picked (greedy decoding and sampling), and a row stops when it returns `false`. Beam
/// search knows its answer only at the end: the best hypothesis is passed token by token after
/// the search (a `false` cuts it there).
pub fn generate_seq2seq_stream(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    cfg: &Seq2SeqConfig,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    if !cfg.stop_strings.is_empty() {
        return Err(ModelError::Input(
            "stop_strings need the generated text: use generate_seq2seq_text with a detokenizer"
                .into(),
        ));
    }
    stream_ids(model, input, cfg, on_token)
}

/// [`generate_seq2seq`] with text, as [`crate::generate_text`] for decoders: each row's tokens
/// are decoded by `decode` as they arrive, a row stops at the first of `cfg.stop_strings` in its
/// text, and `on_text(row, chunk)` streams the settled text (the chunks concatenate to the
/// returned `text`).
pub fn generate_seq2seq_text(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    cfg: &Seq2SeqConfig,
    decode: &dyn Fn(&[u32]) -> std::result::Result<String, String>,
    on_text: &mut dyn FnMut(usize, &str),
) -> Result<Vec<Generation>> {
    cfg.validate()?;
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    with_text(
        input.batch,
        &eos,
        &cfg.stop_strings,
        decode,
        on_text,
        &mut |on_token| stream_ids(model, input, cfg, on_token).map(|_| ()),
    )
}

fn stream_ids(
    model: &dyn Seq2SeqModel,
    input: &EncoderInput,
    cfg: &Seq2SeqConfig,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    cfg.validate()?;
    let eos = cfg
        .eos_token_ids
        .clone()
        .unwrap_or_else(|| model.eos_token_ids());
    let start = cfg
        .decoder_start_token_id
        .unwrap_or_else(|| model.decoder_start_token_id());
    let enc = model.encode(input)?;
    check_decode_memory(model, &enc, cfg)?;
    if cfg.num_beams == 1 {
        greedy(model, enc, input.batch, start, &eos, cfg, on_token)
    } else {
        let mut rows = beam_search(model, enc, input.batch, start, &eos, cfg)?;
        for (r, row) in rows.iter_mut().enumerate() {
            if let Some(cut) = row.iter().position(|&t| !on_token(r, t)) {
                row.truncate(cut + 1);
            }
        }
        Ok(rows)
    }
}

/// `num_beams` x `max_new_tokens` (with the batch, the encoder length, the decoder layers and
/// the model width) imply the size of the decoder's key/value caches and of the hypotheses:
/// check it against the memory budget before repeating any row.
fn check_decode_memory(
    model: &dyn Seq2SeqModel,
    enc: &EncoderOutput,
    cfg: &Seq2SeqConfig,
) -> Result<()> {
    use tilpass_core::limits::{check_memory, mul_all};
    let [b, s, d] = enc.hidden.dims().map(|x| x as u128);
    let (nb, new) = (cfg.num_beams as u128, cfg.max_new_tokens as u128);
    let layers = model.num_decoder_layers() as u128;
    // Self-attention keys and values grow to `new` positions; cross-attention ones hold `s`.
    let kv = mul_all(&[nb, b, layers, 2, new.saturating_add(s), d, 4]);
    let hypotheses = mul_all(&[nb, 2, b, new, 4]);
    check_memory(
        format!(
            "generation with num_beams {} x max_new_tokens {} (batch {b}, {layers} decoder              layers, width {d})",
            cfg.num_beams, cfg.max_new_tokens
        ),
        kv.saturating_add(hypotheses),
    )?;
    Ok(())
}

/// Greedy decoding or sampling: transformers' `_sample` loop. The processors run on the raw
/// logits of the last position: the repetition penalty over the row's decoder ids, then (when
/// sampling) temperature, top-k and top-p, with one seeded generator for the whole batch.
fn greedy(
    model: &dyn Seq2SeqModel,
    enc: EncoderOutput,
    b: usize,
    start: u32,
    eos: &[u32],
    cfg: &Seq2SeqConfig,
    on_token: &mut dyn FnMut(usize, u32) -> bool,
) -> Result<Vec<Vec<u32>>> {
    let mut st = Stepper {
        model,
        enc,
        cache: cfg
            .use_cache
            .then(|| T5Cache::new(model.num_decoder_layers())),
        raw: true,
    };
    let picking = cfg.sampling();
    let mut sampler = Sampler::new(cfg.seed);
    let pad = model.pad_token_id();
    let mut rows = vec![vec![start]; b];
    let mut out = vec![Vec::new(); b];
    let mut done = vec![false; b];
    for _ in 0..cfg.max_new_tokens {
        let mut logits = st.step(&rows)?;
        for r in 0..b {
            let t = if done[r] {
                pad
            } else {
                let row = &mut logits[r];
                if let Some(p) = cfg.repetition_penalty.filter(|p| *p != 1.0) {
                    apply_repetition_penalty(row, &rows[r], p);
                }
                next_token(row, &picking, &mut sampler)
            };
            if !done[r] {
                out[r].push(t);
                let more = on_token(r, t);
                done[r] = eos.contains(&t) || !more;
            }
            rows[r].push(t);
        }
        if done.iter().all(|d| *d) {
            break;
        }
    }
    Ok(out)
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let k = k.min(values.len());
    idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        values[b].total_cmp(&values[a]).then(a.cmp(&b))
    });
    idx.truncate(k);
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx
}

#[derive(Clone)]
struct Hyp {
    tokens: Vec<u32>,
    score: f32,
}

/// transformers' vectorised beam search (`_beam_search`, v4.50+), per batch row.
fn beam_search(
    model: &dyn Seq2SeqModel,
    enc: EncoderOutput,
    b: usize,
    start: u32,
    eos: &[u32],
    cfg: &Seq2SeqConfig,
) -> Result<Vec<Vec<u32>>> {
    const NEG: f32 = -1.0e9;
    let nb = cfg.num_beams;
    let keep = (1 + eos.len()).max(2) * nb;
    let max_length = 1 + cfg.max_new_tokens; // decoder prompt = the start token
    let mut st = Stepper {
        model,
        enc: enc.repeat_rows(nb),
        cache: cfg
            .use_cache
            .then(|| T5Cache::new(model.num_decoder_layers())),
        raw: false,
    };
    let mut running: Vec<Vec<Hyp>> = (0..b)
        .map(|_| {
            (0..nb)
                .map(|i| Hyp {
                    tokens: Vec::new(),
                    score: if i == 0 { 0.0 } else { NEG },
                })
                .collect()
        })
        .collect();
    let mut finished: Vec<Vec<(Hyp, bool)>> = vec![
        vec![
            (
                Hyp {
                    tokens: Vec::new(),
                    score: NEG,
                },
                false
            );
            nb
        ];
        b
    ];
    let mut improvable = vec![true; b];
    let mut cur_len = 1usize;
    while cur_len < max_length {
        let rows: Vec<Vec<u32>> = running
            .iter()
            .flat_map(|beams| {
                beams
                    .iter()
                    .map(|h| [vec![start], h.tokens.clone()].concat())
            })
            .collect();
        let mut lp = st.step(&rows)?;
        if let Some(p) = cfg.repetition_penalty.filter(|p| *p != 1.0) {
            // transformers processes the log-probabilities of each beam's decoder ids.
            for (scores, ids) in lp.iter_mut().zip(&rows) {
                apply_repetition_penalty(scores, ids, p);
            }
        }
        let vocab = lp[0].len();
        let mut all_hit = true;
        let mut order = Vec::with_capacity(b * nb);
        for r in 0..b {
            let mut acc = Vec::with_capacity(nb * vocab);
            for (i, h) in running[r].iter().enumerate() {
                acc.extend(lp[r * nb + i].iter().map(|v| v + h.score));
            }
            let cand: Vec<(usize, Hyp, bool)> = top_k(&acc, keep)
                .into_iter()
                .map(|c| {
                    let (beam, tok) = (c / vocab, (c % vocab) as u32);
                    let mut tokens = running[r][beam].tokens.clone();
                    tokens.push(tok);
                    let hit = eos.contains(&tok) || cur_len + 1 >= max_length;
                    (
                        beam,
                        Hyp {
                            tokens,
                            score: acc[c],
                        },
                        hit,
                    )
                })
                .collect();
            all_hit &= cand.iter().all(|c| c.2);
            // Next running beams: the best candidates that did not stop.
            let run_scores: Vec<f32> = cand
                .iter()
                .map(|(_, h, hit)| h.score + if *hit { NEG } else { 0.0 })
                .collect();
            let next: Vec<usize> = top_k(&run_scores, nb);
            // Finished beams: merge the old ones with candidates in the top `nb` that stopped.
            let denom = ((cur_len + 1 - 1) as f64).powf(f64::from(cfg.length_penalty)) as f32;
            let full =
                finished[r].iter().all(|f| f.1) && cfg.early_stopping == EarlyStopping::Finished;
            let mut merged: Vec<(Hyp, bool)> = finished[r].clone();
            for (rank, (_, h, hit)) in cand.iter().enumerate() {
                let just = *hit && rank < nb;
                let mut s = h.score / denom;
                if full {
                    s += NEG;
                }
                if !improvable[r] {
                    s += NEG;
                }
                if !just {
                    s += NEG;
                }
                merged.push((
                    Hyp {
                        tokens: h.tokens.clone(),
                        score: s,
                    },
                    just,
                ));
            }
            let ms: Vec<f32> = merged.iter().map(|m| m.0.score).collect();
            finished[r] = top_k(&ms, nb)
                .into_iter()
                .map(|i| merged[i].clone())
                .collect();
            running[r] = next
                .iter()
                .map(|&i| Hyp {
                    tokens: cand[i].1.tokens.clone(),
                    score: run_scores[i],
                })
                .collect();
            order.extend(next.iter().map(|&i| r * nb + cand[i].0));
        }
        if let Some(c) = st.cache.as_mut() {
            c.select_rows(&order);
        }
        cur_len += 1;
        for r in 0..b {
            let best_len = if cfg.early_stopping == EarlyStopping::Never && cfg.length_penalty > 0.0
            {
                max_length - 1
            } else {
                cur_len - 1
            };
            let best =
                running[r][0].score / (best_len as f64).powf(f64::from(cfg.length_penalty)) as f32;
            let min_fin = finished[r]
                .iter()
                .map(|f| f.0.score)
                .fold(f32::INFINITY, f32::min);
            let any_better = finished[r]
                .iter()
                .any(|f| best > if f.1 { min_fin } else { NEG });
            improvable[r] &= any_better;
        }
        let open = !(finished.iter().all(|f| f.iter().all(|x| x.1))
            && cfg.early_stopping == EarlyStopping::Finished);
        if !improvable.iter().any(|x| *x) || !open || all_hit {
            break;
        }
    }
    Ok(finished
        .into_iter()
        .map(|f| f[0].0.tokens.clone())
        .collect())
}

/// Whether `dir` holds an encoder-decoder that [`Seq2SeqLm::load`] takes: its `config.json`
/// says `is_encoder_decoder: true`, or its `model_type` is one of [`SUPPORTED_SEQ2SEQ`], or
/// its first `architectures` entry is a NorT5 or `...ForConditionalGeneration` class. Errors
/// only when the directory or its config cannot be read.
pub fn is_encoder_decoder(dir: impl AsRef<Path>) -> Result<bool> {
    let md = tilpass_core::ModelDir::open(dir.as_ref())?;
    let cfg = md.config_json();
    let arch = cfg["architectures"][0].as_str().unwrap_or("");
    Ok(cfg["is_encoder_decoder"].as_bool() == Some(true)
        || md
            .model_type()
            .is_some_and(|t| SUPPORTED_SEQ2SEQ.contains(&t))
        || arch.starts_with("NorT5")
        || arch.ends_with("ForConditionalGeneration"))
}

impl Seq2SeqLm {
    /// Writes the model in transformers' layout: `model.safetensors` with HF tensor names and
    /// `[out, in]` linear weights, and `config.json`: `base_config` (the source directory's
    /// config, which keeps keys tilpass does not model, such as NorT5's `auto_map`) with the
    /// typed config's keys written over it and `dtype` set, so that
    /// `T5ForConditionalGeneration.from_pretrained(dir)` (NorT5: with its modelling code) and
    /// [`Seq2SeqLm::load`] read it back. Written atomically file by file.
    pub fn save(
        &self,
        dir: impl AsRef<Path>,
        dtype: tilpass_core::SaveDtype,
        base_config: Option<&serde_json::Value>,
    ) -> Result<()> {
        use tilpass_core::SaveDtype;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| tilpass_core::Error::io(dir, e))?;
        let (tensors, typed) = match self {
            Self::T5(m) => (
                crate::params::hf_tensors(m.as_ref())?,
                serde_json::to_value(m.config()),
            ),
            Self::NorT5(m) => (
                crate::params::hf_tensors(m.as_ref())?,
                serde_json::to_value(m.config()),
            ),
        };
        let typed =
            typed.map_err(|e| ModelError::Input(format!("config does not serialise: {e}")))?;
        let mut config = match base_config {
            Some(serde_json::Value::Object(o)) => o.clone(),
            _ => serde_json::Map::new(),
        };
        if let serde_json::Value::Object(o) = typed {
            for (k, v) in o.into_iter().filter(|(_, v)| !v.is_null()) {
                config.insert(k, v);
            }
        }
        config.remove("torch_dtype");
        let name = match dtype {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
            SaveDtype::F16 => "float16",
        };
        config.insert("dtype".into(), name.into());
        tilpass_core::write_atomic(
            dir.join(tilpass_core::CONFIG_FILE),
            // Cannot fail: a serde_json::Value always serialises.
            serde_json::to_string_pretty(&serde_json::Value::Object(config)).expect("JSON value"),
        )?;
        tilpass_core::save_safetensors(
            dir.join(tilpass_core::SAFETENSORS_FILE),
            tensors.iter().map(|(n, x)| (n.as_str(), x)),
            dtype,
            None,
        )?;
        Ok(())
    }
}

impl Seq2SeqLm {
    /// The model behind the wrapper, as adapters see it.
    fn as_linears(&self) -> &dyn crate::linear::HasLinears {
        match self {
            Self::T5(m) => m.as_ref(),
            Self::NorT5(m) => m.as_ref(),
        }
    }

    fn as_linears_mut(&mut self) -> &mut dyn crate::linear::HasLinears {
        match self {
            Self::T5(m) => m.as_mut(),
            Self::NorT5(m) => m.as_mut(),
        }
    }
}

crate::linear::has_linears_via!(Seq2SeqLm, as_linears, as_linears_mut);
