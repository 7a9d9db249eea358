//! `tilpass chat`: a conversation with a decoder on stdin / stdout.

use clap::Args;
use tilpass::tokenize::{RenderOptions, Tokenizer};
use tilpass::{Error, Result};

use crate::common::{ModelArgs, load_decoder};
use crate::generate::{SamplingArgs, run_generation};

/// The flags of `chat`.
#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

/// Runs `tilpass chat`: a conversation on stdin / stdout.
pub fn chat_cmd(a: ChatArgs) -> Result<()> {
    use std::io::BufRead;
    use tilpass::data::{Message, Role};
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
