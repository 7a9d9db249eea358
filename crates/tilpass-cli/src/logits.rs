//! `tilpass logits`: the logits of one sequence for every model family and head, with LoRA
//! or prompt-learning adapters.

use clap::Args;
use serde_json::json;
use tilpass::burn::tensor::Device;
use tilpass::models::{
    AnyModel, DecoderInput, EncoderInput, EncoderModel, HasLinears, Head, Logits, ModelKind,
};
use tilpass::peft::{PromptAdapter, is_prompt_adapter};
use tilpass::{Error, Result};

use crate::common::{ModelArgs, print, with_adapter};

/// The flags of `logits`.
#[derive(Args)]
#[command(
    after_help = "Output shapes by the head config.json's `architectures` names:
  *ForCausalLM / *LMHeadModel (Llama, Mistral, GPT-2)   [1, seq, vocab]
  *ForMaskedLM (BERT, NorBERT3 / LTG-BERT)              [1, seq, vocab]
  *ForSequenceClassification (BERT, NorBERT3)           [1, num_labels]
  *ForTokenClassification (BERT)                        [1, seq, num_labels]
  *ForConditionalGeneration (T5, mT5, NorT5)            [1, dec_seq, vocab]
Without `architectures` a model loads with its language-model head (causal, masked or
seq2seq). A bare encoder (BertModel) has no logits: use `tilpass embed`.
--adapter takes LoRA / DoRA adapters on every model, and prefix / prompt / P-tuning adapters
on decoders (logits include prompt tuning's virtual columns), BERT sequence classifiers and T5.
Non-finite logits (NaN/inf) exit 2."
)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Token ids, comma-separated, used as given (no special tokens added); the encoder input
    /// of encoder-decoder models.
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
    /// Decoder token ids for encoder-decoder models (T5, NorT5), comma-separated (default: the
    /// decoder start token alone).
    #[arg(long, value_delimiter = ',')]
    decoder_ids: Option<Vec<u32>>,
    /// BERT segment ids, one per --ids value (default: zeros).
    #[arg(long, value_delimiter = ',')]
    token_type_ids: Option<Vec<u32>>,
}

/// One sequence's encoder input: `ids` unpadded with `token_type_ids` (zeros when absent).
fn encoder_input(ids: &[u32], token_type_ids: Option<&[u32]>) -> Result<EncoderInput> {
    let mut input = EncoderInput::from_batch(&tilpass::tokenize::Batch::from_ids(
        &[ids],
        tilpass::tokenize::Padding::right(0),
    ))?;
    if let Some(tt) = token_type_ids {
        if tt.len() != ids.len() {
            return Err(Error::invalid(format!(
                "--token-type-ids has {} values for {} --ids",
                tt.len(),
                ids.len()
            )));
        }
        input.token_type_ids = tt.to_vec();
    }
    Ok(input)
}

/// Logits of a model with a prompt-learning adapter (prefix / prompt / P-tuning) at `dir`, as
/// PEFT's forward computes them: decoders `[1, n + seq, vocab]` (prompt / P-tuning include the
/// virtual columns; prefix tuning `[1, seq, vocab]`), BERT sequence classifiers `[1,
/// num_labels]` (with the adapter's saved classifier), T5 `[1, dec_seq, vocab]`.
fn prompt_adapter_logits(
    model: AnyModel,
    dir: &std::path::Path,
    a: &LogitsArgs,
    device: &Device,
) -> Result<Logits> {
    use tilpass::peft::PromptDims;
    let no_flag = |set: bool, flag: &str, what: &str| -> Result<()> {
        if set {
            return Err(Error::invalid(format!("{flag} is for {what}")));
        }
        Ok(())
    };
    let tt = a.token_type_ids.as_deref();
    match model {
        AnyModel::CausalLm(m) => {
            no_flag(tt.is_some(), "--token-type-ids", "BERT models")?;
            no_flag(
                a.decoder_ids.is_some(),
                "--decoder-ids",
                "encoder-decoder models (T5, NorT5)",
            )?;
            let p = PromptAdapter::load(dir, &m)?;
            Ok(Logits::PerToken(p.forward(
                &m,
                &DecoderInput::unpadded(std::slice::from_ref(&a.ids))?,
            )?))
        }
        AnyModel::SequenceClassifier(EncoderModel::Bert(mut m)) => {
            no_flag(
                a.decoder_ids.is_some(),
                "--decoder-ids",
                "encoder-decoder models (T5, NorT5)",
            )?;
            let c = m.config();
            let dims = PromptDims {
                hidden: c.hidden_size,
                layers: c.num_hidden_layers,
                kv_heads: c.num_attention_heads,
                head_dim: c.hidden_size / c.num_attention_heads.max(1),
            };
            let p = PromptAdapter::load_with(dir, dims, device)?;
            p.apply_saved_modules(m.as_mut())?;
            Ok(Logits::PerSequence(
                p.forward_classifier(&m, &encoder_input(&a.ids, tt)?)?,
            ))
        }
        AnyModel::Seq2SeqLm(m) => {
            use tilpass::models::Seq2SeqModel;
            no_flag(tt.is_some(), "--token-type-ids", "BERT models")?;
            let p = PromptAdapter::load_seq2seq(dir, &m, device)?;
            let dec = a
                .decoder_ids
                .clone()
                .unwrap_or_else(|| vec![m.decoder_start_token_id()]);
            Ok(Logits::PerToken(p.forward_seq2seq(
                &m,
                &encoder_input(&a.ids, None)?,
                &[dec],
            )?))
        }
        other => Err(Error::invalid(format!(
            "{}: prompt-learning adapters (prefix / prompt / P-tuning) run on decoders, BERT \
             sequence classifiers and encoder-decoders (T5, NorT5); this model is a {} {:?}",
            dir.display(),
            other.model_type(),
            other.head()
        ))),
    }
}

/// Runs `tilpass logits`.
pub fn logits_cmd(a: LogitsArgs) -> Result<()> {
    let device = tilpass::device(&a.model.device)?;
    let kind = ModelKind::from_dir(&a.model.model)?;
    if kind.head == Head::Base {
        return Err(Error::invalid(format!(
            "{}: {} is a bare encoder without a head: it gives hidden states, not logits \
             (`tilpass embed` pools them); a directory whose config.json `architectures` names \
             a head (*ForMaskedLM, *ForSequenceClassification, *ForTokenClassification) has \
             logits",
            a.model.model.display(),
            kind.class_name()
        )));
    }
    let model = AnyModel::load_kind(&kind, &device)?;
    let logits = match &a.model.adapter {
        Some(dir) if is_prompt_adapter(dir)? => prompt_adapter_logits(model, dir, &a, &device)?,
        _ => with_adapter(model, &a.model)?.logits(
            &a.ids,
            a.token_type_ids.as_deref(),
            a.decoder_ids.as_deref(),
        )?,
    };
    let shape = logits.dims();
    let values = logits.into_vec()?;
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        let first = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::invalid(format!(
            "non-finite logits (NaN/inf) were produced: {bad} of {} values (the first, {}, at \
             flat index {first} of shape {shape:?}); the model's weights or config are broken",
            values.len(),
            values[first]
        )));
    }
    print(&json!({"shape": shape, "logits": values}));
    Ok(())
}
