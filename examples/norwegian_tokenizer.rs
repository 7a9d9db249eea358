//! Train a byte-level BPE tokenizer on Norwegian text, compare its fertility with a tokenizer
//! you already have, and encode a chat for fine-tuning with the built-in `norsk` template.
//!
//! Speed: like any program that adds tilpass as a dependency, this example runs under the
//! system allocator, which hands large freed tensor buffers back to the kernel; a program of
//! your own should install mimalloc with `purge_delay = -1`, as the `tilpass` binary does
//! (the `tilpass` crate docs' first paragraph: on the benchmark model the LoRA SFT step ran
//! 1.4–2.2x and a 512-token prefill 1.4–2.7x slower under the system allocator).
//!
//! ```text
//! cargo run --release --example norwegian_tokenizer -- CORPUS.txt [BASELINE_TOKENIZER_DIR]
//! # e.g. ../shared/data/ud-norwegian/nob-dev.txt artefacts/gpt2
//! ```

use std::path::PathBuf;

use tilpass::data::{Message, Record, Role};
use tilpass::tokenize::{
    SftConfig, SftEncoder, Tokenizer, TokenizerKind, TrainConfig, fertility, train_tokenizer,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let Some(corpus) = args.next().map(PathBuf::from) else {
        eprintln!("usage: norwegian_tokenizer CORPUS.txt [BASELINE_TOKENIZER_DIR]");
        std::process::exit(2);
    };
    let lines: Vec<String> = std::fs::read_to_string(&corpus)?
        .lines()
        .map(String::from)
        .collect();
    let cfg = TrainConfig {
        kind: TokenizerKind::Bpe,
        vocab_size: 8000,
        ..Default::default()
    };
    let mut tok = train_tokenizer(&[corpus], &cfg)?;
    tok.set_chat_template("default", tilpass::tokenize::chat_template::NORSK_TEMPLATE);
    let ours = fertility(&tok, &lines)?;
    println!(
        "trained BPE: vocab {}, {:.3} tokens/word",
        tok.vocab_size(),
        ours.fertility
    );
    if let Some(base) = args.next() {
        let base = Tokenizer::from_dir(base)?;
        let f = fertility(&base, &lines)?;
        println!(
            "baseline ({}): {:.3} tokens/word",
            base.source(),
            f.fertility
        );
    }

    let chat = Record::Conversation {
        messages: vec![
            Message::new(Role::User, "Kva heiter hovudstaden i Noreg?"),
            Message::new(Role::Assistant, "Hovudstaden i Noreg er Oslo."),
        ],
    };
    let enc = SftEncoder::new(&tok, SftConfig::default())?;
    let ex = enc.encode(0, &chat)?;
    let supervised: Vec<u32> = ex
        .input_ids
        .iter()
        .zip(&ex.labels)
        .filter(|(_, l)| **l >= 0)
        .map(|(i, _)| *i)
        .collect();
    println!("{} tokens, {} supervised", ex.len(), supervised.len());
    println!("the model learns: {:?}", tok.decode(&supervised, false)?);
    Ok(())
}
