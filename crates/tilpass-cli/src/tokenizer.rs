//! `tilpass tokenize` and `tilpass tokenizer train|extend|fertility`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use tilpass::tokenize::{
    ExtendConfig, MaskMode, RenderOptions, TokenizerKind, TrainConfig, encode_chat,
    extend_vocabulary, fertility, train_tokenizer,
};
use tilpass::{Error, Result};

use crate::common::{print, print_json, read_lines};

/// The flags of `tokenize`.
#[derive(Args)]
pub struct TokenizeArgs {
    /// Tokenizer directory (tokenizer.json, tokenizer_config.json, ...).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Text to tokenize.
    #[arg(
        long,
        conflicts_with = "messages",
        required_unless_present = "messages"
    )]
    text: Option<String>,
    /// JSON file with a list of {"role", "content"} messages (or a row with "messages").
    #[arg(long)]
    messages: Option<PathBuf>,
    /// Append the assistant header so the model answers next.
    #[arg(long, requires = "messages")]
    add_generation_prompt: bool,
    /// Chat template: a name the tokenizer carries, or a built-in (`chatml`, `norsk`).
    #[arg(long)]
    chat_template: Option<String>,
    /// How assistant tokens are found: auto, generation_blocks or prefix.
    #[arg(long, default_value = "auto", value_parser = parse_mask_mode)]
    mask_mode: MaskMode,
    /// Do not add the tokenizer's special tokens (BOS, `[CLS]`/`[SEP]`) to --text.
    #[arg(long)]
    no_special_tokens: bool,
}

#[derive(Subcommand)]
/// `tilpass tokenizer` subcommands.
pub enum TokenizerCommand {
    /// Train a new tokenizer on text files (one document per line).
    Train {
        /// Training text files.
        #[arg(long, num_args = 1.., required = true)]
        files: Vec<PathBuf>,
        /// bpe (byte-level), unigram or wordpiece.
        #[arg(long, default_value = "bpe")]
        kind: TokenizerKind,
        /// Vocabulary size, special tokens included.
        #[arg(long, default_value_t = 32000)]
        vocab_size: usize,
        /// Minimum frequency of a merge (BPE, WordPiece).
        #[arg(long, default_value_t = 2)]
        min_frequency: u64,
        /// Chat template to store with the tokenizer (`chatml`, `norsk`).
        #[arg(long)]
        chat_template: Option<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add frequent, badly split words of a corpus to a tokenizer.
    Extend {
        /// Tokenizer directory.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Corpus file (one text per line).
        #[arg(long)]
        corpus: PathBuf,
        /// Add at most this many tokens.
        #[arg(long, default_value_t = 1000)]
        max_new_tokens: usize,
        /// Only words seen at least this often.
        #[arg(long, default_value_t = 5)]
        min_frequency: usize,
        /// Only words split into at least this many pieces.
        #[arg(long, default_value_t = 3)]
        min_pieces: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Tokens per word of a tokenizer on a corpus.
    Fertility {
        /// Tokenizer directory.
        #[arg(long)]
        tokenizer: PathBuf,
        /// Corpus file (one text per line).
        #[arg(long)]
        corpus: PathBuf,
    },
}

fn parse_mask_mode(s: &str) -> Result<MaskMode, String> {
    serde_json::from_value(json!(s))
        .map_err(|_| format!("unknown mask mode `{s}`; expected auto, generation_blocks or prefix"))
}

/// Runs `tilpass tokenize`.
pub fn tokenize_cmd(a: TokenizeArgs) -> Result<()> {
    let tok = tilpass::tokenize::Tokenizer::from_dir(&a.tokenizer)?;
    if let Some(text) = a.text {
        let ids = tok.encode(&text, !a.no_special_tokens)?;
        print(&json!({"ids": ids, "text": text, "assistant_mask": null}));
        return Ok(());
    }
    let path = a.messages.expect("clap requires --text or --messages");
    let value: serde_json::Value = {
        let text = tilpass::core::read_text(&path)?;
        serde_json::from_str(&text).map_err(|e| Error::json(&path, &e))?
    };
    let list = value.get("messages").cloned().unwrap_or(value);
    let messages = tilpass::data::parse_messages(&list)
        .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.within("messages"))))?;
    let template = tok.chat_template(a.chat_template.as_deref())?;
    let opts = RenderOptions {
        add_generation_prompt: a.add_generation_prompt,
        ..Default::default()
    };
    let enc = encode_chat(&tok, &template, &messages, &opts, a.mask_mode)?;
    print(&json!({"ids": enc.ids, "text": enc.text, "assistant_mask": enc.assistant_mask}));
    Ok(())
}

/// Runs `tilpass tokenizer ...`.
pub fn tokenizer_cmd(cmd: TokenizerCommand) -> Result<()> {
    match cmd {
        TokenizerCommand::Train {
            files,
            kind,
            vocab_size,
            min_frequency,
            chat_template,
            out,
        } => {
            let cfg = TrainConfig {
                kind,
                vocab_size,
                min_frequency,
                show_progress: true,
                ..Default::default()
            };
            let mut tok = train_tokenizer(&files, &cfg)?;
            if let Some(name) = chat_template {
                let src = tilpass::tokenize::chat_template::builtin(&name).ok_or_else(|| {
                    Error::invalid(format!(
                        "unknown built-in chat template `{name}`; expected chatml or norsk"
                    ))
                })?;
                tok.set_chat_template("default", src);
            }
            tok.save(&out)?;
            print(&json!({"out": out, "vocab_size": tok.vocab_size(), "kind": kind}));
        }
        TokenizerCommand::Extend {
            tokenizer,
            corpus,
            max_new_tokens,
            min_frequency,
            min_pieces,
            out,
        } => {
            tilpass::core::check_output_is_not_input("out", &out, &[&tokenizer])?;
            let mut tok = tilpass::tokenize::Tokenizer::from_dir(&tokenizer)?;
            let lines = read_lines(&corpus)?;
            let cfg = ExtendConfig {
                max_new_tokens,
                min_frequency,
                min_pieces,
                ..Default::default()
            };
            let report = extend_vocabulary(&mut tok, &lines, &cfg)?;
            tok.save(&out)?;
            eprintln!(
                "added {} tokens; fertility {:.3} -> {:.3} tokens/word",
                report.added.len(),
                report.before.fertility,
                report.after.fertility
            );
            print_json(&report)?;
        }
        TokenizerCommand::Fertility { tokenizer, corpus } => {
            let tok = tilpass::tokenize::Tokenizer::from_dir(&tokenizer)?;
            let lines = read_lines(&corpus)?;
            print_json(&fertility(&tok, &lines)?)?;
        }
    }
    Ok(())
}
