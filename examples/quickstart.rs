//! The main job of tilpass in one command, on this machine's CPU in a few minutes:
//!
//! Speed: like any program that adds tilpass as a dependency, this example runs under the
//! system allocator, which hands large freed tensor buffers back to the kernel; a program of
//! your own should install mimalloc with `purge_delay = -1`, as the `tilpass` binary does
//! (the `tilpass` crate docs' first paragraph: on the benchmark model the LoRA SFT step ran
//! 1.4–2.2x and a 512-token prefill 1.4–2.7x slower under the system allocator).
//!
//! ```text
//! cargo run --release --example quickstart [-- [OUT_DIR] [--base-steps N] [--chat-steps N] [--dpo-steps N] [--check]]
//! ```
//!
//! Trains a tokenizer and a tiny Llama-style model on the embedded Norwegian chat dataset
//! (`data/norsk-chat.jsonl`), LoRA-fine-tunes it for chat, evaluates on held-out
//! conversations, saves the base model and a PEFT adapter, and answers a few held-out
//! questions; then trains a DPO adapter on the embedded Norwegian preference pairs
//! (`data/norsk-pref.jsonl`) and reports the held-out reward accuracy and margin before and
//! after. The model is tiny and the data small: expect Norwegian-looking answers in the
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
            "--dpo-steps" => cfg.dpo_steps = steps("--dpo-steps"),
            // For CI: fail unless every loss fell and DPO raised the held-out reward accuracy.
            "--check" => check = true,
            "-h" | "--help" => {
                eprintln!(
                    "usage: quickstart [OUT_DIR] [--base-steps N] [--chat-steps N] [--dpo-steps N] [--check]"
                );
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!(
                    "unknown option {a}; usage: quickstart [OUT_DIR] [--base-steps N] [--chat-steps N] [--dpo-steps N] [--check]"
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
            if let Some(d) = &r.dpo {
                println!(
                    "DPO on norsk-pref ({:.0}s): held-out reward accuracy {:.3} -> {:.3}, reward margin {:.4} -> {:.4}, eval loss {:.4} -> {:.4}",
                    d.seconds,
                    d.accuracy.0,
                    d.accuracy.1,
                    d.margin.0,
                    d.margin.1,
                    d.loss.0,
                    d.loss.1
                );
            }
            let fell = r.base_loss.1 < r.base_loss.0
                && r.chat_loss.1 < r.chat_loss.0
                && r.eval_loss.1 < r.eval_loss.0;
            if check && !fell {
                eprintln!("quickstart check failed: a loss did not fall");
                std::process::exit(1);
            }
            if check && r.dpo.as_ref().is_some_and(|d| d.accuracy.1 <= d.accuracy.0) {
                eprintln!(
                    "quickstart check failed: DPO did not raise the held-out reward accuracy"
                );
                std::process::exit(1);
            }
            println!(
                "\nbase model: {}\nadapter:    {}\ntry it:     cargo run --release -p tilpass-cli -- chat --model {} --adapter {}",
                r.base_dir.display(),
                r.adapter_dir.display(),
                r.base_dir.display(),
                r.adapter_dir.display()
            );
            if let Some(d) = &r.dpo {
                println!(
                    "chat model: {}\nDPO adapter: {}\ntry it:     cargo run --release -p tilpass-cli -- chat --model {} --adapter {}",
                    d.model_dir.display(),
                    d.adapter_dir.display(),
                    d.model_dir.display(),
                    d.adapter_dir.display()
                );
            }
        }
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            std::process::exit(1);
        }
    }
}
