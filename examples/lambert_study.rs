//! The LamBERT study on the embedded Norwegian topic data, offline:
//!
//! ```text
//! cargo run --release --example lambert_study [-- [OUT_DIR] [--tiny] [--llm DIR] [--check]]
//! ```
//!
//! An LLM labels training items of `builtin:norsk-topic`, a BERT-type classifier is trained on
//! those labels with every adaptation method (lora, dora, prefix, p-tuning, prompt, full) and
//! several seeds, and each is scored on the 204 gold test items: `OUT_DIR/study/results.md`
//! (the table), `results.jsonl` and the plots `accuracy_vs_params` and `learning_curves` (SVG
//! and PNG). The BERT is `artefacts/minilm` when downloaded (not with `--tiny` or `--check`),
//! else a tiny random-init one; the LLM a tiny Llama taught the task briefly on other items
//! (or `--llm DIR`). `--check` (CI) runs tiny sizes and fails unless the table, the four plot
//! files and finite numbers are there.

use tilpass_examples::lambert_study::{LambertStudyConfig, run};

const USAGE: &str = "usage: lambert_study [OUT_DIR] [--tiny] [--llm DIR] [--check]";

fn main() {
    let mut out = None;
    let mut check = false;
    let mut tiny = false;
    let mut llm = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--check" => check = true,
            "--tiny" => tiny = true,
            "--llm" => match args.next() {
                Some(d) => llm = Some(d.into()),
                None => {
                    eprintln!("--llm needs a directory; {USAGE}");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return;
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown option {a}; {USAGE}");
                std::process::exit(2);
            }
            _ => out = Some(std::path::PathBuf::from(a)),
        }
    }
    let out = out.unwrap_or_else(|| LambertStudyConfig::default().out);
    let mut cfg = if check {
        LambertStudyConfig::check(out)
    } else {
        LambertStudyConfig {
            out,
            ..Default::default()
        }
    };
    cfg.tiny |= tiny;
    cfg.llm = llm;
    let started = std::time::Instant::now();
    let o = match run(&cfg, false) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lambert_study failed: {e}");
            std::process::exit(1);
        }
    };
    let dir = cfg.out.join("study");
    match std::fs::read_to_string(dir.join("results.md")) {
        Ok(t) => println!("{t}"),
        Err(e) => {
            eprintln!("lambert_study check failed: no results.md: {e}");
            std::process::exit(1);
        }
    }
    println!(
        "{} results in {:.0}s; files in {}",
        o.results.len(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    if check {
        let mut problems = Vec::new();
        for f in [
            "accuracy_vs_params.svg",
            "accuracy_vs_params.png",
            "learning_curves.svg",
            "learning_curves.png",
        ] {
            if !std::fs::metadata(dir.join(f)).is_ok_and(|m| m.len() > 0) {
                problems.push(format!("{f} missing or empty"));
            }
        }
        let table = std::fs::read_to_string(dir.join("results.md")).unwrap_or_default();
        for m in ["lora", "dora", "prefix", "p-tuning", "prompt", "full"] {
            if !table.contains(&format!("| {m} |")) {
                problems.push(format!("no table row for {m}"));
            }
        }
        if !o.complete || o.results.len() != 6 * cfg.seeds.len() {
            problems.push(format!(
                "{} results, expected {}",
                o.results.len(),
                6 * cfg.seeds.len()
            ));
        }
        for r in &o.results {
            let nums = [
                r.accuracy,
                r.macro_f1,
                r.train_seconds,
                r.predict_items_per_s,
                r.last_loss,
            ];
            if nums.iter().any(|x| !x.is_finite()) || r.trainable_parameters == 0 {
                problems.push(format!(
                    "{} seed {}: a number is not finite: {r:?}",
                    r.method, r.seed
                ));
            }
        }
        if !problems.is_empty() {
            eprintln!("lambert_study check failed: {}", problems.join("; "));
            std::process::exit(1);
        }
        println!("check passed");
    }
}
