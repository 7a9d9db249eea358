//! The main job of tilpass in one command, on this machine's CPU in a few minutes:
//!
//! ```text
//! cargo run --release --example quickstart [-- [OUT_DIR] [--base-steps N] [--chat-steps N] [--check]]
//! ```
//!
//! Trains a tokenizer and a tiny Llama-style model on the embedded Norwegian chat dataset
//! (`data/norsk-chat.jsonl`), LoRA-fine-tunes it for chat, evaluates on held-out
//! conversations, saves the base model and a PEFT adapter, and answers a few held-out
//! questions. The model is tiny and the data small: expect Norwegian-looking answers in the
//! right format, not correct ones. The same flow on a real model is in the README.

use tilpass_examples::quickstart::{QuickstartConfig, run};

fn main() {
    let mut cfg = QuickstartConfig::default();
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut steps = |name: &str| -> usize {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("{name} needs a number of steps");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--base-steps" => cfg.base_steps = steps("--base-steps"),
            "--chat-steps" => cfg.chat_steps = steps("--chat-steps"),
            // For CI: fail unless every loss fell.
            "--check" => check = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: quickstart [OUT_DIR] [--base-steps N] [--chat-steps N] [--check]"
                );
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!(
                    "unknown option {a}; usage: quickstart [OUT_DIR] [--base-steps N] [--chat-steps N] [--check]"
                );
                std::process::exit(2);
            }
            _ => cfg.out = a.into(),
        }
    }
    match run(&cfg, false) {
        Ok(r) => {
            println!(
                "pre-training loss {:.3} -> {:.3}; chat loss {:.3} -> {:.3}; held-out chat loss {:.3} -> {:.3}",
                r.base_loss.0,
                r.base_loss.1,
                r.chat_loss.0,
                r.chat_loss.1,
                r.eval_loss.0,
                r.eval_loss.1
            );
            for (q, a) in &r.answers {
                println!("\n> {q}\n{a}");
            }
            let fell = r.base_loss.1 < r.base_loss.0
                && r.chat_loss.1 < r.chat_loss.0
                && r.eval_loss.1 < r.eval_loss.0;
            if check && !fell {
                eprintln!("quickstart check failed: a loss did not fall");
                std::process::exit(1);
            }
            println!(
                "\nbase model: {}\nadapter:    {}\ntry it:     cargo run --release -p tilpass-cli -- chat --model {} --adapter {}",
                r.base_dir.display(),
                r.adapter_dir.display(),
                r.base_dir.display(),
                r.adapter_dir.display()
            );
        }
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            std::process::exit(1);
        }
    }
}
