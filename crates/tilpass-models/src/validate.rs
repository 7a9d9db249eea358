//! Checks of every model configuration before anything is built from it: `config.json` comes
//! with downloaded models and is untrusted. A value that would divide by zero, make no sense or
//! imply more parameters than the memory budget is a [`ModelError::InvalidConfig`] naming the
//! field (or [`tilpass_core::Error::TooLarge`] naming the sizes), raised before any allocation.
//!
//! Each family's `load` calls its config's `validate()` first, so every load path checks.

use tilpass_core::limits::{check_memory, mul_all};

use crate::bert::BertConfig;
use crate::config::RopeParameters;
use crate::error::{ModelError, Result};
use crate::gpt2::Gpt2Config;
use crate::llama::LlamaConfig;
use crate::ltg_bert::LtgBertConfig;
use crate::nort5::NorT5Config;
use crate::t5::T5Config;

/// Where a config comes from in errors raised by `validate()` before the caller names the file.
const UNNAMED: &str = "config";

fn invalid(field: &str, message: impl Into<String>) -> ModelError {
    ModelError::InvalidConfig {
        path: UNNAMED.into(),
        field: field.into(),
        message: message.into(),
    }
}

fn positive(field: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(invalid(field, "must be at least 1, found 0"));
    }
    Ok(())
}

fn positive_f(field: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(invalid(
            field,
            format!("must be a finite number above 0, found {v}"),
        ));
    }
    Ok(())
}

fn divides(field: &str, v: usize, by_field: &str, by: usize) -> Result<()> {
    if by == 0 || !v.is_multiple_of(by) {
        return Err(invalid(
            field,
            format!("{v} is not a multiple of {by_field} ({by})"),
        ));
    }
    Ok(())
}

/// Fails when `params` f32 values exceed the memory budget.
fn params_fit(family: &str, sizes: &str, params: u128) -> Result<()> {
    check_memory(
        format!("{family} config ({sizes}): {params} parameters as f32"),
        params.saturating_mul(4),
    )
    .map_err(ModelError::from)
}

/// Sum of products, saturating.
fn sum(terms: &[u128]) -> u128 {
    terms.iter().fold(0u128, |a, t| a.saturating_add(*t))
}

fn u(v: usize) -> u128 {
    v as u128
}

impl ModelError {
    /// Names the config file in an error of `validate()` (which does not know it).
    pub fn in_file(self, path: &str) -> Self {
        match self {
            ModelError::InvalidConfig {
                path: p,
                field,
                message,
            } if p == UNNAMED => ModelError::InvalidConfig {
                path: path.into(),
                field,
                message,
            },
            ModelError::Core(tilpass_core::Error::TooLarge { what, bytes, limit }) => {
                ModelError::Core(tilpass_core::Error::TooLarge {
                    what: format!("{path}: {what}"),
                    bytes,
                    limit,
                })
            }
            other => other,
        }
    }
}

fn validate_rope(field: &str, p: &RopeParameters) -> Result<()> {
    if let Some(t) = p.rope_theta {
        positive_f(&format!("{field}.rope_theta"), t)?;
    }
    positive_f(&format!("{field}.factor"), p.factor)?;
    if let Some(v) = p.low_freq_factor {
        positive_f(&format!("{field}.low_freq_factor"), v)?;
    }
    if let Some(v) = p.high_freq_factor {
        positive_f(&format!("{field}.high_freq_factor"), v)?;
    }
    if p.rope_type == "llama3" {
        let (low, high) = (
            p.low_freq_factor.unwrap_or(1.0),
            p.high_freq_factor.unwrap_or(4.0),
        );
        if high <= low {
            return Err(invalid(
                &format!("{field}.high_freq_factor"),
                format!("must be above low_freq_factor ({low}), found {high}"),
            ));
        }
    }
    if let Some(v) = p.original_max_position_embeddings {
        positive(&format!("{field}.original_max_position_embeddings"), v)?;
    }
    Ok(())
}

impl LlamaConfig {
    /// Checks that every size is positive, heads divide as attention needs, epsilon and the
    /// RoPE parameters are finite and positive, and the parameters fit the memory budget.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        if let Some(kv) = self.num_key_value_heads {
            positive("num_key_value_heads", kv)?;
            divides(
                "num_attention_heads",
                self.num_attention_heads,
                "num_key_value_heads",
                kv,
            )?;
        }
        match self.head_dim {
            Some(hd) => positive("head_dim", hd)?,
            None => divides(
                "hidden_size",
                self.hidden_size,
                "num_attention_heads",
                self.num_attention_heads,
            )?,
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(invalid(
                "head_dim",
                format!(
                    "must be even (RoPE rotates pairs), found {}",
                    self.head_dim()
                ),
            ));
        }
        positive_f("rms_norm_eps", self.rms_norm_eps)?;
        if let Some(t) = self.rope_theta {
            positive_f("rope_theta", t)?;
        }
        if let Some(p) = &self.rope_scaling {
            validate_rope("rope_scaling", p)?;
        }
        if let Some(p) = &self.rope_parameters {
            validate_rope("rope_parameters", p)?;
        }
        if let Some(w) = self.sliding_window() {
            positive("sliding_window", w)?;
        }
        let (h, i, v, l) = (
            u(self.hidden_size),
            u(self.intermediate_size),
            u(self.vocab_size),
            u(self.num_hidden_layers),
        );
        let q = mul_all(&[u(self.num_attention_heads), u(self.head_dim())]);
        let kv = mul_all(&[u(self.kv_heads()), u(self.head_dim())]);
        let layer = sum(&[
            mul_all(&[h, q]),
            mul_all(&[2, h, kv]),
            mul_all(&[q, h]),
            mul_all(&[3, h, i]),
            mul_all(&[2, h]),
        ]);
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        params_fit(
            "Llama",
            &format!(
                "vocab_size {}, hidden_size {}, intermediate_size {}, {} layers",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ),
            sum(&[mul_all(&[heads, v, h]), mul_all(&[l, layer]), h]),
        )
    }
}

impl Gpt2Config {
    /// Checks sizes, that `n_head` divides `n_embd`, the epsilon, and the parameter count.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("n_embd", self.n_embd)?;
        positive("n_layer", self.n_layer)?;
        positive("n_head", self.n_head)?;
        positive("n_positions", self.n_positions)?;
        divides("n_embd", self.n_embd, "n_head", self.n_head)?;
        if let Some(i) = self.n_inner {
            positive("n_inner", i)?;
        }
        positive_f("layer_norm_epsilon", self.layer_norm_epsilon)?;
        let e = u(self.n_embd);
        let inner = self.n_inner.map_or_else(|| mul_all(&[4, e]), u);
        let layer = sum(&[
            mul_all(&[4, e, e]),
            mul_all(&[2, e, inner]),
            mul_all(&[9, e]),
        ]);
        params_fit(
            "GPT-2",
            &format!(
                "vocab_size {}, n_embd {}, n_positions {}, {} layers",
                self.vocab_size, self.n_embd, self.n_positions, self.n_layer
            ),
            sum(&[
                mul_all(&[u(self.vocab_size) + u(self.n_positions), e]),
                mul_all(&[u(self.n_layer), layer]),
            ]),
        )
    }
}

/// The parameters of a BERT-like encoder stack: embeddings of `rows` x `h` plus `l` layers.
fn encoder_params(rows: u128, h: u128, i: u128, l: u128) -> u128 {
    let layer = sum(&[mul_all(&[4, h, h]), mul_all(&[3, h, i]), mul_all(&[8, h])]);
    sum(&[mul_all(&[rows, h]), mul_all(&[l, layer]), mul_all(&[h, h])])
}

impl BertConfig {
    /// Checks sizes, that heads divide the hidden size, the epsilon, and the parameter count.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("max_position_embeddings", self.max_position_embeddings)?;
        positive("type_vocab_size", self.type_vocab_size)?;
        divides(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        positive_f("layer_norm_eps", self.layer_norm_eps)?;
        let rows = sum(&[
            u(self.vocab_size),
            u(self.max_position_embeddings),
            u(self.type_vocab_size),
        ]);
        params_fit(
            "BERT",
            &format!(
                "vocab_size {}, hidden_size {}, intermediate_size {}, {} layers",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ),
            encoder_params(
                rows,
                u(self.hidden_size),
                u(self.intermediate_size),
                u(self.num_hidden_layers),
            ),
        )
    }
}

/// Log-bucketed relative positions need at least 4 buckets and a range beyond half of them.
fn validate_buckets(buckets: usize, max_position: Option<usize>) -> Result<()> {
    if buckets < 4 {
        return Err(invalid(
            "position_bucket_size",
            format!("must be at least 4, found {buckets}"),
        ));
    }
    if let Some(m) = max_position
        && m <= buckets / 2 + 1
    {
        return Err(invalid(
            "max_position_embeddings",
            format!(
                "must exceed position_bucket_size / 2 + 1 ({}) for log-bucketed positions, \
                 found {m}",
                buckets / 2 + 1
            ),
        ));
    }
    Ok(())
}

impl LtgBertConfig {
    /// Checks sizes, heads, position buckets, the epsilon, and the parameter count.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        divides(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        validate_buckets(
            self.position_bucket_size,
            Some(self.max_position_embeddings),
        )?;
        positive_f("layer_norm_eps", self.layer_norm_eps)?;
        let rows = sum(&[
            u(self.vocab_size),
            mul_all(&[2, u(self.position_bucket_size)]),
        ]);
        params_fit(
            "LTG-BERT",
            &format!(
                "vocab_size {}, hidden_size {}, intermediate_size {}, {} layers",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ),
            encoder_params(
                rows,
                u(self.hidden_size),
                u(self.intermediate_size),
                u(self.num_hidden_layers),
            ),
        )
    }
}

impl NorT5Config {
    /// Checks sizes, heads, position buckets, the epsilon, and the parameter count (encoder
    /// and decoder of `num_hidden_layers` each).
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("hidden_size", self.hidden_size)?;
        positive("intermediate_size", self.intermediate_size)?;
        positive("num_hidden_layers", self.num_hidden_layers)?;
        positive("num_attention_heads", self.num_attention_heads)?;
        divides(
            "hidden_size",
            self.hidden_size,
            "num_attention_heads",
            self.num_attention_heads,
        )?;
        validate_buckets(self.position_bucket_size, None)?;
        positive_f("layer_norm_eps", self.layer_norm_eps)?;
        // NorT5 feeds these ids to its embeddings (cls/sep become bos/eos in the decoder).
        for (field, id) in [
            ("pad_token_id", self.pad_token_id),
            ("cls_token_id", self.cls_token_id),
            ("sep_token_id", self.sep_token_id),
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return Err(invalid(
                    field,
                    format!("{id} is outside the vocabulary of {}", self.vocab_size),
                ));
            }
        }
        let rows = sum(&[
            mul_all(&[2, u(self.vocab_size)]),
            mul_all(&[4, u(self.position_bucket_size)]),
        ]);
        params_fit(
            "NorT5",
            &format!(
                "vocab_size {}, hidden_size {}, intermediate_size {}, {} layers",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ),
            encoder_params(
                rows,
                u(self.hidden_size),
                u(self.intermediate_size),
                mul_all(&[3, u(self.num_hidden_layers)]),
            ),
        )
    }
}

impl T5Config {
    /// Checks sizes, relative-attention buckets (at least 4, and a maximum distance beyond the
    /// exact buckets), the epsilon, and the parameter count.
    pub fn validate(&self) -> Result<()> {
        positive("vocab_size", self.vocab_size)?;
        positive("d_model", self.d_model)?;
        positive("d_kv", self.d_kv)?;
        positive("d_ff", self.d_ff)?;
        positive("num_layers", self.num_layers)?;
        positive("num_heads", self.num_heads)?;
        if let Some(n) = self.num_decoder_layers {
            positive("num_decoder_layers", n)?;
        }
        let buckets = self.relative_attention_num_buckets;
        if buckets < 4 {
            return Err(invalid(
                "relative_attention_num_buckets",
                format!("must be at least 4, found {buckets}"),
            ));
        }
        if self.relative_attention_max_distance <= buckets / 2 {
            return Err(invalid(
                "relative_attention_max_distance",
                format!(
                    "must exceed relative_attention_num_buckets / 2 ({}), found {}",
                    buckets / 2,
                    self.relative_attention_max_distance
                ),
            ));
        }
        positive_f("layer_norm_epsilon", self.layer_norm_epsilon)?;
        let (d, ff) = (u(self.d_model), u(self.d_ff));
        let inner = mul_all(&[u(self.num_heads), u(self.d_kv)]);
        let attn = mul_all(&[4, d, inner]);
        let ffn = mul_all(&[3, d, ff]);
        let enc = mul_all(&[u(self.num_layers), sum(&[attn, ffn, mul_all(&[2, d])])]);
        let dec_layers = u(self.num_decoder_layers.unwrap_or(self.num_layers));
        let dec = mul_all(&[dec_layers, sum(&[attn, attn, ffn, mul_all(&[3, d])])]);
        params_fit(
            "T5",
            &format!(
                "vocab_size {}, d_model {}, d_ff {}, {} + {} layers",
                self.vocab_size, self.d_model, self.d_ff, self.num_layers, dec_layers
            ),
            sum(&[
                mul_all(&[2, u(self.vocab_size), d]),
                enc,
                dec,
                mul_all(&[2, u(buckets), u(self.num_heads)]),
            ]),
        )
    }
}
