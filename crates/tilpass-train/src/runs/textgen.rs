//! Text in, text out with a local model, for the data-generation jobs: a decoder (the prompt
//! sent as it is, or as a user turn of the tokenizer's chat template) or an encoder-decoder
//! (T5, NorT5: the prompt is the encoder input), batched.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tilpass_models::{
    DecoderLm, EncoderInput, GenerateConfig, Head, ModelKind, Seq2SeqConfig, Seq2SeqLm,
    Seq2SeqModel, generate_seq2seq_text, generate_text,
};
use tilpass_peft::{PeftModel, is_prompt_adapter, load_causal_lm};
use tilpass_tokenize::{Batch, Padding, RenderOptions, Tokenizer};

use crate::error::{Result, TrainError};

/// How a decoder receives a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// As a user turn of the chat template when the tokenizer has one, else plain.
    #[default]
    Auto,
    /// As a user turn of the tokenizer's chat template (an error without one).
    Chat,
    /// The prompt text itself, tokenized with the tokenizer's special tokens (BOS).
    Plain,
}

/// Sampling settings shared by the jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct TextGenOptions {
    /// New tokens at most per text.
    pub max_new_tokens: usize,
    /// Sample instead of greedy decoding.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Sampler seed (the same seed and batch give the same texts).
    pub seed: u64,
    /// Stop a text at any of these (cut before it).
    pub stop: Vec<String>,
    /// Send the prompt text as it is, even to a decoder with a chat template (few-shot
    /// completion prompts).
    pub raw: bool,
}

enum Model {
    Decoder(DecoderLm),
    Seq2Seq(Seq2SeqLm),
}

/// A loaded model with its tokenizer.
pub struct TextModel {
    model: Model,
    tok: Tokenizer,
    chat: Option<tilpass_tokenize::ChatTemplate>,
}

impl TextModel {
    /// Loads the causal LM or encoder-decoder in `dir` (with its tokenizer) and a LoRA / DoRA
    /// `adapter`; `format` says how a decoder gets its prompts. Prompt-learning adapters are
    /// refused.
    pub fn load(
        dir: &Path,
        adapter: Option<&Path>,
        format: PromptFormat,
        device: &Device,
    ) -> Result<Self> {
        if let Some(a) = adapter
            && is_prompt_adapter(a)?
        {
            return Err(TrainError::Config(format!(
                "{}: a prompt-learning adapter (prefix / prompt / P-tuning); data generation \
                 takes LoRA / DoRA adapters",
                a.display()
            )));
        }
        let tok = Tokenizer::from_dir(dir)?;
        let kind = ModelKind::from_dir(dir)?;
        let (model, chat) = match kind.head {
            Head::Seq2SeqLm => {
                let mut m = Seq2SeqLm::load(dir, device)?;
                if let Some(a) = adapter {
                    let mut peft = PeftModel::new(m);
                    peft.load_adapter(a, "default")?;
                    m = peft.into_model();
                }
                (Model::Seq2Seq(m), None)
            }
            _ => {
                let (m, _) = load_causal_lm(dir, adapter, device)?;
                let chat = match format {
                    PromptFormat::Plain => None,
                    PromptFormat::Auto => tok.chat_template(None).ok(),
                    PromptFormat::Chat => Some(tok.chat_template(None)?),
                };
                (Model::Decoder(m), chat)
            }
        };
        Ok(Self { model, tok, chat })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// True when a decoder's prompts go through its chat template (unless `raw`).
    pub fn uses_chat_template(&self) -> bool {
        matches!(self.model, Model::Decoder(_)) && self.chat.is_some()
    }

    /// Token ids of a prompt as the model receives it.
    fn encode(&self, prompt: &str, raw: bool) -> Result<Vec<u32>> {
        match (&self.model, &self.chat) {
            (Model::Decoder(_), Some(t)) if !raw => {
                let msgs = [tilpass_data::Message::new(
                    tilpass_data::Role::User,
                    prompt.to_string(),
                )];
                let opts = RenderOptions {
                    add_generation_prompt: true,
                    ..Default::default()
                };
                Ok(self.tok.encode(&t.render(&msgs, &opts)?.text, false)?)
            }
            _ => Ok(self.tok.encode(prompt, true)?),
        }
    }

    /// The model's text after each prompt (white space trimmed), generated together. On a
    /// decoder, new tokens are capped to fit the context after the batch's longest prompt, and
    /// a prompt that fills the context on its own gets an empty text.
    pub fn generate(&self, prompts: &[String], opts: &TextGenOptions) -> Result<Vec<String>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = prompts
            .iter()
            .map(|p| self.encode(p, opts.raw))
            .collect::<Result<Vec<_>>>()?;
        let decode = |ids: &[u32]| self.tok.decode(ids, true).map_err(|e| e.to_string());
        let rows = match &self.model {
            Model::Decoder(m) => {
                // Prompts that fill the context get no text; the others share the room left
                // by the longest of them.
                let ctx = m.max_positions();
                let fits: Vec<usize> = (0..ids.len()).filter(|&k| ids[k].len() < ctx).collect();
                let Some(longest) = fits.iter().map(|&k| ids[k].len()).max() else {
                    return Ok(vec![String::new(); prompts.len()]);
                };
                let mut eos = m.eos_token_ids();
                eos.extend(self.tok.eos_id());
                let cfg = GenerateConfig {
                    max_new_tokens: opts.max_new_tokens.min(ctx - longest),
                    eos_token_ids: Some(eos),
                    pad_token_id: self.tok.pad_id(),
                    do_sample: opts.do_sample,
                    temperature: opts.temperature,
                    top_p: opts.top_p,
                    seed: opts.seed,
                    stop_strings: opts.stop.clone(),
                    ..Default::default()
                };
                let kept: Vec<Vec<u32>> = fits.iter().map(|&k| ids[k].clone()).collect();
                let rows = generate_text(m, &kept, &cfg, &decode, &mut |_, _| {})?;
                let mut texts = vec![String::new(); prompts.len()];
                for (&k, g) in fits.iter().zip(rows) {
                    texts[k] = g.text.trim().to_string();
                }
                return Ok(texts);
            }
            Model::Seq2Seq(m) => {
                let mut eos = m.eos_token_ids();
                eos.extend(self.tok.eos_id());
                let cfg = Seq2SeqConfig {
                    max_new_tokens: opts.max_new_tokens,
                    eos_token_ids: Some(eos),
                    do_sample: opts.do_sample,
                    temperature: opts.temperature,
                    top_p: opts.top_p,
                    seed: opts.seed,
                    stop_strings: opts.stop.clone(),
                    ..Default::default()
                };
                let input = EncoderInput::from_batch(&Batch::from_ids(
                    &ids,
                    Padding::right(m.pad_token_id()),
                ))?;
                generate_seq2seq_text(m, &input, &cfg, &decode, &mut |_, _| {})?
            }
        };
        Ok(rows
            .into_iter()
            .map(|g| g.text.trim().to_string())
            .collect())
    }
}
