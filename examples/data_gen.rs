//! Building Norwegian chat data with a local model: translation and self-instruct, each killed
//! half-way and resumed.
//!
//! Speed: like any program that adds tilpass as a dependency, this example runs under the
//! system allocator, which hands large freed tensor buffers back to the kernel; a program of
//! your own should install mimalloc with `purge_delay = -1`, as the `tilpass` binary does
//! (the `tilpass` crate docs' first paragraph: on the benchmark model the LoRA SFT step ran
//! 1.4–2.2x and a 512-token prefill 1.4–2.7x slower under the system allocator).
//!
//! ```text
//! cargo run --release --example data_gen [-- [MODEL_DIR] [--out DIR] [--check]]
//! ```
//!
//! On the quickstart's chat model (default `quickstart-out/chat-model`; make it with
//! `cargo run --release --example quickstart`):
//!
//! 1. [`TranslateRun`] (the library call of `tilpass data translate`) translates a small
//!    English chat set — messages, Alpaca rows, code blocks, inline code, `{name}` and
//!    `[EPOST]` placeholders — into Bokmål, with round-trip chrF, and prints the quality flags.
//! 2. [`SelfInstructRun`] (`tilpass data self-instruct`) asks for new Bokmål tasks from the
//!    Bokmål user turns of the embedded `norsk-chat` set, and prints the rejects by reason.
//!
//! Each job runs once uninterrupted; then its output is cut in the middle of a line (as a kill
//! leaves it) and the job is run again on it: `--check` exits 1 unless the resumed output
//! equals the uninterrupted one byte for byte. The model is tiny: expect Norwegian-looking
//! text that is no translation, and few accepted tasks; the bookkeeping is the point.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;
use tilpass::train::runs::append::{sidecar_path, with_suffix};
use tilpass::train::runs::{SelfInstructRun, TranslateRun};

const USAGE: &str = "usage: data_gen [MODEL_DIR] [--out DIR] [--check]";

fn english_rows() -> Vec<serde_json::Value> {
    vec![
        json!({"id": 0, "messages": [
            {"role": "user", "content": "What is the capital of Norway?"},
            {"role": "assistant", "content": "The capital of Norway is Oslo."}]}),
        json!({"id": 1, "instruction": "Write a short greeting to {name}.", "input": "",
               "output": "Hello {name}, welcome to the team!"}),
        json!({"id": 2, "prompt": "How do I list every file in a folder? I tried `ls`.",
               "completion": "Add the flag:\n```bash\nls -la\n```\nIt also shows hidden files."}),
        json!({"id": 3, "text": "Send your questions to [EPOST] before Friday."}),
        json!({"id": 4, "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Why is the sky blue?"},
            {"role": "assistant", "content": "Sunlight scatters in the air, and blue light scatters the most."}]}),
        json!({"id": 5, "messages": [
            {"role": "user", "content": "Give me a word that rhymes with cat."},
            {"role": "assistant", "content": "Hat."}]}),
    ]
}

/// Cuts `out` in the middle of line `line` (0-based), as a kill while writing it leaves it.
fn tear(out: &Path, line: usize) -> std::io::Result<()> {
    let text = std::fs::read_to_string(out)?;
    let start: usize = text.split_inclusive('\n').take(line).map(str::len).sum();
    let len = text.split_inclusive('\n').nth(line).map_or(0, str::len);
    std::fs::OpenOptions::new()
        .write(true)
        .open(out)?
        .set_len((start + len / 2) as u64)
}

/// Copies a finished output (and its sidecar and rejects) to `to`.
fn copy_run(from: &Path, to: &Path, rejects: bool) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::copy(sidecar_path(from), sidecar_path(to))?;
    if rejects {
        let (a, b) = (
            with_suffix(from, ".rejects.jsonl"),
            with_suffix(to, ".rejects.jsonl"),
        );
        std::fs::copy(a, b)?;
    }
    Ok(())
}

fn remove_run(out: &Path) {
    for p in [
        out.to_path_buf(),
        sidecar_path(out),
        with_suffix(out, ".rejects.jsonl"),
    ] {
        let _ = std::fs::remove_file(p);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut model = PathBuf::from("quickstart-out/chat-model");
    let mut out = PathBuf::from("data-gen-out");
    let mut check = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => {
                out = args
                    .next()
                    .ok_or_else(|| format!("--out needs a directory; {USAGE}"))?
                    .into()
            }
            "--check" => check = true,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                return Ok(());
            }
            _ if a.starts_with('-') => {
                eprintln!("unknown option {a}; {USAGE}");
                std::process::exit(2);
            }
            _ => model = a.into(),
        }
    }
    if !model.join("config.json").is_file() {
        eprintln!(
            "no model in {}: run `cargo run --release --example quickstart` first, or give a \
             model directory; {USAGE}",
            model.display()
        );
        std::process::exit(2);
    }
    std::fs::create_dir_all(&out)?;
    let device = tilpass::device("flex")?;
    let mut ok = true;

    // 1. Translation.
    let data = out.join("english.jsonl");
    let body: String = english_rows().iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&data, body)?;
    let full = out.join("translated.jsonl");
    remove_run(&full);
    let run = TranslateRun {
        model: Some(model.clone()),
        data: Some(data.clone()),
        out: Some(full.clone()),
        batch_size: 4,
        max_new_tokens: 48,
        round_trip: true,
        ..Default::default()
    };
    let t = Instant::now();
    let o = run.run(&device, &mut |_, _| {})?;
    println!(
        "translate: {} rows, {} flagged, {} texts generated in {:.1} s",
        o.rows,
        o.flagged,
        o.generated,
        t.elapsed().as_secs_f64()
    );
    for line in std::fs::read_to_string(&full)?.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        println!("  row {}: {}", v["id"], v["quality"]);
    }
    let resumed = out.join("translated-resumed.jsonl");
    remove_run(&resumed);
    copy_run(&full, &resumed, false)?;
    tear(&resumed, 4)?;
    let t = Instant::now();
    let o = TranslateRun {
        out: Some(resumed.clone()),
        ..run
    }
    .run(&device, &mut |_, _| {})?;
    let same = std::fs::read(&resumed)? == std::fs::read(&full)?;
    println!(
        "translate resumed after {} rows: {} written in {:.1} s; equal to the uninterrupted run: {same}",
        o.resumed,
        o.written,
        t.elapsed().as_secs_f64()
    );
    ok &= same;

    // 2. Self-instruct from the Bokmål user turns of norsk-chat.
    let seeds = out.join("seeds.jsonl");
    let mut body = String::new();
    for c in tilpass::data::embedded::norsk_chat(Some("train"))? {
        if c.lang == "nb" && c.messages.len() >= 2 {
            body.push_str(&format!(
                "{}\n",
                json!({"prompt": c.messages[0].content, "completion": c.messages[1].content})
            ));
        }
    }
    std::fs::write(&seeds, body)?;
    let si_out = out.join("self-instruct.jsonl");
    remove_run(&si_out);
    let si = SelfInstructRun {
        model: Some(model.clone()),
        seeds: Some(seeds),
        out: Some(si_out.clone()),
        num: 4,
        max_attempts: Some(24),
        batch_size: 8,
        max_new_tokens: 48,
        seed: 7,
        ..Default::default()
    };
    let t = Instant::now();
    let o = si.run(&device, &mut |_, _| {})?;
    println!(
        "self-instruct: {} accepted, {} rejected {:?} in {:.1} s",
        o.accepted,
        o.rejected,
        o.reasons,
        t.elapsed().as_secs_f64()
    );
    let rejects = with_suffix(&si_out, ".rejects.jsonl");
    let si_resumed = out.join("self-instruct-resumed.jsonl");
    remove_run(&si_resumed);
    copy_run(&si_out, &si_resumed, true)?;
    let resumed_rejects = with_suffix(&si_resumed, ".rejects.jsonl");
    // Killed while writing the rejects report's 10th line: the accepted tasks of later attempts
    // were not written yet.
    let cut_attempt = std::fs::read_to_string(&rejects)?
        .lines()
        .nth(9)
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["attempt"].as_u64());
    if let Some(cut) = cut_attempt {
        tear(&resumed_rejects, 9)?;
        let kept: String = std::fs::read_to_string(&si_out)?
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .is_ok_and(|v| v["self_instruct"]["attempt"].as_u64() < Some(cut))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&si_resumed, kept)?;
    }
    let t = Instant::now();
    SelfInstructRun {
        out: Some(si_resumed.clone()),
        ..si
    }
    .run(&device, &mut |_, _| {})?;
    let same = std::fs::read(&si_resumed)? == std::fs::read(&si_out)?
        && std::fs::read(&resumed_rejects)? == std::fs::read(&rejects)?;
    println!(
        "self-instruct resumed in {:.1} s; equal to the uninterrupted run: {same}",
        t.elapsed().as_secs_f64()
    );
    ok &= same;
    println!("outputs in {}", out.display());
    if check && !ok {
        eprintln!("check failed: a resumed output differs from the uninterrupted one");
        std::process::exit(1);
    }
    Ok(())
}
