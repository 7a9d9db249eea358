//! `tilpass generate`: decoders (with LoRA or prompt-learning adapters) and encoder-decoders,
//! text streamed to stdout as it is generated; the sampling flags `chat` shares.

use clap::Args;
use serde_json::json;
use tilpass::models::{
    DecoderLm, EncoderInput, GenerateConfig, Head, ModelKind, Seq2SeqConfig, Seq2SeqModel,
    StopReason, VirtualPrefix, generate, generate_seq2seq_stream, generate_seq2seq_text,
    generate_text_with_prefix, generate_with_prefix,
};
use tilpass::peft::{PromptAdapter, PromptMethod};
use tilpass::tokenize::{RenderOptions, Tokenizer};
use tilpass::{Error, Result};

use crate::common::{ModelArgs, load_decoder, load_seq2seq, model_tokenizer, print};

/// Decoding flags of `generate` and `chat`.
#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// New tokens at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy decoding.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens holding this much probability.
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Repetition penalty (e.g. 1.1).
    #[arg(long, allow_negative_numbers = true)]
    pub repetition_penalty: Option<f32>,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the output contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Chat template name or built-in (`chatml`, `norsk`).
    #[arg(long)]
    pub chat_template: Option<String>,
}

impl SamplingArgs {
    /// The generation settings, checked ([`GenerateConfig::validate`]; `--temperature` finite
    /// and >= 0, 0 being greedy decoding).
    pub fn config(&self) -> Result<GenerateConfig> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(format!(
                "invalid setting `--temperature` = {}: expected a finite number >= 0 (0: greedy)",
                self.temperature
            )));
        }
        let cfg = GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            do_sample: self.temperature > 0.0,
            temperature: if self.temperature > 0.0 {
                self.temperature
            } else {
                1.0
            },
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl SamplingArgs {
    /// The encoder-decoder settings: the same sampling flags, with beam search's.
    pub fn seq2seq_config(&self, num_beams: usize, length_penalty: f32) -> Result<Seq2SeqConfig> {
        let g = self.config()?;
        let cfg = Seq2SeqConfig {
            max_new_tokens: g.max_new_tokens,
            num_beams,
            length_penalty,
            do_sample: g.do_sample,
            temperature: g.temperature,
            top_k: g.top_k,
            top_p: g.top_p,
            repetition_penalty: g.repetition_penalty,
            seed: g.seed,
            ..Default::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The encoder input ids of a chat turn on an encoder-decoder: `history` rendered as seq2seq
/// SFT renders sources (the chat template named by `--chat-template` or the tokenizer's, else
/// the plain `role: content` layout), cut from the left to `max_source_length` tokens; and
/// whether anything was cut.
pub fn seq2seq_chat_source(
    model: &dyn Seq2SeqModel,
    tok: &Tokenizer,
    history: &[tilpass::data::Message],
    sampling: &SamplingArgs,
    max_source_length: usize,
) -> Result<(Vec<u32>, bool)> {
    let encoder = tilpass::tokenize::Seq2SeqEncoder::new(
        tok,
        tilpass::tokenize::Seq2SeqSftConfig {
            max_source_length: Some(max_source_length),
            max_target_length: None,
            chat_template: sampling.chat_template.clone(),
            eos_id: tok.eos_id().or(model.eos_token_ids().first().copied()),
        },
    )?;
    Ok(encoder.source(history)?)
}

/// Generates from an encoder-decoder: the encoder reads `prompt_ids`, the decoder answers.
/// With a tokenizer, decoded text is streamed to stdout as tokens arrive (when `stream`) and
/// generation stops at any stop string; without one, the new ids are streamed space-separated.
/// EOS is the model's or the tokenizer's (what seq2seq SFT ends targets with).
pub fn run_seq2seq_generation(
    model: &dyn Seq2SeqModel,
    tok: Option<&Tokenizer>,
    prompt_ids: &[u32],
    sampling: &SamplingArgs,
    beams: (usize, f32),
    stream: bool,
) -> Result<Generated> {
    use std::io::Write;
    let mut cfg = sampling.seq2seq_config(beams.0, beams.1)?;
    if prompt_ids.is_empty() {
        return Err(Error::invalid("the encoder input is empty: give a prompt"));
    }
    let mut eos = model.eos_token_ids();
    eos.extend(tok.and_then(Tokenizer::eos_id));
    cfg.eos_token_ids = Some(eos.clone());
    let input = EncoderInput::from_batch(&tilpass::tokenize::Batch::from_ids(
        &[prompt_ids.to_vec()],
        tilpass::tokenize::Padding::right(model.pad_token_id()),
    ))?;
    let Some(tok) = tok else {
        if !sampling.stop.is_empty() {
            return Err(Error::invalid(
                "--stop needs the model's tokenizer (stop strings match decoded text); this \
                 model directory has none",
            ));
        }
        let mut first = true;
        let ids = generate_seq2seq_stream(model, &input, &cfg, &mut |_, t| {
            if stream {
                print!("{}{t}", if first { "" } else { " " });
                let _ = std::io::stdout().flush();
                first = false;
            }
            true
        })?
        .remove(0);
        if stream {
            println!();
        }
        let stop_reason = if ids.last().is_some_and(|t| eos.contains(t)) {
            "eos"
        } else {
            "length"
        };
        return Ok(Generated {
            ids,
            text: None,
            stop_reason,
        });
    };
    if !sampling.stop.is_empty() && cfg.num_beams > 1 {
        return Err(Error::invalid(
            "--stop applies to greedy decoding and sampling, not to --num-beams > 1",
        ));
    }
    cfg.stop_strings = sampling.stop.clone();
    let decode = |ids: &[u32]| tok.decode(ids, true).map_err(|e| e.to_string());
    let row = generate_seq2seq_text(model, &input, &cfg, &decode, &mut |_, chunk| {
        if stream {
            print!("{chunk}");
            let _ = std::io::stdout().flush();
        }
    })?
    .remove(0);
    if stream {
        println!();
    }
    let stop_reason = match row.stop {
        StopReason::Eos => "eos",
        StopReason::StopString(_) => "stop",
        StopReason::MaxNewTokens => "length",
    };
    Ok(Generated {
        ids: row.ids,
        text: Some(row.text),
        stop_reason,
    })
}

/// What a generation returned: the new ids, their text (with a tokenizer) and why it stopped
/// (`eos`, `stop`, `length` or `context`: the context was full before `--max-new-tokens`).
pub struct Generated {
    /// The new token ids.
    pub ids: Vec<u32>,
    /// Their text, stop string removed (with a tokenizer).
    pub text: Option<String>,
    /// Why generation stopped.
    pub stop_reason: &'static str,
}

/// The flags of `generate`.
#[derive(Args)]
#[command(
    after_help = "Decoders (Llama, Mistral, GPT-2; *ForCausalLM) and encoder-decoders (T5, \
NorT5; *ForConditionalGeneration: greedy, sampling or --num-beams; with --chat the message is \
rendered as seq2seq SFT renders sources: the chat template, else `user: ...` / `assistant:` \
lines). Give exactly one of --prompt (text, \
encoded with the model's tokenizer) and --ids (token ids, for a model without a tokenizer). \
--json prints {\"ids\": new ids, \"prompt_ids\", \"text\", \"stop_reason\": eos, stop, length \
or context}, \"text\" only when the model has a tokenizer; without --json the text is streamed, or without a tokenizer the new ids are \
printed space-separated."
)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "ids"])))]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt text (needs the model's tokenizer).
    #[arg(long)]
    prompt: Option<String>,
    /// The prompt as token ids, comma-separated, used as given (no special tokens added).
    #[arg(long, value_delimiter = ',', conflicts_with = "chat")]
    ids: Option<Vec<u32>>,
    /// Treat the prompt as a user message and apply the chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print {"ids", "prompt_ids", "text", "stop_reason"} (no "text" without a tokenizer)
    /// instead of streaming.
    #[arg(long)]
    json: bool,
    /// Beam search with this many beams (encoder-decoder models).
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    /// Length penalty of beam search.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    length_penalty: f32,
    /// Encoder-decoders with --chat: the encoder input's longest length in tokens (the
    /// rendered message is cut from the left beyond it, as seq2seq SFT cuts sources).
    #[arg(long, default_value_t = 512)]
    max_source_length: usize,
    /// Decoders: store the linear weights in this dtype for generation (f32, bf16, f16).
    /// bf16 halves what each new token reads (about 2x faster decoding on the CPU); logits
    /// move by about 1e-2 (tests/all/half_decode.rs).
    #[arg(long, default_value = "f32", value_parser = parse_weight_dtype)]
    dtype: tilpass::models::WeightDtype,
}

fn parse_weight_dtype(s: &str) -> std::result::Result<tilpass::models::WeightDtype, String> {
    tilpass::models::WeightDtype::parse(s)
        .ok_or_else(|| format!("expected f32, bf16 or f16, got `{s}`"))
}

/// Generates from `prompt_ids` with a decoder. With a tokenizer, decoded text is streamed to
/// stdout as tokens arrive (when `stream`) and generation stops at any stop string; without
/// one, the new ids are streamed, space-separated. Returns the new ids and, with a tokenizer,
/// their text (stop string removed), and why it stopped.
pub fn run_generation(
    model: &DecoderLm,
    adapter: Option<&PromptAdapter>,
    tok: Option<&Tokenizer>,
    prompt_ids: Vec<u32>,
    sampling: &SamplingArgs,
    stream: bool,
) -> Result<Generated> {
    use std::io::Write;
    let mut cfg = sampling.config()?;
    let virtual_tokens = adapter.map(PromptAdapter::len).unwrap_or(0);
    let room = model
        .max_positions()
        .saturating_sub(prompt_ids.len() + virtual_tokens);
    if room == 0 {
        return Err(Error::invalid(format!(
            "the prompt has {} tokens, the model's context is {}",
            prompt_ids.len(),
            model.max_positions()
        )));
    }
    let lowered = cfg.max_new_tokens > room;
    if lowered {
        tracing::info!("max_new_tokens lowered to {room} to fit the context");
        cfg.max_new_tokens = room;
    }
    let length_reason = if lowered { "context" } else { "length" };
    if cfg.eos_token_ids.is_none() {
        let mut eos = model.eos_token_ids();
        eos.extend(tok.and_then(Tokenizer::eos_id));
        cfg.eos_token_ids = Some(eos);
    }
    let cache = |b: usize| adapter.map(|a| a.prefix_cache(b)).unwrap_or_default();
    let embeds = |b: usize| {
        adapter
            .map(|a| a.prompt_embeds(b))
            .expect("only called inside adapter.map below")
    };
    let prefix = adapter.map(|a| match a.method {
        PromptMethod::Prefix => VirtualPrefix::Cache {
            n: a.len(),
            make: &cache,
        },
        _ => VirtualPrefix::Embeds {
            n: a.len(),
            make: &embeds,
        },
    });
    let Some(tok) = tok else {
        if !sampling.stop.is_empty() {
            return Err(Error::invalid(
                "--stop needs the model's tokenizer (stop strings match decoded text); this \
                 model directory has none",
            ));
        }
        let mut first = true;
        let mut on_token = |_: usize, t: u32| {
            if stream {
                print!("{}{t}", if first { "" } else { " " });
                let _ = std::io::stdout().flush();
                first = false;
            }
            true
        };
        let prompts = [prompt_ids];
        let mut rows = match &prefix {
            Some(p) => generate_with_prefix(model, &prompts, &cfg, p, &mut on_token)?,
            None => generate(model, &prompts, &cfg, &mut on_token)?,
        };
        if stream {
            println!();
        }
        let ids = rows.remove(0);
        let eos = cfg.eos_token_ids.as_deref().unwrap_or_default();
        let stop_reason = if ids.last().is_some_and(|t| eos.contains(t)) {
            "eos"
        } else {
            length_reason
        };
        return Ok(Generated {
            ids,
            text: None,
            stop_reason,
        });
    };
    cfg.stop_strings = sampling.stop.clone();
    let decode = |ids: &[u32]| tok.decode(ids, true).map_err(|e| e.to_string());
    let mut rows = generate_text_with_prefix(
        model,
        &[prompt_ids],
        &cfg,
        prefix.as_ref(),
        &decode,
        &mut |_, chunk| {
            if stream {
                print!("{chunk}");
                let _ = std::io::stdout().flush();
            }
        },
    )?;
    if stream {
        println!();
    }
    let row = rows.remove(0);
    let stop_reason = match row.stop {
        StopReason::Eos => "eos",
        StopReason::StopString(_) => "stop",
        StopReason::MaxNewTokens => length_reason,
    };
    Ok(Generated {
        ids: row.ids,
        text: Some(row.text),
        stop_reason,
    })
}

/// Prints a generation: `{"ids", "prompt_ids", "text", "stop_reason"}` with --json ("text"
/// only with a tokenizer); else the text, or the ids space-separated without a tokenizer.
fn print_generation(
    json_out: bool,
    ids: &[u32],
    prompt_ids: &[u32],
    text: Option<String>,
    stop_reason: &str,
) {
    if json_out {
        let mut v = json!({"ids": ids, "prompt_ids": prompt_ids, "stop_reason": stop_reason});
        if let Some(t) = text {
            v["text"] = json!(t);
        }
        print(&v);
    } else if let Some(t) = text {
        println!("{t}");
    } else {
        let words: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", words.join(" "));
    }
}

fn generate_seq2seq_cmd(a: GenerateArgs) -> Result<()> {
    // Every setting is checked before the model is read.
    a.sampling.seq2seq_config(a.num_beams, a.length_penalty)?;
    let (base, prompt) = load_seq2seq(&a.model)?;
    let with_prompt;
    let model: &dyn Seq2SeqModel = match &prompt {
        Some(p) => {
            with_prompt = tilpass::train::PromptSeq2Seq {
                model: &base,
                prompt: p,
            };
            &with_prompt
        }
        None => &base,
    };
    let tok = model_tokenizer(&a.model.model, a.ids.is_none())?;
    let prompt_ids = match (&a.ids, &tok, &a.prompt) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(tok), Some(p)) if a.chat => {
            let msgs = [tilpass::data::Message::new(
                tilpass::data::Role::User,
                p.clone(),
            )];
            let (ids, cut) =
                seq2seq_chat_source(model, tok, &msgs, &a.sampling, a.max_source_length)?;
            if cut {
                eprintln!(
                    "warning: the prompt was cut from the left to --max-source-length {}",
                    a.max_source_length
                );
            }
            ids
        }
        (None, Some(tok), Some(p)) => tok.encode(p, true)?,
        _ => return Err(Error::invalid("give --prompt TEXT or --ids 1,2,3")),
    };
    let g = run_seq2seq_generation(
        model,
        tok.as_ref(),
        &prompt_ids,
        &a.sampling,
        (a.num_beams, a.length_penalty),
        !a.json,
    )?;
    if a.json {
        print_generation(true, &g.ids, &prompt_ids, g.text, g.stop_reason);
    }
    Ok(())
}

/// Runs `tilpass generate`.
pub fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let kind = ModelKind::from_dir(&a.model.model)?;
    match kind.head {
        Head::Seq2SeqLm if a.dtype != tilpass::models::WeightDtype::F32 => {
            return Err(Error::invalid(
                "--dtype is implemented for decoder-only models; encoder-decoders run in f32",
            ));
        }
        Head::Seq2SeqLm => return generate_seq2seq_cmd(a),
        Head::CausalLm => {}
        head => {
            return Err(Error::invalid(format!(
                "{}: `generate` needs a causal LM or an encoder-decoder; this is {} ({})",
                a.model.model.display(),
                kind.class_name(),
                head.describe()
            )));
        }
    }
    if a.num_beams != 1 {
        return Err(Error::invalid(
            "--num-beams is implemented for encoder-decoder models (T5) only",
        ));
    }
    let (mut model, adapter) = load_decoder(&a.model)?;
    model.set_weight_dtype(a.dtype);
    let tok = model_tokenizer(&a.model.model, a.ids.is_none())?;
    let prompt_ids = match (&a.ids, &tok, &a.prompt) {
        (Some(ids), _, _) => ids.clone(),
        (None, Some(tok), Some(p)) if a.chat => {
            let t = tok.chat_template(a.sampling.chat_template.as_deref())?;
            let msgs = [tilpass::data::Message::new(
                tilpass::data::Role::User,
                p.clone(),
            )];
            let opts = RenderOptions {
                add_generation_prompt: true,
                ..Default::default()
            };
            tok.encode(&t.render(&msgs, &opts)?.text, false)?
        }
        (None, Some(tok), Some(p)) => tok.encode(p, true)?,
        _ => return Err(Error::invalid("give --prompt TEXT or --ids 1,2,3")),
    };
    let g = run_generation(
        &model,
        adapter.as_ref(),
        tok.as_ref(),
        prompt_ids.clone(),
        &a.sampling,
        !a.json,
    )?;
    if a.json {
        print_generation(true, &g.ids, &prompt_ids, g.text, g.stop_reason);
    } else if g.stop_reason == "context" {
        eprintln!("warning: generation stopped at the end of the model's context");
    }
    Ok(())
}
