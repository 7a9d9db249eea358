//! ChatNorT5: an encoder-decoder Norwegian chat model from scratch, on this machine's CPU in a
//! few minutes:
//!
//! Speed: like any program that adds tilpass as a dependency, this example runs under the
//! system allocator, which hands large freed tensor buffers back to the kernel; a program of
//! your own should install mimalloc with `purge_delay = -1`, as the `tilpass` binary does
//! (the `tilpass` crate docs' first paragraph: on the benchmark model the LoRA SFT step ran
//! 1.4–2.2x and a 512-token prefill 1.4–2.7x slower under the system allocator).
//!
//! ```text
//! cargo run --release --example chat_nort5 [-- [OUT_DIR] [--base-steps N] [--chat-steps N] [--check]]
//! ```
//!
//! Trains a tokenizer with NorT5's special tokens, creates a tiny NorT5-architecture model,
//! pre-trains it briefly as a prefix LM on the embedded Norwegian conversations
//! (`data/norsk-chat.jsonl`), LoRA-fine-tunes it for chat (history to the encoder, answer from
//! the decoder), evaluates on the held-out conversations (loss, chrF and ROUGE-L against the
//! reference answers), and saves the base model and a PEFT adapter. The model is tiny and the
//! data small: expect Norwegian-looking answers, not correct ones. `--check` (for CI) fails
//! unless the held-out loss fell.

use tilpass_examples::chat_nort5::{ChatNorT5Config, run};

const USAGE: &str = "usage: chat_nort5 [OUT_DIR] [--base-steps N] [--chat-steps N] [--check]";

fn main() {
    let mut cfg = ChatNorT5Config::default();
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
            "--check" => check = true,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown option {a}; {USAGE}");
                std::process::exit(2);
            }
            _ => cfg.out = a.into(),
        }
    }
    match run(&cfg, false) {
        Ok(r) => {
            println!(
                "pre-training (prefix LM) loss {:.3} -> {:.3}; chat loss {:.3} -> {:.3}; \
                 held-out chat loss {:.3} -> {:.3}",
                r.base_loss.0,
                r.base_loss.1,
                r.chat_loss.0,
                r.chat_loss.1,
                r.eval_loss.0,
                r.eval_loss.1
            );
            println!(
                "held-out answers ({}): chrF2 {:.1}, ROUGE-L F1 {:.3}",
                r.answers.len(),
                r.chrf,
                r.rouge_l
            );
            for (q, a, want) in r.answers.iter().take(4) {
                println!("\n> {q}\n{a}\n(reference: {want})");
            }
            // NaN (no evaluation) counts as not fallen.
            let fell = r.eval_loss.1 < r.eval_loss.0;
            if check && !fell {
                eprintln!("chat_nort5 check failed: the held-out loss did not fall");
                std::process::exit(1);
            }
            println!(
                "\nbase model: {}\nadapter:    {}\ntook {:.0}s\ntry it:     cargo run --release -p tilpass-cli -- chat --model {} --adapter {}",
                r.base_dir.display(),
                r.adapter_dir.display(),
                r.seconds,
                r.base_dir.display(),
                r.adapter_dir.display()
            );
        }
        Err(e) => {
            eprintln!("chat_nort5 failed: {e}");
            std::process::exit(1);
        }
    }
}
