//! Retrieval-augmented generation on the embedded Norwegian corpus:
//!
//! ```text
//! cargo run --release --example rag [-- [OUT_DIR] [--model DIR [--adapter DIR]] [--k N] [--max-new-tokens N] [--check]]
//! ```
//!
//! Builds a knowledge base (`OUT_DIR/kb`, default `rag-out/kb`) from the embedded corpus of
//! short passages on Norwegian public life, asks it four questions (two in Bokmål, two in
//! Nynorsk) and shows, for each, the retrieved passages and the prompt the model gets. With a
//! decoder (`--model`, by default the quickstart's `quickstart-out/chat-model` when it exists)
//! it also generates the answers and maps their `[n]` citations to document ids and character
//! spans. The quickstart's model is tiny: expect the right passages and the right prompt, not
//! a correct answer. `--check` fails unless every question retrieves its answering document
//! first.

use std::path::PathBuf;

use tilpass_examples::rag::{RagExampleConfig, run};

const USAGE: &str =
    "usage: rag [OUT_DIR] [--model DIR [--adapter DIR]] [--k N] [--max-new-tokens N] [--check]";

fn main() {
    let mut cfg = RagExampleConfig::default();
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| -> String {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value; {USAGE}");
                std::process::exit(2);
            })
        };
        let mut number = |name: &str| -> usize {
            match value(name).parse() {
                Ok(n) if n > 0 => n,
                _ => {
                    eprintln!("{name} needs an integer >= 1; {USAGE}");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--model" => cfg.model = Some(PathBuf::from(value("--model"))),
            "--adapter" => cfg.adapter = Some(PathBuf::from(value("--adapter"))),
            "--k" => cfg.k = number("--k"),
            "--max-new-tokens" => cfg.max_new_tokens = number("--max-new-tokens"),
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
    if cfg.adapter.is_some() && cfg.model.is_none() {
        eprintln!("--adapter needs --model; {USAGE}");
        std::process::exit(2);
    }
    if cfg.model.is_none() {
        let quickstart = PathBuf::from("quickstart-out/chat-model");
        if quickstart.join("config.json").is_file() {
            eprintln!("using the quickstart's chat model {}", quickstart.display());
            cfg.model = Some(quickstart);
        } else {
            eprintln!(
                "no model: showing retrieval and prompts only (give --model DIR, or run \
                 `cargo run --release --example quickstart` first for a tiny Norwegian chat model)"
            );
        }
    }
    let mut streaming = false;
    let result = run(&cfg, &mut |chunk| {
        if !streaming {
            print!("\nsvar: ");
            streaming = true;
        }
        print!("{chunk}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    });
    let asked = match result {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rag failed: {e}");
            std::process::exit(1);
        }
    };
    println!("\nknowledge base: {}", cfg.out.join("kb").display());
    let mut failed = 0;
    for a in &asked {
        println!("\n> {}", a.question);
        for p in &a.passages {
            println!(
                "  [{}] {} ({}, characters {}..{}, score {:.2})",
                p.n,
                p.title.as_deref().unwrap_or(""),
                p.id,
                p.start,
                p.end,
                p.score
            );
        }
        println!("--- prompt ---\n{}\n--------------", a.prompt);
        if let Some(ans) = &a.answer {
            println!("answer: {}", ans.text);
            for c in &ans.citations {
                println!(
                    "  cites [{}] {} ({}, characters {}..{})",
                    c.n,
                    c.title.as_deref().unwrap_or(""),
                    c.id,
                    c.start,
                    c.end
                );
            }
            for c in &ans.invalid_citations {
                println!(
                    "  invalid citation [{}] (the prompt held {} passages)",
                    c.n, c.passages
                );
            }
            println!(
                "  cites the answering document {}: {}",
                a.expected,
                if a.cited() { "yes" } else { "no" }
            );
        }
        let ok = a.retrieved_first();
        println!(
            "retrieved the answering document {} first: {}",
            a.expected,
            if ok { "yes" } else { "no" }
        );
        failed += usize::from(!ok);
    }
    if check && failed > 0 {
        eprintln!("rag check failed: {failed} question(s) did not retrieve their document first");
        std::process::exit(1);
    }
}
