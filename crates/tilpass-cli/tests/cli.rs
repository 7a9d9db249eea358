//! End-to-end tests of the `tilpass` command: JSON on stdout, exit code 2 and a one-line cause
//! on stderr for bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn tilpass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args(args)
        .output()
        .expect("runs")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn bad_input(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one-line cause: {err}");
    err
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

const CORPUS: &str = "Hvor ligger nærmeste bibliotek?\nBiblioteket ligger ved torget.\nEg likar å lese bøker på biblioteket.\nKva heiter du?\nEg heiter Kari og bur i Bergen.\n";

#[test]
fn train_a_tokenizer_then_tokenize_text_and_chat() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write(dir.path(), "corpus.txt", &CORPUS.repeat(20));
    let tok_dir = dir.path().join("tok");
    let out = tilpass(&[
        "tokenizer",
        "train",
        "--files",
        &corpus,
        "--vocab-size",
        "300",
        "--chat-template",
        "norsk",
        "--out",
        tok_dir.to_str().unwrap(),
    ]);
    let v = ok_json(&out);
    assert_eq!(v["kind"], "bpe");
    assert!(tok_dir.join("tokenizer.json").is_file());

    let out = tilpass(&[
        "tokenize",
        "--tokenizer",
        tok_dir.to_str().unwrap(),
        "--text",
        "Hvor ligger biblioteket?",
    ]);
    let v = ok_json(&out);
    assert_eq!(v["text"], "Hvor ligger biblioteket?");
    assert_eq!(v["ids"][0], 1, "BOS (<s> = 1) first");
    assert!(v["assistant_mask"].is_null());

    let msgs = write(
        dir.path(),
        "chat.json",
        r#"[{"role":"user","content":"Kva heiter du?"},{"role":"assistant","content":"Eg heiter Kari."}]"#,
    );
    let out = tilpass(&[
        "tokenize",
        "--tokenizer",
        tok_dir.to_str().unwrap(),
        "--messages",
        &msgs,
    ]);
    let v = ok_json(&out);
    assert_eq!(
        v["text"],
        "<s>### Bruker:\nKva heiter du?\n\n### Assistent:\nEg heiter Kari.</s>\n\n"
    );
    let ids = v["ids"].as_array().unwrap();
    let mask = v["assistant_mask"].as_array().unwrap();
    assert_eq!(ids.len(), mask.len());
    // The answer and its EOS (</s> = 2) are supervised; the user turn is not.
    let eos_pos = ids.iter().rposition(|i| i == 2).unwrap();
    assert_eq!(mask[eos_pos], 1);
    assert_eq!(mask[0], 0);

    let out = tilpass(&[
        "tokenizer",
        "fertility",
        "--tokenizer",
        tok_dir.to_str().unwrap(),
        "--corpus",
        &corpus,
    ]);
    let v = ok_json(&out);
    assert!(v["fertility"].as_f64().unwrap() >= 1.0);
}

#[test]
fn data_stats_validate_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "chat.jsonl",
        concat!(
            r#"{"messages":[{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei på deg!"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"Hei"},{"role":"assistant","content":"Hei på deg!"}]}"#,
            "\n",
            r#"{"messages":[{"role":"user","content":"Takk"},{"role":"assistant","content":"Bare hyggelig."}]}"#,
            "\n",
        ),
    );
    let v = ok_json(&tilpass(&["data", "stats", &good]));
    assert_eq!(v["stats"]["rows"], 3);
    assert_eq!(v["stats"]["messages_per_role"]["assistant"], 3);
    let v = ok_json(&tilpass(&["data", "validate", &good]));
    assert_eq!(v["valid"], true);

    let out_path = dir.path().join("clean.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "dedup",
        &good,
        "--out",
        out_path.to_str().unwrap(),
    ]));
    assert_eq!(v["dedup"]["removed"], 1);
    assert_eq!(
        std::fs::read_to_string(&out_path).unwrap().lines().count(),
        2
    );

    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"Hei\"}]}\n{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\nnot json\n",
    );
    let out = tilpass(&["data", "validate", &bad]);
    let err = bad_input(&out);
    assert!(
        err.contains("bad.jsonl")
            && err.contains("2 invalid row(s) of 3")
            && err.contains("line 2"),
        "{err}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["read"]["skipped"][1]["location"]["line"], 3);

    let err = bad_input(&tilpass(&["data", "stats", &bad]));
    assert!(
        err.contains("bad.jsonl:line 2") && err.contains("unknown role `robot`"),
        "{err}"
    );
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let err = bad_input(&tilpass(&[
        "tokenize",
        "--tokenizer",
        dir.path().to_str().unwrap(),
        "--text",
        "x",
    ]));
    assert!(err.contains("no tokenizer found"), "{err}");
    let err = bad_input(&tilpass(&["data", "stats", "/nonexistent/file.jsonl"]));
    assert!(err.contains("/nonexistent/file.jsonl"), "{err}");
}
