//! Online RL for the written standard: asked in Nynorsk, the model should answer in Nynorsk.
//!
//! Speed: like any program that adds tilpass as a dependency, this example runs under the
//! system allocator, which hands large freed tensor buffers back to the kernel; a program of
//! your own should install mimalloc with `purge_delay = -1`, as the `tilpass` binary does
//! (the `tilpass` crate docs' first paragraph: on the benchmark model the LoRA SFT step ran
//! 1.4–2.2x and a 512-token prefill 1.4–2.7x slower under the system allocator).
//!
//! ```text
//! cargo run --release --example nynorsk_rl [-- [MODEL_DIR] [--out DIR] [--steps N] [--num-generations G] [--lr LR] [--seed S] [--check]]
//! ```
//!
//! GRPO (TRL's `GRPOTrainer`, here [`tilpass::preference::GrpoRun`] — the library call of
//! `tilpass train grpo`) on the quickstart's chat model (default
//! `quickstart-out/chat-model`; make it with `cargo run --release --example quickstart`) with
//! the written-form reward `lang=nn` (the built-in language identifier's probability that the
//! answer is Nynorsk) plus a small length window, on Nynorsk questions from the embedded data
//! (`norsk-chat` and the RAG queries; held-out ones kept apart). Prints the Nynorsk share of
//! the greedy answers to the held-out questions before and after. `--check` exits 1 unless the
//! share rises. `--seed` (default 0) seeds the adapter, the prompt order and the sampler.
//!
//! How robust the check is, measured with the default settings on two quickstart models (one
//! from the current code, one from commit 1f0ad1d, whose exponentials differ in the last ulp),
//! seeds 0-3: the share rose in all 8 runs, from 77.1% to 93.8-96.9% and from 67.7% to
//! 90.6-100% (about 50 s each in the dev profile).

use std::path::PathBuf;

use tilpass::train::Progress;
use tilpass_examples::nynorsk_rl::{NynorskRlConfig, has_model, run};

const USAGE: &str = "usage: nynorsk_rl [MODEL_DIR] [--out DIR] [--steps N] [--num-generations G] \
                     [--lr LR] [--seed S] [--check]";

fn main() {
    let mut cfg = NynorskRlConfig::default();
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value; {USAGE}");
                std::process::exit(2);
            })
        };
        let number = |name: &str, v: String| -> usize {
            match v.parse() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("{name} needs an integer >= 1; {USAGE}");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--out" => cfg.out = PathBuf::from(value("--out")),
            "--steps" => cfg.steps = number("--steps", value("--steps")),
            "--num-generations" => {
                cfg.num_generations = number("--num-generations", value("--num-generations"))
            }
            "--lr" => {
                cfg.lr = match value("--lr").parse::<f64>() {
                    Ok(x) if x.is_finite() && x > 0.0 => x,
                    _ => {
                        eprintln!("--lr needs a number > 0; {USAGE}");
                        std::process::exit(2);
                    }
                }
            }
            "--seed" => {
                cfg.seed = match value("--seed").parse::<u64>() {
                    Ok(s) => s,
                    Err(_) => {
                        eprintln!("--seed needs a non-negative integer; {USAGE}");
                        std::process::exit(2);
                    }
                }
            }
            "--check" => check = true,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown option {a}; {USAGE}");
                std::process::exit(2);
            }
            _ => cfg.model = PathBuf::from(a),
        }
    }
    if !has_model(&cfg.model) {
        eprintln!(
            "no chat model at {}: run `cargo run --release --example quickstart` first (it \
             writes quickstart-out/chat-model), or give the directory of a chat model",
            cfg.model.display()
        );
        std::process::exit(2);
    }
    eprintln!(
        "GRPO on {}: {} steps, G = {}, {} prompts a step, lr {}",
        cfg.model.display(),
        cfg.steps,
        cfg.num_generations,
        cfg.prompts_per_step,
        cfg.lr
    );
    let mut bar = Progress::new("grpo", cfg.steps);
    let report = match run(&cfg, &mut |e| bar.on_event(&e)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nynorsk_rl failed: {e}");
            std::process::exit(1);
        }
    };
    bar.finish(&report.summary);
    for (q, before, after) in &report.examples {
        println!("\n> {q}\n  before: {before}\n  after:  {after}");
    }
    let (b, a) = (&report.before, &report.after);
    println!(
        "\n{} training prompts, {} held-out; GRPO took {:.0} s; adapter: {}",
        report.prompts.0,
        report.prompts.1,
        report.train_seconds,
        report.adapter.display()
    );
    println!(
        "Nynorsk share of held-out answers: {}/{} ({:.1}%) before, {}/{} ({:.1}%) after \
         (mean P(nn) {:.3} -> {:.3})",
        b.nynorsk,
        b.total,
        100.0 * b.fraction(),
        a.nynorsk,
        a.total,
        100.0 * a.fraction(),
        b.mean_nn_probability,
        a.mean_nn_probability
    );
    if check && a.fraction() <= b.fraction() {
        eprintln!("check failed: the Nynorsk share did not rise");
        std::process::exit(1);
    }
}
