//! `tilpass chat`: a conversation with a decoder or an encoder-decoder on stdin / stdout.

use clap::Args;
use tilpass::tokenize::{RenderOptions, Tokenizer};
use tilpass::{Error, Result};

use crate::common::{ModelArgs, load_decoder, load_seq2seq};
use crate::generate::{SamplingArgs, run_generation, run_seq2seq_generation, seq2seq_chat_source};

/// The flags of `chat`.
#[derive(Args)]
#[command(
    after_help = "Decoders (*ForCausalLM): the conversation is rendered with the chat \
template and the answer continues it. Encoder-decoders (T5, mT5, NorT5): the conversation goes \
to the encoder rendered as seq2seq SFT renders sources (the chat template, else `user: ...` / \
`assistant: ...` lines ending in `assistant:`), its oldest turns dropped beyond \
--max-source-length tokens, and the decoder writes the answer, streamed. --adapter takes a LoRA \
adapter for either (and prompt-learning adapters for decoders)."
)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Encoder-decoders: the encoder input's longest length in tokens (the oldest turns go
    /// first beyond it, as seq2seq SFT cuts sources).
    #[arg(long, default_value_t = 512)]
    max_source_length: usize,
}

/// A chat with an encoder-decoder: the history to the encoder, the answer from the decoder.
fn chat_seq2seq(a: ChatArgs) -> Result<()> {
    use std::io::BufRead;
    use tilpass::data::{Message, Role};
    use tilpass::models::Seq2SeqModel;
    use tilpass::train::PromptSeq2Seq;
    if a.max_source_length == 0 {
        return Err(Error::invalid(
            "invalid setting `--max-source-length` = 0: expected an integer >= 1",
        ));
    }
    // Every setting is checked before the model is read.
    a.sampling.seq2seq_config(1, 1.0)?;
    let (base, prompt) = load_seq2seq(&a.model)?;
    let with_prompt;
    let model: &dyn Seq2SeqModel = match &prompt {
        Some(p) => {
            with_prompt = PromptSeq2Seq {
                model: &base,
                prompt: p,
            };
            &with_prompt
        }
        None => &base,
    };
    let tok = Tokenizer::from_dir(&a.model.model)?;
    // A named template must exist before the first line is read.
    seq2seq_chat_source(
        model,
        &tok,
        &[Message::new(Role::User, "")],
        &a.sampling,
        a.max_source_length,
    )?;
    let mut messages: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::new(Role::System, s.clone()))
        .collect();
    eprintln!("tilpass chat: type a message and press Enter; an empty line or Ctrl-D ends.");
    let stdin = std::io::stdin();
    let mut warned = false;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::io("<stdin>", e))?;
        if line.trim().is_empty() {
            break;
        }
        messages.push(Message::new(Role::User, line));
        let (source, cut) =
            seq2seq_chat_source(model, &tok, &messages, &a.sampling, a.max_source_length)?;
        if cut && !warned {
            eprintln!(
                "chat: the conversation outgrew --max-source-length {}; the oldest turns are \
                 left out of the encoder input",
                a.max_source_length
            );
            warned = true;
        }
        let g = run_seq2seq_generation(model, Some(&tok), &source, &a.sampling, (1, 1.0), true)?;
        let text = g.text.unwrap_or_default();
        messages.push(Message::new(Role::Assistant, text.trim().to_string()));
    }
    Ok(())
}

/// Runs `tilpass chat`: a conversation on stdin / stdout.
pub fn chat_cmd(a: ChatArgs) -> Result<()> {
    use std::io::BufRead;
    use tilpass::data::{Message, Role};
    use tilpass::models::{Head, ModelKind};
    if ModelKind::from_dir(&a.model.model)?.head == Head::Seq2SeqLm {
        return chat_seq2seq(a);
    }
    let (model, adapter) = load_decoder(&a.model)?;
    let tok = Tokenizer::from_dir(&a.model.model)?;
    let template = tok.chat_template(a.sampling.chat_template.as_deref())?;
    let mut messages: Vec<Message> = a
        .system
        .iter()
        .map(|s| Message::new(Role::System, s.clone()))
        .collect();
    eprintln!("tilpass chat: type a message and press Enter; an empty line or Ctrl-D ends.");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::io("<stdin>", e))?;
        if line.trim().is_empty() {
            break;
        }
        messages.push(Message::new(Role::User, line));
        let opts = RenderOptions {
            add_generation_prompt: true,
            ..Default::default()
        };
        // The history must leave room for an answer: the oldest turns go first (the system
        // message stays), and the user is told.
        let context = model.max_positions();
        let virtual_tokens = adapter.as_ref().map(|p| p.len()).unwrap_or(0);
        let need = a.sampling.max_new_tokens.clamp(1, (context / 2).max(1));
        let first_turn = usize::from(a.system.is_some());
        let prompt = loop {
            let prompt = tok.encode(&template.render(&messages, &opts)?.text, false)?;
            if prompt.len() + virtual_tokens + need <= context || messages.len() <= first_turn + 1 {
                break prompt;
            }
            // Drop the oldest turn (a user message and the answer to it).
            let n = if messages.len() > first_turn + 2 {
                2
            } else {
                1
            };
            messages.drain(first_turn..first_turn + n);
            eprintln!(
                "chat: the conversation outgrew the model's context ({context} tokens); the \
                 oldest turn was dropped"
            );
        };
        let g = run_generation(
            &model,
            adapter.as_ref(),
            Some(&tok),
            prompt,
            &a.sampling,
            true,
        )?;
        let text = g.text.unwrap_or_default();
        messages.push(Message::new(Role::Assistant, text.trim().to_string()));
    }
    Ok(())
}
