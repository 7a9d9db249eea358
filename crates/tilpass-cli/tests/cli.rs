//! End-to-end tests of the `tilpass` command: JSON on stdout, exit code 2 and a one-line cause
//! on stderr for bad input.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

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

/// The shared test comparison: max-abs difference, infinite on NaN, panics on unequal lengths.
use tilpass_tests::max_abs_diff;

mod common;
use common::{bad_input, ok_json, tilpass};

/// `v["logits"]` as numbers (a `null` — how JSON writes NaN — fails).
fn logits_of(v: &Value) -> Vec<f32> {
    v["logits"]
        .as_array()
        .expect("logits array")
        .iter()
        .map(|x| x.as_f64().expect("a finite number") as f32)
        .collect()
}

/// Max-abs difference between `v["logits"]` and the first `n` values of `key` in
/// `dir/expected.safetensors` (`v` must hold exactly `n` values).
fn logits_diff(v: &Value, dir: &Path, key: &str, n: usize) -> f64 {
    let want = tilpass::core::Checkpoint::open(dir.join("expected.safetensors"))
        .unwrap()
        .read_f32(key)
        .unwrap();
    max_abs_diff(&logits_of(v), &want.data[..n])
}

fn fixture_dir(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

/// A copy of a tiny fixture model with a word-level tokenizer whose token `tN` has id N.
fn model_with_tokenizer(name: &str) -> tempfile::TempDir {
    with_tokenizer(&fixture_dir(name))
}

fn with_tokenizer(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

#[test]
fn logits_match_the_transformers_fixture() {
    let dir = fixture_dir("llama_gqa");
    let ids = "1,17,42,99,200,3,5,7,11,13,250,128";
    let v = ok_json(&tilpass(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        ids,
    ]));
    assert_eq!(v["shape"], serde_json::json!([1, 12, 256]));
    // Row 0 of the fixture batch is these ids, unpadded.
    let max = logits_diff(&v, &dir, "logits", 12 * 256);
    assert!(max <= 1e-4, "{max}");
}

#[test]
fn generate_greedy_and_sampled_text() {
    let dir = model_with_tokenizer("gpt2");
    let prompt = "t1 t17 t42 t99 t200 t3 t5 t7 t11 t13 t250 t128";
    let m = dir.path().to_str().unwrap();
    let v = ok_json(&tilpass(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--max-new-tokens",
        "20",
        "--json",
    ]));
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("gpt2").join("inputs.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v["ids"], inputs["greedy_single"][0],
        "greedy = transformers"
    );
    assert_eq!(v["prompt_ids"][0], 1);
    let words: Vec<String> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("t{i}"))
        .collect();
    assert_eq!(v["text"], words.join(" "));
    // Streaming prints the same text.
    let out = tilpass(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--max-new-tokens",
        "20",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), words.join(" "));
    // A stop string cuts the output: the first generated word that has not occurred before
    // (spelled with its leading space, so it cannot match inside a longer word).
    let first_new = (1..words.len())
        .find(|&i| !words[..i].contains(&words[i]))
        .expect("the greedy output has two different words");
    let stop = format!(" {}", words[first_new]);
    let v = ok_json(&tilpass(&[
        "generate", "--model", m, "--prompt", prompt, "--stop", &stop, "--json",
    ]));
    let cut = v["text"].as_str().unwrap();
    let full = words.join(" ");
    let at = full
        .find(&stop)
        .expect("the stop string occurs in the greedy text");
    assert!(!cut.is_empty(), "text before the stop string is kept: {v}");
    assert_eq!(
        cut,
        &full[..at],
        "the text ends right before the stop string: {v}"
    );
    assert!(!cut.contains(&stop), "{v}");
    // Sampling is reproducible with a seed.
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--seed",
        "3",
        "--json",
    ];
    assert_eq!(
        ok_json(&tilpass(&args))["ids"],
        ok_json(&tilpass(&args))["ids"]
    );
    // ... and actually samples: some seed's ids differ from the greedy ids (a sampler that
    // silently fell back to argmax would give the greedy text for every seed).
    let greedy = &inputs["greedy_single"][0];
    let differs = (0..5).any(|seed| {
        let seed = seed.to_string();
        let mut a = args;
        a[10] = seed.as_str();
        &ok_json(&tilpass(&a))["ids"] != greedy
    });
    assert!(
        differs,
        "sampling with temperature 1 gave the greedy ids for 5 seeds"
    );
}

#[test]
fn model_errors_exit_2() {
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        "/nonexistent/model",
        "--ids",
        "1,2",
    ]));
    assert!(err.contains("/nonexistent/model"), "{err}");
    let dir = fixture_dir("gpt2");
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        "1,2",
        "--device",
        "cuda:0",
    ]));
    assert!(err.contains("--features cuda"), "{err}");
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--ids",
        "1,999",
    ]));
    assert!(err.contains("999"), "{err}");
}

#[test]
fn chat_answers_each_line_on_stdin() {
    use std::io::Write;
    let dir = model_with_tokenizer("gpt2");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args([
            "chat",
            "--model",
            dir.path().to_str().unwrap(),
            "--chat-template",
            "norsk",
            "--max-new-tokens",
            "4",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"t5 t6\nt7 t8\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<&str> = text.lines().collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(
        answers.iter().all(|a| a.split_whitespace().count() >= 1),
        "{text}"
    );
}

#[test]
fn embed_prints_the_pooled_vector() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/bert_cls");
    let dir = with_tokenizer(&src);
    let m = dir.path().to_str().unwrap();
    // Row 1 of the fixture batch (token types 0): mean pooling + L2 normalisation.
    let v = ok_json(&tilpass(&[
        "embed",
        "--model",
        m,
        "--text",
        "t2 t60 t61 t62 t63 t64 t65",
        "--normalize",
    ]));
    assert_eq!(v["dim"], 64);
    let got: Vec<f32> = serde_json::from_value(v["embedding"].clone()).unwrap();
    let want = tilpass::core::Checkpoint::open(src.join("expected.safetensors"))
        .unwrap()
        .read_f32("mean_pooled")
        .unwrap();
    let max = max_abs_diff(&got, &want.data[64..128]);
    assert!(max <= 1e-5, "{max}");
    // Several texts: one JSON line each.
    let out = tilpass(&[
        "embed",
        "--model",
        m,
        "--text",
        "t5 t6",
        "--text",
        "t7",
        "--pooling",
        "cls",
    ]);
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["text"], "t7");
    let err = bad_input(&tilpass(&["embed", "--model", m]));
    assert!(err.contains("--text"), "{err}");
}

#[test]
fn seq2seq_logits_and_generation() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/t5_v1_1");
    let dir = with_tokenizer(&src);
    let m = dir.path().to_str().unwrap();
    let inp: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("inputs.json")).unwrap()).unwrap();
    // Row 0 of the fixture batch, unpadded, with its decoder ids.
    let v = ok_json(&tilpass(&[
        "logits",
        "--model",
        m,
        "--ids",
        "2,17,42,99,200,3,5,7,11,13,250,128",
        "--decoder-ids",
        "0,5,9,11,40",
    ]));
    assert_eq!(v["shape"], serde_json::json!([1, 5, 256]));
    let max = logits_diff(&v, &src, "logits", 5 * 256);
    assert!(max <= 1e-4, "{max}");
    // Beam search from text (the word-level tokenizer adds no EOS, so the prompt is row 0).
    let prompt = "t2 t17 t42 t99 t200 t3 t5 t7 t11 t13 t250 t128";
    let v = ok_json(&tilpass(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--num-beams",
        "4",
        "--max-new-tokens",
        "16",
        "--json",
    ]));
    let want: Vec<Vec<u32>> = serde_json::from_value(inp["beam4"].clone()).unwrap();
    assert_eq!(v["ids"], serde_json::json!(want[0]));
    // Sampling that can only pick the top token, with a repetition penalty: transformers'
    // greedy decoding with that penalty (tests/fixtures/encoders/seq2seq_generate.json).
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(src.join("../seq2seq_generate.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<Vec<u32>> =
        serde_json::from_value(exp["models"]["t5_v1_1"]["greedy_rep1.3"].clone()).unwrap();
    let sample = |seed: &str, top_k: &str| {
        ok_json(&tilpass(&[
            "generate",
            "--model",
            m,
            "--prompt",
            prompt,
            "--temperature",
            "0.7",
            "--top-k",
            top_k,
            "--repetition-penalty",
            "1.3",
            "--seed",
            seed,
            "--max-new-tokens",
            "16",
            "--json",
        ]))
    };
    assert_eq!(sample("3", "1")["ids"], serde_json::json!(want[0]));
    // Seeded sampling repeats itself.
    assert_eq!(sample("3", "50")["ids"], sample("3", "50")["ids"]);
    // Beam sampling is not implemented: refused, naming the setting.
    let err = bad_input(&tilpass(&[
        "generate",
        "--model",
        m,
        "--prompt",
        prompt,
        "--temperature",
        "0.7",
        "--num-beams",
        "2",
    ]));
    assert!(err.contains("do_sample"), "{err}");
    // A stop string cuts the text before it: the streamed text is what --json says.
    let full = ok_json(&tilpass(&[
        "generate", "--model", m, "--prompt", prompt, "--json",
    ]));
    let words: Vec<&str> = full["text"].as_str().unwrap().split(' ').collect();
    let stop = words[2];
    let first = words.iter().position(|w| *w == stop).unwrap();
    let cut = ok_json(&tilpass(&[
        "generate", "--model", m, "--prompt", prompt, "--stop", stop, "--json",
    ]));
    assert_eq!(cut["stop_reason"], "stop");
    assert_eq!(
        cut["text"].as_str().unwrap().trim_end(),
        words[..first].join(" ")
    );
    let streamed = tilpass(&["generate", "--model", m, "--prompt", prompt, "--stop", stop]);
    assert!(streamed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout),
        format!("{}\n", cut["text"].as_str().unwrap())
    );
}

/// Runs `tilpass chat` with `lines` on stdin; returns the answers (one line each).
fn chat_lines(args: &[&str], lines: &str) -> (Vec<String>, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .arg("chat")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    (text.lines().map(str::to_string).collect(), err)
}

/// `chat` on a NorT5 directory: the conversation goes to the encoder in the plain layout
/// (`user: ...` / `assistant: ...` lines ending in `assistant:`; the word-level tokenizer reads
/// the role words as its unknown id 0), the decoder answers; the second turn's encoder input
/// holds the first exchange. `generate --chat` renders a single message the same way.
#[test]
fn chat_with_an_encoder_decoder_sends_the_history_to_the_encoder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/nort5");
    let dir = with_tokenizer(&src);
    let m = dir.path().to_str().unwrap();
    let (answers, _) = chat_lines(&["--model", m, "--max-new-tokens", "4"], "t5 t6\nt7 t8\n");
    assert_eq!(answers.len(), 2, "{answers:?}");
    let first = ok_json(&tilpass(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--prompt",
        "t5 t6",
        "--max-new-tokens",
        "4",
        "--json",
    ]));
    // "user: t5 t6\nassistant:" word by word.
    assert_eq!(first["prompt_ids"], serde_json::json!([0, 5, 6, 0]));
    assert_eq!(first["text"].as_str().unwrap().trim(), answers[0].trim());
    // Turn two: "user: t5 t6\nassistant: ANSWER\nuser: t7 t8\nassistant:".
    let answer_ids: Vec<String> = answers[0]
        .split_whitespace()
        .map(|w| w.trim_start_matches('t').to_string())
        .collect();
    let mut ids = vec!["0".to_string(), "5".into(), "6".into(), "0".into()];
    ids.extend(answer_ids);
    ids.extend(["0", "7", "8", "0"].map(String::from));
    let second = ok_json(&tilpass(&[
        "generate",
        "--model",
        m,
        "--ids",
        &ids.join(","),
        "--max-new-tokens",
        "4",
        "--json",
    ]));
    let want: Vec<String> = second["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("t{t}"))
        .collect();
    assert_eq!(answers[1].trim(), want.join(" "));
    // A long conversation loses its oldest turns from the encoder input, and says so.
    let (answers, err) = chat_lines(
        &[
            "--model",
            m,
            "--max-new-tokens",
            "2",
            "--max-source-length",
            "12",
        ],
        "t5 t6 t7\nt8 t9 t10\nt11 t12 t13\n",
    );
    assert_eq!(answers.len(), 3);
    assert!(err.contains("oldest turns"), "{err}");
}

#[test]
fn adapters_on_logits_info_and_merge() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let model = root.join("models/llama_gqa");
    let adapter = root.join("peft/llama_dora");
    let (m, a) = (model.to_str().unwrap(), adapter.to_str().unwrap());
    let ids = "1,17,42,99,200,3,5,7,11,13,250,128";
    // Row 0 of the fixture batch is unpadded: PEFT's logits for it.
    let expected = |key: &str| {
        tilpass::core::Checkpoint::open(adapter.join("expected.safetensors"))
            .unwrap()
            .read_f32(key)
            .unwrap()
            .data[..12 * 256]
            .to_vec()
    };
    let diff = |v: &Value, want: &[f32]| max_abs_diff(&logits_of(v), want);
    let v = ok_json(&tilpass(&[
        "logits",
        "--model",
        m,
        "--adapter",
        a,
        "--ids",
        ids,
    ]));
    assert!(diff(&v, &expected("logits")) <= 1e-4);
    let info = ok_json(&tilpass(&["peft", "info", a, "--model", m]));
    assert_eq!(info["use_dora"], true);
    assert_eq!(info["model"]["trainable_parameters"], 3648);
    let out = tempfile::tempdir().unwrap();
    let merged = out.path().join("merged");
    ok_json(&tilpass(&[
        "peft",
        "merge",
        "--model",
        m,
        "--adapter",
        a,
        "--out",
        merged.to_str().unwrap(),
    ]));
    let v = ok_json(&tilpass(&[
        "logits",
        "--model",
        merged.to_str().unwrap(),
        "--ids",
        ids,
    ]));
    assert!(diff(&v, &expected("merged")) <= 1e-4);
    // An adapter for another model is refused with the file named.
    let gpt2_adapter = root.join("peft/gpt2_lora");
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        m,
        "--adapter",
        gpt2_adapter.to_str().unwrap(),
        "--ids",
        ids,
    ]));
    assert!(err.contains("gpt2_lora"), "{err}");
}

#[test]
fn prompt_learning_adapters_in_generate_and_logits() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    let prompt = "t1 t17 t42 t99 t200 t3 t5 t7 t11 t13 t250 t128";
    for case in ["llama_prefix", "llama_prompt"] {
        let adapter = root.join(format!("peft/{case}"));
        let info: Value =
            serde_json::from_str(&std::fs::read_to_string(adapter.join("info.json")).unwrap())
                .unwrap();
        let v = ok_json(&tilpass(&[
            "generate",
            "--model",
            m,
            "--adapter",
            adapter.to_str().unwrap(),
            "--prompt",
            prompt,
            "--max-new-tokens",
            "8",
            "--json",
        ]));
        assert_eq!(v["ids"], info["greedy_row0"], "{case}");
    }
    // Prompt tuning's logits include the virtual columns (5 here).
    let v = ok_json(&tilpass(&[
        "logits",
        "--model",
        m,
        "--adapter",
        root.join("peft/llama_prompt").to_str().unwrap(),
        "--ids",
        "1,17,42",
    ]));
    assert_eq!(v["shape"], serde_json::json!([1, 8, 256]));
}

#[test]
fn train_sft_writes_an_adapter_checkpoints_and_resumes() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..12)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                               "completion": format!(" t{} t{} t2", 40 + i, 50 + i)})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "train.jsonl", &rows);
    // Settings from a JSON file; flags win over it.
    let cfg = write(
        work.path(),
        "sft.json",
        r#"{"lora_r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "batch_size": 4, "lr": 0.005, "steps": 2}"#,
    );
    let out = work.path().join("run");
    let o = out.to_str().unwrap();
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--config",
        &cfg,
        "--model",
        m,
        "--data",
        &data,
        "--eval-data",
        &data,
        "--out",
        o,
        "--steps",
        "6",
        "--eval-steps",
        "3",
        "--save-steps",
        "3",
    ]));
    let s = &v["summary"];
    assert_eq!(s["steps"], 6, "the flag beat the config's 2 steps");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v["eval_loss"].as_f64())
        .collect();
    assert_eq!(evals.len(), 2);
    assert!(evals[1] < evals[0], "eval loss falls: {evals:?}");
    // Each evaluation logs sample answers to held-out prompts.
    assert!(
        metrics
            .lines()
            .filter(|l| l.contains("\"samples\""))
            .count()
            == 2,
        "{metrics}"
    );
    // The adapter works with --adapter.
    let adapter = out.join("adapter");
    ok_json(&tilpass(&[
        "logits",
        "--model",
        m,
        "--adapter",
        adapter.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]));
    // Resume from the step-3 checkpoint to step 6.
    let out2 = work.path().join("resumed");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--config",
        &cfg,
        "--model",
        m,
        "--data",
        &data,
        "--out",
        out2.to_str().unwrap(),
        "--steps",
        "6",
        "--resume",
        out.join("checkpoint-3").to_str().unwrap(),
    ]));
    assert_eq!(v["summary"]["steps"], 6);
    // Missing data is exit 2 with the flag named.
    let err = bad_input(&tilpass(&["train", "sft", "--model", m, "--out", o]));
    assert!(err.contains("--data"), "{err}");
}

#[test]
fn train_sft_full_fine_tunes_and_saves_a_loadable_model() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..8)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t30", 10 + i), "completion": format!(" t{} t2", 40 + i)})
                .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "train.jsonl", &rows);
    let out = work.path().join("full");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--full",
        "--packing",
        "--max-length",
        "64",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
        "--lr",
        "0.001",
        "--batch-size",
        "4",
    ]));
    assert_eq!(v["summary"]["steps"], 3);
    // Eight short examples packed into 64-token rows: fewer tokens per step than unpacked rows.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first: Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    assert!(first["tokens"].as_u64().unwrap() > 0);
    let model = out.join("model");
    assert_eq!(v["model"], model.to_str().unwrap());
    // The saved model loads and differs from the base.
    let before = ok_json(&tilpass(&["logits", "--model", m, "--ids", "1,2,3"]));
    let after = ok_json(&tilpass(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]));
    assert_eq!(before["shape"], after["shape"]);
    assert_ne!(before["logits"], after["logits"]);
}

/// TRL's DPO metric names `train dpo` logs each step.
const DPO_METRICS: [&str; 10] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
];

#[test]
fn train_dpo_logs_trl_metrics_resumes_exactly_and_trains_full() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    // Plain-text preference rows get EOS appended (TRL): the tokenizer needs one.
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"eos_token": "t2"}"#,
    );
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..12)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                               "chosen": format!(" t{} t{}", 40 + i, 50 + i),
                               "rejected": format!(" t{} t{} t{}", 60 + i, 70 + i, 80 + i)})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "pref.jsonl", &rows);
    // TRL's DPOConfig / TrainingArguments defaults, but the learning rate (documented).
    let v = ok_json(&tilpass(&["train", "dpo", "--print-config"]));
    for (k, want) in [
        ("beta", serde_json::json!(0.1)),
        ("loss_type", serde_json::json!(["sigmoid"])),
        ("label_smoothing", serde_json::json!(0.0)),
        ("max_length", serde_json::json!(1024)),
        ("truncation", serde_json::json!("keep_start")),
        ("batch_size", serde_json::json!(8)),
        ("lr_scheduler_type", serde_json::json!("linear")),
        ("warmup", serde_json::json!(0)),
        ("max_grad_norm", serde_json::json!(1.0)),
        ("weight_decay", serde_json::json!(0.0)),
        ("lr", serde_json::json!(5e-5)),
    ] {
        assert_eq!(v[k], want, "default {k}");
    }
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "dpo",
            "--model",
            m,
            "--data",
            &data,
            "--batch-size",
            "4",
            "--lora-r",
            "4",
            "--target-modules",
            "q_proj,v_proj",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok_json(&tilpass(&args))
    };
    let out = work.path().join("run");
    let v = run(
        &out,
        &[
            "--steps",
            "4",
            "--save-steps",
            "2",
            "--lr",
            "0.01",
            "--eval-data",
            &data,
        ],
    );
    assert_eq!(v["summary"]["steps"], 4);
    // Evaluations before and after training, with TRL's eval_ names; training on the same
    // pairs raises their reward margin from 0 (policy = reference).
    let (first, last) = (&v["initial_eval"], &v["final_eval"]);
    assert_eq!(first["step"], 0);
    assert_eq!(last["step"], 4);
    assert_eq!(first["eval_rewards/margins"], 0.0);
    let margin = last["eval_rewards/margins"].as_f64().unwrap();
    assert!(margin > 0.0, "eval margin after training: {margin}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let all: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(all.len(), 6, "4 steps + 2 evaluations");
    assert_eq!(all[0], *first);
    assert_eq!(all[5], *last);
    let lines: Vec<Value> = all[1..5].to_vec();
    for l in &lines {
        for k in DPO_METRICS {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    // The first step's policy is the reference (LoRA B = 0): log 2, zero rewards.
    assert!((lines[0]["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6);
    assert_eq!(lines[0]["rewards/margins"], 0.0);
    let adapter = out.join("adapter");
    ok_json(&tilpass(&[
        "logits",
        "--model",
        m,
        "--adapter",
        adapter.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]));
    // Resumed from step 2, it ends with the same adapter, byte for byte.
    let resumed = work.path().join("resumed");
    let ckpt = out.join("checkpoint-2");
    run(
        &resumed,
        &[
            "--steps",
            "4",
            "--lr",
            "0.01",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
    );
    let file = "adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(out.join(file)).unwrap(),
        std::fs::read(resumed.join(file)).unwrap(),
        "resumed adapter"
    );
    // Full fine-tuning against a copy of the model: a loadable model that differs from it.
    let full = work.path().join("full");
    let v = run(&full, &["--steps", "2", "--full", "--lr", "0.001"]);
    let model = full.join("model");
    assert_eq!(v["model"], model.to_str().unwrap());
    let before = ok_json(&tilpass(&["logits", "--model", m, "--ids", "1,2,3"]));
    let after = ok_json(&tilpass(&[
        "logits",
        "--model",
        model.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]));
    assert_ne!(before["logits"], after["logits"]);
    // Bad settings are exit 2, naming the setting, before any work.
    let o = work.path().join("bad");
    let o = o.to_str().unwrap();
    let err = bad_input(&tilpass(&["train", "dpo", "--model", m, "--out", o]));
    assert!(err.contains("--data"), "{err}");
    let err = bad_input(&tilpass(&[
        "train",
        "dpo",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        o,
        "--loss-type",
        "exo_pair",
    ]));
    assert!(err.contains("label_smoothing"), "{err}");
    let err = bad_input(&tilpass(&[
        "train", "dpo", "--model", m, "--data", &data, "--out", o, "--beta", "0",
    ]));
    assert!(err.contains("beta"), "{err}");
    let err = bad_input(&tilpass(&[
        "train",
        "dpo",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        o,
        "--loss-type",
        "nope",
    ]));
    assert!(err.contains("nope"), "{err}");
    assert!(!Path::new(o).join("metrics.jsonl").exists());
}

/// `--precompute-ref-log-probs`: the reference log-probs are computed once and cached next to
/// the data; a second run reuses them, a run with other settings or a damaged file rebuilds
/// them (saying why), and the losses are exactly those of a run without the cache. Also
/// evaluation every `--eval-steps` (TRL's eval_ names in metrics.jsonl) and `--use-weighting`.
#[test]
fn train_dpo_caches_reference_log_probs_and_evaluates_every_eval_steps() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"eos_token": "t2"}"#,
    );
    let work = tempfile::tempdir().unwrap();
    let rows = |n: usize, at: usize| -> String {
        (at..at + n)
            .map(|i| {
                serde_json::json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                                   "chosen": format!(" t{} t{}", 40 + i, 50 + i),
                                   "rejected": format!(" t{} t{} t{}", 60 + i, 70 + i, 80 + i)})
                .to_string()
                    + "\n"
            })
            .collect()
    };
    let data = write(work.path(), "pref.jsonl", &rows(8, 0));
    let eval = write(work.path(), "held.jsonl", &rows(4, 20));
    let run = |name: &str, extra: &[&str]| -> (Vec<Value>, String) {
        let out = work.path().join(name);
        let mut args = vec![
            "train",
            "dpo",
            "--model",
            m,
            "--data",
            &data,
            "--eval-data",
            &eval,
            "--batch-size",
            "2",
            "--lora-r",
            "4",
            "--target-modules",
            "q_proj,v_proj",
            "--steps",
            "4",
            "--lr",
            "0.01",
            "--eval-steps",
            "2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = tilpass(&args);
        ok_json(&o);
        let lines = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let losses = |lines: &[Value]| -> Vec<(String, String)> {
        lines
            .iter()
            .filter_map(|l| {
                let k = if l.get("loss").is_some() {
                    "loss"
                } else {
                    "eval_loss"
                };
                Some((k.to_string(), l.get(k)?.to_string()))
            })
            .collect()
    };
    let (plain, _) = run("plain", &[]);
    // Before training, at steps 2 and 4 (the loop's), no separate final evaluation.
    let evals: Vec<&Value> = plain
        .iter()
        .filter(|l| l.get("eval_loss").is_some())
        .collect();
    let steps: Vec<u64> = evals.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 2, 4], "{plain:?}");
    for e in &evals {
        for k in DPO_METRICS {
            let k = format!("eval_{k}");
            assert!(e[&k].as_f64().is_some_and(f64::is_finite), "{k} in {e}");
        }
    }
    let cache = work.path().join("pref.jsonl.ref-logps.json");
    let eval_cache = work.path().join("held.jsonl.ref-logps.json");
    let (first, err) = run(
        "cached",
        &["--precompute-ref-log-probs", "--save-steps", "2"],
    );
    assert!(err.contains("computing reference log-probs"), "{err}");
    assert!(cache.is_file() && eval_cache.is_file());
    assert_eq!(losses(&first), losses(&plain), "losses with the cache");
    // Resumed from step 2, the cache is reused and the adapter ends the same, byte for byte.
    let ckpt = work.path().join("cached/checkpoint-2");
    let (_, err) = run(
        "resumed",
        &[
            "--precompute-ref-log-probs",
            "--resume",
            ckpt.to_str().unwrap(),
        ],
    );
    assert!(err.contains("reference log-probs from"), "{err}");
    let file = "adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(work.path().join("cached").join(file)).unwrap(),
        std::fs::read(work.path().join("resumed").join(file)).unwrap(),
        "resumed adapter"
    );
    let (again, err) = run("again", &["--precompute-ref-log-probs"]);
    assert!(!err.contains("computing reference log-probs"), "{err}");
    assert!(err.contains("reference log-probs from"), "{err}");
    assert_eq!(
        losses(&again),
        losses(&plain),
        "losses from the reused cache"
    );
    // Another max_length changes the tokenised data: the cache is rebuilt, saying why.
    let (_, err) = run(
        "shorter",
        &["--precompute-ref-log-probs", "--max-length", "5"],
    );
    assert!(err.contains("made for another tokenised data"), "{err}");
    // A damaged cache is never used.
    let text = std::fs::read_to_string(&cache).unwrap();
    std::fs::write(&cache, &text[..text.len() - 10]).unwrap();
    let (damaged, err) = run("damaged", &["--precompute-ref-log-probs"]);
    assert!(err.contains("unusable cache"), "{err}");
    assert_eq!(losses(&damaged), losses(&plain));
    // WPO: the first step's loss is log 2 times the pairs' weights (< 1).
    let (wpo, _) = run("wpo", &["--use-weighting"]);
    let l0 = wpo[1]["loss"].as_f64().unwrap();
    assert!(
        l0 > 0.0 && l0 < std::f64::consts::LN_2 - 1e-3,
        "WPO loss {l0}"
    );
    // eval_steps without eval data is refused before any work.
    let o = work.path().join("bad");
    let err = bad_input(&tilpass(&[
        "train",
        "dpo",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        o.to_str().unwrap(),
        "--eval-steps",
        "2",
    ]));
    assert!(err.contains("eval_steps"), "{err}");
}

#[test]
fn annotate_labels_jsonl_with_confidences() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..5)
        .map(|i| {
            serde_json::json!({"id": i, "text": format!("t{} t{} t{}", 10 + i, 20 + i, 30 + i)})
                .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "texts.jsonl", &rows);
    let out = work.path().join("annotated.jsonl");
    let o = tilpass(&[
        "annotate",
        "--model",
        m,
        "--data",
        &data,
        "--labels",
        "t5,t9,t11",
        "--template",
        "t1 {text} t30",
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["id"], i, "rows keep their order and fields");
        let probs = l["probabilities"].as_object().unwrap();
        let sum: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        let best = probs
            .iter()
            .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap())
            .unwrap();
        assert_eq!(l["label"], best.0.as_str());
        assert_eq!(l["confidence"], *best.1);
    }
    // A malformed line is named by file and line.
    let bad = write(work.path(), "bad.jsonl", "{\"text\": \"t1\"}\n{oops\n");
    let err = bad_input(&tilpass(&[
        "annotate",
        "--model",
        m,
        "--data",
        &bad,
        "--labels",
        "t5,t9",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn lambert_train_classify_and_predict_on_minilm() {
    let Some(minilm) = tilpass_tests::artefact("minilm") else {
        return;
    };
    let m = minilm.to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..40)
        .map(|i| {
            let (t, l) = if i % 2 == 1 {
                ("Dette er bra og fint", "positiv")
            } else {
                ("Dette er dårlig og trist", "negativ")
            };
            serde_json::json!({"text": format!("{t} {i}"), "label": l}).to_string() + "\n"
        })
        .collect();
    let data = write(work.path(), "labelled.jsonl", &rows);
    let out = work.path().join("cls");
    let v = ok_json(&tilpass(&[
        "train",
        "classify",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "12",
        "--batch-size",
        "8",
        "--lr",
        "5e-3",
    ]));
    assert_eq!(v["labels"], serde_json::json!(["negativ", "positiv"]));
    let s = &v["summary"];
    assert!(s["last_loss"].as_f64().unwrap() < s["first_loss"].as_f64().unwrap());
    let eval = &v["eval"];
    assert_eq!(
        eval["support"],
        serde_json::json!([2, 2]),
        "the last 10% are held out"
    );
    // Predict: every row gets a label and probabilities summing to 1; accuracy on this easy
    // set is checked loosely (the pipeline, not the model, is under test).
    let preds = work.path().join("preds.jsonl");
    let adapter = out.join("adapter");
    let v = ok_json(&tilpass(&[
        "predict",
        "--model",
        m,
        "--adapter",
        adapter.to_str().unwrap(),
        "--data",
        &data,
        "--out",
        preds.to_str().unwrap(),
    ]));
    assert_eq!(v["rows"], 40);
    let lines: Vec<Value> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 40);
    for l in &lines {
        let p = l["probabilities"].as_object().unwrap();
        assert!((p.values().map(|v| v.as_f64().unwrap()).sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(l["label"] == "positiv" || l["label"] == "negativ");
    }
}

#[test]
fn train_classify_and_predict_with_an_ltg_bert_model() {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/ltg_bert_mlm");
    let dir = with_tokenizer(&src);
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..20)
        .map(|i| {
            let l = ["nb", "nn"][i % 2];
            serde_json::json!({"text": format!("t{} t{} t{}", 10 + i % 2, 30 + i, 50 + i % 2), "label": l})
                .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "labelled.jsonl", &rows);
    let out = work.path().join("cls");
    let v = ok_json(&tilpass(&[
        "train",
        "classify",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "10",
        "--batch-size",
        "6",
        "--lr",
        "5e-3",
    ]));
    assert_eq!(v["labels"], serde_json::json!(["nb", "nn"]));
    let s = &v["summary"];
    assert!(s["last_loss"].as_f64().unwrap() < s["first_loss"].as_f64().unwrap());
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["head"]));
    let preds = work.path().join("preds.jsonl");
    let v = ok_json(&tilpass(&[
        "predict",
        "--model",
        m,
        "--adapter",
        out.join("adapter").to_str().unwrap(),
        "--data",
        &data,
        "--out",
        preds.to_str().unwrap(),
    ]));
    assert_eq!(v["rows"], 20);
    assert_eq!(v["complete"], true);
    // `tilpass plot` draws the run's metrics log: a chart per group of metrics, SVG and PNG,
    // every finite logged value a point.
    let metrics = out.join("metrics.jsonl");
    let logged: usize = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v.as_object()
                .unwrap()
                .iter()
                .filter(|(k, x)| {
                    ["loss", "lr", "grad_norm", "eval_loss"].contains(&k.as_str())
                        || (k.starts_with("eval_") && x.as_f64().is_some())
                })
                .count()
        })
        .sum();
    let plots = work.path().join("plots");
    let v = ok_json(&tilpass(&[
        "plot",
        metrics.to_str().unwrap(),
        "--out",
        plots.to_str().unwrap(),
    ]));
    assert_eq!(v["points"], logged);
    for stem in ["loss", "lr", "grad_norm"] {
        let svg = std::fs::read_to_string(plots.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<polyline"),
            "{stem}"
        );
        let png = std::fs::read(plots.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}");
    }
    let left: Vec<_> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let bad = write(
        work.path(),
        "bad.jsonl",
        "{\"step\": 1, \"loss\": 2.0}\n{oops\n",
    );
    let err = tilpass(&["plot", &bad]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("bad.jsonl:2"));
}

#[test]
fn metrics_bleu_chrf_rouge_langid_and_errors() {
    let work = tempfile::tempdir().unwrap();
    let hyp = write(
        work.path(),
        "hyp.txt",
        "The dog bit the man.\nIt wasn't surprising.\nThe man had just bitten him.\n",
    );
    let r1 = write(
        work.path(),
        "ref1.txt",
        "The dog bit the man.\nIt was not unexpected.\nThe man bit him first.\n",
    );
    let r2 = write(
        work.path(),
        "ref2.txt",
        "The dog had bit the man.\nNo one was surprised.\nThe man had bitten the dog.\n",
    );
    let v = ok_json(&tilpass(&[
        "metrics", "bleu", "--hyp", &hyp, "--ref", &r1, "--ref", &r2,
    ]));
    assert_eq!(format!("{:.6}", v["score"].as_f64().unwrap()), "48.530827");
    assert_eq!(
        v["signature"],
        "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
    );
    let v = ok_json(&tilpass(&[
        "metrics", "chrf", "--hyp", &hyp, "--ref", &r1, "--ref", &r2,
    ]));
    assert_eq!(format!("{:.2}", v["score"].as_f64().unwrap()), "59.73");
    let v = ok_json(&tilpass(&[
        "metrics", "ter", "--hyp", &hyp, "--ref", &r1, "--ref", &r2,
    ]));
    assert_eq!(v["score"], 40.0);
    let v = ok_json(&tilpass(&["metrics", "rouge", "--hyp", &hyp, "--ref", &r1]));
    assert_eq!(v["tokenizer"], "unicode");
    assert!(v["scores"]["rougeL"]["fmeasure"].as_f64().unwrap() > 0.5);
    let v = ok_json(&tilpass(&[
        "metrics",
        "langid",
        "--text",
        "Eg veit ikkje kva eg skal gjere.",
    ]));
    assert_eq!(v["lang"], "nn");
    let v = ok_json(&tilpass(&["metrics", "chat", "--hyp", &hyp]));
    assert!(v["distinct_1"].as_f64().unwrap() > 0.5);
    // Bad input: exit 2 with the cause.
    let short = write(work.path(), "short.txt", "one line\n");
    let err = bad_input(&tilpass(&[
        "metrics", "bleu", "--hyp", &hyp, "--ref", &short,
    ]));
    assert!(
        err.contains("short.txt has 1 lines") && err.contains("has 3"),
        "{err}"
    );
    let empty = write(work.path(), "empty.txt", "");
    let err = bad_input(&tilpass(&[
        "metrics", "bleu", "--hyp", &empty, "--ref", &r1,
    ]));
    assert!(err.contains("empty.txt: the file is empty"), "{err}");
    let bad = work.path().join("bad.txt");
    std::fs::write(&bad, b"fine\nbad \xff byte\n").unwrap();
    let err = bad_input(&tilpass(&[
        "metrics",
        "bleu",
        "--hyp",
        bad.to_str().unwrap(),
        "--ref",
        &r1,
    ]));
    assert!(err.contains("bad.txt:2: invalid UTF-8"), "{err}");
    let err = bad_input(&tilpass(&[
        "metrics", "meteor", "--hyp", &hyp, "--ref", &r1,
    ]));
    assert!(err.contains("unknown metric `meteor`"), "{err}");
}

#[test]
fn metrics_retrieval_reads_trec_files_and_judge_runs_a_local_model() {
    let work = tempfile::tempdir().unwrap();
    let qrels = write(work.path(), "qrels", "q1 0 d1 0\nq1 0 d2 1\nq1 0 d3 0\n");
    let run = write(
        work.path(),
        "run",
        "q1 Q0 d1 1 1.0 x\nq1 Q0 d2 2 2.0 x\nq1 Q0 d3 3 1.5 x\n",
    );
    let v = ok_json(&tilpass(&[
        "metrics",
        "retrieval",
        "--qrels",
        &qrels,
        "--run",
        &run,
    ]));
    assert_eq!(
        v["mean"]["ndcg"], 1.0,
        "pytrec_eval's vector (reference-semantics §3.5)"
    );
    let bad_run = write(work.path(), "bad_run", "q1 Q0 d1\n");
    let err = bad_input(&tilpass(&[
        "metrics",
        "retrieval",
        "--qrels",
        &qrels,
        "--run",
        &bad_run,
    ]));
    assert!(err.contains("bad_run:1: expected 6 columns"), "{err}");
    // The judge pipeline on the tiny random fixture: verdicts are unparsable, so all ties.
    let dir = model_with_tokenizer("llama_gqa");
    let pairs: String = (0..3)
        .map(|i| {
            serde_json::json!({"question": format!("t{i} t5"), "answer": "t7 t8", "baseline": "t9"})
                .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "pairs.jsonl", &pairs);
    let tmpl = write(
        work.path(),
        "t.txt",
        "{question} t1 {answer_a} t2 {answer_b}",
    );
    let v = ok_json(&tilpass(&[
        "metrics",
        "judge",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        &data,
        "--template",
        &tmpl,
    ]));
    assert_eq!(v["pairs"], 3);
    assert_eq!(v["ties"], 3);
    assert_eq!(v["unparsed_verdicts"], 6);
    assert_eq!(v["win_rate"], 50.0);
}

/// Perplexity from the transformers logits of the fixture (row 0: these ids, unpadded).
#[test]
fn metrics_perplexity_equals_the_transformers_logits() {
    let dir = model_with_tokenizer("llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let ids = [1u32, 17, 42, 99, 200, 3, 5, 7, 11, 13, 250, 128];
    let text: Vec<String> = ids.iter().map(|i| format!("t{i}")).collect();
    let texts = write(work.path(), "texts.txt", &(text.join(" ") + "\n"));
    let v = ok_json(&tilpass(&[
        "metrics",
        "perplexity",
        "--model",
        dir.path().to_str().unwrap(),
        "--hyp",
        &texts,
    ]));
    let logits =
        tilpass::core::Checkpoint::open(fixture_dir("llama_gqa").join("expected.safetensors"))
            .unwrap()
            .read_f32("logits")
            .unwrap();
    let mut nll = 0f64;
    for t in 0..ids.len() - 1 {
        let row: Vec<f64> = logits.data[t * 256..(t + 1) * 256]
            .iter()
            .map(|x| f64::from(*x))
            .collect();
        let max = row.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        nll -= row[ids[t + 1] as usize] - lse;
    }
    let want = (nll / (ids.len() - 1) as f64).exp();
    let got = v["perplexity"].as_f64().unwrap();
    assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");
    assert_eq!(v["tokens"], 11);
    let bytes = text.join(" ").len() as f64;
    let bpb = v["bits_per_byte"].as_f64().unwrap();
    assert!(
        (bpb - nll / (bytes * std::f64::consts::LN_2)).abs() < 1e-4,
        "{bpb}"
    );
}

fn fixtures_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).expect("rows of ids")
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// A copy of a fixture directory (to edit its config or weights).
fn copy_dir(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let p = dir.join("config.json");
    let mut v = read_json(&p);
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, v.to_string()).unwrap();
}

/// The encoder fixtures and every decoder fixture under tests/fixtures/models.
fn logit_fixtures() -> Vec<std::path::PathBuf> {
    let root = fixtures_root();
    let mut dirs: Vec<_> = [
        "bert_cls",
        "bert_mlm",
        "bert_tok",
        "bert_multi",
        "ltg_bert_cls",
        "ltg_bert_mlm",
        "t5_v1_0",
        "t5_v1_1",
        "nort5",
    ]
    .iter()
    .map(|n| root.join("encoders").join(n))
    .collect();
    let mut models: Vec<_> = std::fs::read_dir(root.join("models"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file() && p.join("expected.safetensors").is_file())
        .collect();
    models.sort();
    assert!(models.len() >= 4, "decoder fixtures: {models:?}");
    dirs.extend(models);
    dirs
}

/// Runs `tilpass logits` on every row of the fixture batch of `model` (its `inputs.json`:
/// the row's unpadded tokens, its BERT token types, its decoder ids) and returns the worst
/// max-abs difference from `key` of `expected_dir/expected.safetensors` over the row's real
/// positions, after checking the printed shape.
fn worst_row_diff(model: &Path, adapter: Option<&Path>, expected_dir: &Path, key: &str) -> f64 {
    let inp = read_json(&model.join("inputs.json"));
    let cfg = read_json(&model.join("config.json"));
    let model_type = cfg["model_type"].as_str().unwrap_or("");
    let ids = rows_u32(&inp["input_ids"]);
    let mask = rows_u32(&inp["attention_mask"]);
    let types = inp.get("token_type_ids").map(rows_u32);
    let dec = inp.get("decoder_input_ids").map(rows_u32);
    let want = tilpass::core::Checkpoint::open(expected_dir.join("expected.safetensors"))
        .unwrap()
        .read_f32(key)
        .unwrap();
    let batch = want.shape[0];
    assert_eq!(batch, ids.len(), "{}", model.display());
    let per_row = want.data.len() / batch;
    let width = *want.shape.last().unwrap();
    // The LTG-BERT reference sets the masked-LM logits of NorBERT3's special tokens (ids
    // 0..=106) to -inf; tilpass returns the head's values, so those columns are skipped.
    let ltg_mlm = matches!(model_type, "norbert" | "ltgbert" | "norbert3") && want.shape.len() == 3;
    let mut worst = 0f64;
    for r in 0..batch {
        let keep: Vec<usize> = (0..mask[r].len()).filter(|&j| mask[r][j] == 1).collect();
        let row_ids: Vec<u32> = keep.iter().map(|&j| ids[r][j]).collect();
        let mut args: Vec<String> = vec![
            "logits".into(),
            "--model".into(),
            model.display().to_string(),
            "--ids".into(),
            join(&row_ids),
        ];
        if let Some(a) = adapter {
            args.extend(["--adapter".into(), a.display().to_string()]);
        }
        if let (Some(t), "bert") = (&types, model_type) {
            let tt: Vec<u32> = keep.iter().map(|&j| t[r][j]).collect();
            args.extend(["--token-type-ids".into(), join(&tt)]);
        }
        if let Some(d) = &dec {
            args.extend(["--decoder-ids".into(), join(&d[r])]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = ok_json(&tilpass(&args));
        let row = &want.data[r * per_row..(r + 1) * per_row];
        let (shape, want_row): (Vec<usize>, Vec<f32>) = match want.shape.len() {
            2 => (vec![1, width], row.to_vec()),
            3 if dec.is_some() => (vec![1, want.shape[1], width], row.to_vec()),
            3 => (
                vec![1, keep.len(), width],
                keep.iter()
                    .flat_map(|&j| row[j * width..(j + 1) * width].iter().copied())
                    .collect(),
            ),
            n => panic!("{}: logits of rank {n}", model.display()),
        };
        assert_eq!(
            v["shape"],
            serde_json::json!(shape),
            "{} row {r}",
            model.display()
        );
        let got = logits_of(&v);
        let d = if ltg_mlm {
            let cols = |x: &[f32]| -> Vec<f32> {
                x.iter()
                    .enumerate()
                    .filter(|(i, _)| i % width > 106)
                    .map(|(_, v)| *v)
                    .collect()
            };
            assert!(
                want_row
                    .iter()
                    .enumerate()
                    .all(|(i, v)| i % width > 106 || *v == f32::NEG_INFINITY),
                "the reference masks ids 0..=106"
            );
            max_abs_diff(&cols(&got), &cols(&want_row))
        } else {
            max_abs_diff(&got, &want_row)
        };
        worst = worst.max(d);
    }
    worst
}

/// `tilpass logits` on every family and head equals transformers (the public modelling code
/// for LTG-BERT and NorT5) on each row of the fixture batches.
#[test]
fn logits_of_every_fixture_model_match_the_reference() {
    for dir in logit_fixtures() {
        let d = worst_row_diff(&dir, None, &dir, "logits");
        assert!(d <= 1e-4, "{}: max abs diff {d}", dir.display());
    }
}

/// LoRA, prompt tuning and prefix tuning on a BERT classifier and on T5 through `--adapter`
/// equal PEFT.
#[test]
fn encoder_and_t5_adapters_in_logits_match_peft() {
    let root = fixtures_root();
    for (model, adapter) in [
        ("encoders/bert_cls", "peft/bert_cls_lora"),
        ("encoders/bert_cls", "peft/bert_cls_prompt"),
        ("encoders/bert_cls", "peft/bert_cls_prefix"),
        ("encoders/t5_v1_1", "peft/t5_lora"),
        ("encoders/t5_v1_1", "peft/t5_prompt"),
        ("encoders/t5_v1_1", "peft/t5_prefix"),
    ] {
        let a = root.join(adapter);
        let d = worst_row_diff(&root.join(model), Some(&a), &a, "logits");
        assert!(d <= 1e-4, "{adapter}: max abs diff {d}");
    }
    // A prompt adapter on a model without a prompt-learning path here is refused.
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        root.join("encoders/bert_mlm").to_str().unwrap(),
        "--adapter",
        root.join("peft/bert_cls_prompt").to_str().unwrap(),
        "--ids",
        "2,17,3",
    ]));
    assert!(err.contains("prompt-learning adapters"), "{err}");
}

/// `generate --ids` (no tokenizer in the fixture directories) equals transformers' greedy
/// decoding: decoders' `greedy_single`, T5 / NorT5 `greedy` and `beam4` for row 0.
#[test]
fn generate_from_ids_matches_the_reference() {
    let root = fixtures_root();
    let mut checked = 0;
    for dir in logit_fixtures() {
        let inp = read_json(&dir.join("inputs.json"));
        let (want, beams) = match (inp.get("greedy_single"), inp.get("greedy")) {
            (Some(g), _) => (g[0].clone(), None),
            (None, Some(g)) => (g[0].clone(), inp.get("beam4").map(|b| b[0].clone())),
            (None, None) => continue,
        };
        let mask = rows_u32(&inp["attention_mask"]);
        let row0: Vec<u32> = rows_u32(&inp["input_ids"])[0]
            .iter()
            .zip(&mask[0])
            .filter(|(_, m)| **m == 1)
            .map(|(t, _)| *t)
            .collect();
        let n = inp["max_new_tokens"].to_string();
        let m = dir.to_str().unwrap();
        let ids = join(&row0);
        let v = ok_json(&tilpass(&[
            "generate",
            "--model",
            m,
            "--ids",
            &ids,
            "--max-new-tokens",
            &n,
            "--json",
        ]));
        assert_eq!(v["ids"], want, "{m}");
        assert_eq!(v["prompt_ids"], serde_json::json!(row0), "{m}");
        assert!(v.get("text").is_none(), "no tokenizer, no text: {v}");
        if let Some(beams) = beams {
            let v = ok_json(&tilpass(&[
                "generate",
                "--model",
                m,
                "--ids",
                &ids,
                "--max-new-tokens",
                &n,
                "--num-beams",
                "4",
                "--json",
            ]));
            assert_eq!(v["ids"], beams, "{m} beam search");
        }
        checked += 1;
    }
    assert!(checked >= 7, "{checked} fixtures with generation results");
    // Without --json and without a tokenizer: the new ids, space-separated.
    let gpt2 = root.join("models/gpt2");
    let inp = read_json(&gpt2.join("inputs.json"));
    let want: Vec<u32> = serde_json::from_value(inp["greedy_single"][0].clone()).unwrap();
    let out = tilpass(&[
        "generate",
        "--model",
        gpt2.to_str().unwrap(),
        "--ids",
        &join(&rows_u32(&inp["input_ids"])[0]),
        "--max-new-tokens",
        &inp["max_new_tokens"].to_string(),
    ]);
    assert!(out.status.success());
    let printed: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(printed, want);
}

#[test]
fn logits_and_generate_refuse_what_a_model_cannot_do() {
    let root = fixtures_root();
    let bert_mlm = root.join("encoders/bert_mlm");
    let logits = |dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "logits",
            "--model",
            dir.to_str().unwrap(),
            "--ids",
            "2,17,42",
        ];
        args.extend_from_slice(extra);
        tilpass(&args)
    };
    // A bare encoder has hidden states, not logits.
    let bare = copy_dir(&bert_mlm);
    edit_config(bare.path(), |c| {
        c.insert("architectures".into(), serde_json::json!(["BertModel"]));
    });
    let err = bad_input(&logits(bare.path(), &[]));
    assert!(
        err.contains("BertModel") && err.contains("tilpass embed"),
        "{err}"
    );
    // A class without a head here: named, with what BERT supports.
    edit_config(bare.path(), |c| {
        c.insert(
            "architectures".into(),
            serde_json::json!(["BertForQuestionAnswering"]),
        );
    });
    let err = bad_input(&logits(bare.path(), &[]));
    assert!(
        err.contains("BertForQuestionAnswering") && err.contains("*ForTokenClassification"),
        "{err}"
    );
    // No `architectures`: BERT loads as BertForMaskedLM (AutoModelForMaskedLM's class) ...
    edit_config(bare.path(), |c| {
        c.remove("architectures");
    });
    let d = worst_row_diff(bare.path(), None, &bert_mlm, "logits");
    assert!(d <= 1e-4, "{d}");
    // ... which a classifier checkpoint cannot be.
    let cls = copy_dir(&root.join("encoders/bert_cls"));
    edit_config(cls.path(), |c| {
        c.remove("architectures");
    });
    let err = bad_input(&logits(cls.path(), &[]));
    assert!(
        err.contains("no `architectures`") && err.contains("BertForMaskedLM"),
        "{err}"
    );
    // Flags of other families.
    let err = bad_input(&logits(
        &root.join("encoders/bert_cls"),
        &["--decoder-ids", "0"],
    ));
    assert!(err.contains("decoder ids"), "{err}");
    let llama = root.join("models/llama_gqa");
    let err = bad_input(&logits(&llama, &["--token-type-ids", "0,0,0"]));
    assert!(err.contains("token type ids are for BERT"), "{err}");
    let err = bad_input(&logits(&bert_mlm, &["--token-type-ids", "0,1"]));
    assert!(err.contains("2 token type ids for 3"), "{err}");
    // generate needs a decoder or an encoder-decoder, and --prompt needs a tokenizer.
    let err = bad_input(&tilpass(&[
        "generate",
        "--model",
        root.join("encoders/bert_cls").to_str().unwrap(),
        "--ids",
        "2,17",
    ]));
    assert!(err.contains("`generate` needs a causal LM"), "{err}");
    let err = bad_input(&tilpass(&[
        "generate",
        "--model",
        llama.to_str().unwrap(),
        "--prompt",
        "Hei",
    ]));
    assert!(err.contains("no tokenizer found"), "{err}");
    let err = bad_input(&tilpass(&[
        "generate",
        "--model",
        llama.to_str().unwrap(),
        "--ids",
        "1,17",
        "--stop",
        "x",
    ]));
    assert!(err.contains("--stop needs the model's tokenizer"), "{err}");
    // Exactly one of --prompt and --ids (clap's usage error, exit 2).
    for args in [
        vec!["generate", "--model", "m", "--prompt", "Hei", "--ids", "1"],
        vec!["generate", "--model", "m"],
    ] {
        let out = tilpass(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--ids") && err.contains("--prompt"), "{err}");
    }
}

/// Sets the first value of an f32 tensor of a safetensors file to NaN.
fn poison_tensor(file: &Path, name: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header[name]["dtype"], "F32", "{name}");
    let start = 8 + n + header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn non_finite_logits_exit_2() {
    let dir = copy_dir(&fixtures_root().join("models/llama_gqa"));
    poison_tensor(&dir.path().join("model.safetensors"), "model.norm.weight");
    let err = bad_input(&tilpass(&[
        "logits",
        "--model",
        dir.path().to_str().unwrap(),
        "--ids",
        "1,17,42",
    ]));
    assert!(err.contains("non-finite logits (NaN/inf)"), "{err}");
}

/// `generate --json` says why it stopped: `length` at --max-new-tokens, `context` when the
/// model's context ended it first (no EOS id, so only the limits can end it).
#[test]
fn generate_reports_its_stop_reason() {
    let dir = copy_dir(&fixture_dir("llama_gqa"));
    edit_config(dir.path(), |c| {
        c.insert("eos_token_id".into(), Value::Null);
        c.insert("max_position_embeddings".into(), 16.into());
    });
    let m = dir.path().to_str().unwrap();
    let gen_json = |max: &str| {
        ok_json(&tilpass(&[
            "generate",
            "--model",
            m,
            "--ids",
            "1,17,42,99,200,3,5,7,11,13",
            "--max-new-tokens",
            max,
            "--json",
        ]))
    };
    let v = gen_json("3");
    assert_eq!(v["stop_reason"], "length", "{v}");
    assert_eq!(v["ids"].as_array().unwrap().len(), 3);
    let v = gen_json("100");
    assert_eq!(v["stop_reason"], "context", "{v}");
    assert_eq!(
        v["ids"].as_array().unwrap().len(),
        6,
        "16 positions - 10 prompt ids"
    );
}

/// A chat whose history outgrows the context drops its oldest turns, says so on stderr and
/// keeps answering.
#[test]
fn chat_drops_the_oldest_turns_when_the_history_outgrows_the_context() {
    use std::io::Write;
    let dir = model_with_tokenizer("llama_gqa");
    edit_config(dir.path(), |c| {
        c.insert("max_position_embeddings".into(), 48.into());
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_tilpass"))
        .args([
            "chat",
            "--model",
            dir.path().to_str().unwrap(),
            "--chat-template",
            "norsk",
            "--max-new-tokens",
            "4",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = (0..8)
        .map(|i| format!("t{} t{} t{} t{} t{}\n", i + 5, i + 6, i + 7, i + 8, i + 9))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("oldest turn was dropped"), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 8, "every line answered: {text}");
}

/// `train sft` on an encoder-decoder directory (T5.1.1): LoRA with targets in both stacks
/// (PEFT task SEQ_2_SEQ_LM), evaluation and checkpoints; `--full` saves a loadable model in HF
/// layout; `--packing` is refused with the setting named.
#[test]
fn train_sft_takes_an_encoder_decoder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/t5_v1_1");
    let dir = with_tokenizer(&src);
    // Targets end in EOS: the word-level tokenizer's `t1` (T5's `</s>` id), padding `t0`.
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"eos_token": "t1", "pad_token": "t0"}"#,
    );
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Two-turn conversations: two examples each (one per assistant turn).
    let rows: String = (0..8)
        .map(|i| {
            serde_json::json!({"messages": [
                {"role": "user", "content": format!("t{} t{}", 10 + i, 20 + i)},
                {"role": "assistant", "content": "t40 t41 t42"},
                {"role": "user", "content": format!("t{}", 30 + i)},
                {"role": "assistant", "content": "t43 t44"},
            ]})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "chat.jsonl", &rows);
    let out = work.path().join("lora");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--model",
        m,
        "--data",
        &data,
        "--eval-data",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--lora-r",
        "4",
        "--target-modules",
        "q,v,wi_0",
        "--lr",
        "0.01",
        "--batch-size",
        "4",
        "--steps",
        "8",
        "--eval-steps",
        "4",
        "--eval-on-start",
        "--save-steps",
        "4",
        "--sample-max-new-tokens",
        "4",
    ]));
    assert_eq!(v["summary"]["steps"], 8);
    let adapter = out.join("adapter");
    assert_eq!(v["adapter"], adapter.to_str().unwrap());
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    assert!(
        out.join("checkpoint-8")
            .join("optimizer.safetensors")
            .is_file()
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter_map(|v| v["eval_loss"].as_f64())
        .collect();
    assert_eq!(evals.len(), 3, "on start, after 4 and 8 steps");
    assert!(evals[2] < evals[0], "eval loss falls: {evals:?}");
    // 16 examples (one per assistant turn), grouped by length: the first batch holds four
    // second turns (the longer history), each target `t43 t44` + EOS.
    let first: Value = serde_json::from_str(
        metrics
            .lines()
            .find(|l| l.contains("\"grad_norm\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["tokens"], 4 * 3, "{first}");

    // Resumed from the step-4 checkpoint, the run ends with the same adapter, byte for byte.
    let resumed = work.path().join("resumed");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        resumed.to_str().unwrap(),
        "--lora-r",
        "4",
        "--target-modules",
        "q,v,wi_0",
        "--lr",
        "0.01",
        "--batch-size",
        "4",
        "--steps",
        "8",
        "--resume",
        out.join("checkpoint-4").to_str().unwrap(),
    ]));
    assert_eq!(v["summary"]["steps"], 8);
    assert_eq!(
        std::fs::read(resumed.join("adapter/adapter_model.safetensors")).unwrap(),
        std::fs::read(adapter.join("adapter_model.safetensors")).unwrap(),
        "exact resume"
    );

    // Flags that mean nothing for an encoder-decoder are refused, naming the setting.
    let err = bad_input(&tilpass(&[
        "train",
        "sft",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        work.path().join("packed").to_str().unwrap(),
        "--packing",
    ]));
    assert!(
        err.contains("packing") && err.contains("encoder-decoder"),
        "{err}"
    );

    // Full fine-tuning: the saved model (HF layout) loads and differs from the base.
    let full = work.path().join("full");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--full",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        full.to_str().unwrap(),
        "--steps",
        "2",
        "--lr",
        "0.001",
    ]));
    let model = full.join("model");
    assert_eq!(v["model"], model.to_str().unwrap());
    let logits = |dir: &str| {
        ok_json(&tilpass(&[
            "logits",
            "--model",
            dir,
            "--ids",
            "2,17,42",
            "--decoder-ids",
            "0,5,9",
        ]))
    };
    let (before, after) = (logits(m), logits(model.to_str().unwrap()));
    assert_eq!(before["shape"], after["shape"]);
    assert_ne!(before["logits"], after["logits"]);
}

/// The issue's command on a NorT5 directory: `train sft --model NORT5_DIR --data
/// builtin:norsk-chat --out run` (the tokenizer names no EOS: targets end in the model's).
#[test]
fn train_sft_chat_tunes_a_nort5_on_norsk_chat() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders/nort5");
    let dir = with_tokenizer(&src);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("run");
    let v = ok_json(&tilpass(&[
        "train",
        "sft",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        "builtin:norsk-chat",
        "--eval-data",
        "builtin:norsk-chat:eval",
        "--out",
        out.to_str().unwrap(),
        "--target-modules",
        "in_proj_q,in_proj_v",
        "--max-length",
        "64",
        "--steps",
        "2",
        "--eval-steps",
        "2",
        "--eval-samples",
        "1",
        "--sample-max-new-tokens",
        "2",
    ]));
    assert_eq!(v["summary"]["steps"], 2);
    let last = v["summary"]["last_eval"]["eval_loss"].as_f64().unwrap();
    assert!(last.is_finite() && last > 0.0, "{v}");
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["in_proj_q", "in_proj_v"])
    );
    // The issue's second command: `chat --model NORT5_DIR --adapter run/adapter`.
    let adapter = out.join("adapter");
    let (answers, _) = chat_lines(
        &[
            "--model",
            dir.path().to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--max-new-tokens",
            "3",
            "--temperature",
            "0.8",
            "--seed",
            "1",
        ],
        "Hei! Korleis går det?\n",
    );
    assert_eq!(answers.len(), 1, "{answers:?}");
}

/// `train sft --peft prompt|p-tuning|prefix` on encoder-decoders and a decoder: the adapter is
/// saved in PEFT's format (task SEQ_2_SEQ_LM / CAUSAL_LM), `generate --adapter` applies it (its
/// first greedy token is the argmax of `logits --adapter` at the decoder start), and settings
/// that do not fit the method are refused before any work.
#[test]
fn train_sft_prompt_learning_on_encoder_decoders_and_decoders() {
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..6)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                               "completion": format!(" t{} t{}", 40 + i, 50 + i)})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "train.jsonl", &rows);
    let cases: [(&str, &[&str], &str, &str); 4] = [
        (
            "nort5",
            &["--peft", "prompt"],
            "PROMPT_TUNING",
            "SEQ_2_SEQ_LM",
        ),
        (
            "t5_v1_1",
            &[
                "--peft",
                "prefix",
                "--prefix-projection",
                "--encoder-hidden-size",
                "8",
            ],
            "PREFIX_TUNING",
            "SEQ_2_SEQ_LM",
        ),
        (
            "t5_v1_1",
            &["--peft", "p-tuning"],
            "P_TUNING",
            "SEQ_2_SEQ_LM",
        ),
        (
            "llama_gqa",
            &["--peft", "prefix"],
            "PREFIX_TUNING",
            "CAUSAL_LM",
        ),
    ];
    for (i, (model, flags, peft_type, task)) in cases.into_iter().enumerate() {
        let src = prompt_fixture(model);
        let dir = with_tokenizer(&src);
        let m = dir.path().to_str().unwrap();
        let out = work.path().join(format!("run{i}"));
        let o = out.to_str().unwrap();
        let mut args = vec![
            "train",
            "sft",
            "--model",
            m,
            "--data",
            &data,
            "--out",
            o,
            "--steps",
            "2",
            "--batch-size",
            "3",
            "--lr",
            "0.01",
            "--num-virtual-tokens",
            "3",
            "--save-steps",
            "1",
        ];
        args.extend_from_slice(flags);
        let v = ok_json(&tilpass(&args));
        assert_eq!(v["summary"]["steps"], 2, "{model}: {v}");
        let adapter = out.join("adapter");
        let cfg = read_json(&adapter.join("adapter_config.json"));
        assert_eq!(cfg["peft_type"], peft_type, "{model}");
        assert_eq!(cfg["task_type"], task, "{model}");
        assert_eq!(cfg["num_virtual_tokens"], 3, "{model}");
        assert!(
            out.join("checkpoint-2/optimizer.safetensors").is_file(),
            "{model}"
        );
        if task != "SEQ_2_SEQ_LM" {
            continue;
        }
        let a = adapter.to_str().unwrap();
        let logits = ok_json(&tilpass(&[
            "logits",
            "--model",
            m,
            "--adapter",
            a,
            "--ids",
            "10,20,30",
        ]));
        let first = logits_of(&logits);
        let argmax = first
            .iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |b, (j, x)| if *x > b.1 { (j, *x) } else { b },
            )
            .0;
        let g = ok_json(&tilpass(&[
            "generate",
            "--model",
            m,
            "--adapter",
            a,
            "--ids",
            "10,20,30",
            "--max-new-tokens",
            "1",
            "--json",
        ]));
        assert_eq!(
            g["ids"][0], argmax,
            "{model}: generate applies the adapter: {g}"
        );
        let plain = ok_json(&tilpass(&["logits", "--model", m, "--ids", "10,20,30"]));
        assert_ne!(
            logits_of(&plain),
            first,
            "{model}: the adapter changes the logits"
        );
    }
    // Settings that do not fit the method: typed errors naming the setting.
    let dir = with_tokenizer(&prompt_fixture("nort5"));
    let m = dir.path().to_str().unwrap();
    let base = [
        "train", "sft", "--model", m, "--data", &data, "--steps", "1",
    ];
    for (flags, needle) in [
        (&["--peft", "prompt"][..], "num_virtual_tokens"),
        (
            &["--peft", "prompt", "--num-virtual-tokens", "0"][..],
            "num_virtual_tokens",
        ),
        (
            &[
                "--peft",
                "prompt",
                "--num-virtual-tokens",
                "2",
                "--prefix-projection",
            ][..],
            "prefix_projection",
        ),
        (
            &[
                "--peft",
                "prompt",
                "--num-virtual-tokens",
                "2",
                "--encoder-hidden-size",
                "4",
            ][..],
            "encoder_hidden_size",
        ),
        (&["--num-virtual-tokens", "2"][..], "num_virtual_tokens"),
        (
            &["--peft", "p-tuning", "--num-virtual-tokens", "2", "--full"][..],
            "full",
        ),
        (
            &["--peft", "prefix", "--num-virtual-tokens", "2"][..],
            "NorT5",
        ),
    ] {
        let out = work.path().join("bad");
        let mut args = base.to_vec();
        args.extend(["--out", out.to_str().unwrap(), "--overwrite-output-dir"]);
        args.extend_from_slice(flags);
        let err = bad_input(&tilpass(&args));
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
}

fn prompt_fixture(name: &str) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    match name {
        "llama_gqa" => root.join("models").join(name),
        _ => root.join("encoders").join(name),
    }
}

#[test]
fn data_near_dedup_and_pii_pass_rows_through() {
    let dir = tempfile::tempdir().unwrap();
    let long = "Været i Bergen er vått og kaldt i dag, men i morgen kommer sola tilbake og det blir varmt og fint";
    let rows = [
        format!(r#"{{"id": 1, "messages":[{{"role":"user","content":"Hvordan blir været?"}},{{"role":"assistant","content":"{long}."}}], "meta": {{"src": "a"}}}}"#),
        r#"{"id": 2, "messages":[{"role":"user","content":"Takk"},{"role":"assistant","content":"Bare hyggelig, ring 22 33 44 55 eller skriv til kari@example.no."}]}"#.to_string(),
        format!(r#"{{"id": 3,  "messages":[{{"role":"user","content":"Hvordan blir været?"}},{{"role":"assistant","content":"{long}!"}}]}}"#),
    ];
    let input = write(
        dir.path(),
        "chat.jsonl",
        &format!("{}\n\n{}\n{}\n", rows[0], rows[1], rows[2]),
    );
    let out = dir.path().join("near.jsonl");
    let report = dir.path().join("near_report.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "near-dedup",
        &input,
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--threshold",
        "0.7",
        "--shingle",
        "words:3",
    ]));
    assert_eq!(
        (
            v["near_dedup"]["input"].as_u64(),
            v["near_dedup"]["removed"].as_u64()
        ),
        (Some(3), Some(1))
    );
    // Kept rows byte for byte (ids, metadata, key order, spacing), in input order.
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("{}\n{}\n", rows[0], rows[1])
    );
    let r: Value = serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
    assert_eq!(
        (r["line"].as_u64(), r["kept_line"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(r["reason"], "near-duplicate");
    assert!(r["jaccard"].as_f64().unwrap() >= 0.7);

    let red = dir.path().join("pii.jsonl");
    let pr = dir.path().join("pii_report.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "pii",
        &input,
        "--out",
        red.to_str().unwrap(),
        "--report",
        pr.to_str().unwrap(),
    ]));
    assert_eq!(
        (v["rows"].as_u64(), v["rows_changed"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(
        (v["found"]["phone"].as_u64(), v["found"]["email"].as_u64()),
        (Some(1), Some(1))
    );
    let lines: Vec<String> = std::fs::read_to_string(&red)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        (lines[0].as_str(), lines[2].as_str()),
        (rows[0].as_str(), rows[2].as_str())
    );
    let row: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(row["id"], 2);
    assert_eq!(
        row["messages"][1]["content"],
        "Bare hyggelig, ring [TELEFON] eller skriv til [EPOST]."
    );
    let report = std::fs::read_to_string(&pr).unwrap();
    assert!(
        report.contains("\"line\":3") && !report.contains("kari@"),
        "{report}"
    );

    // Prompt-completion rows: every text field.
    let pc = write(
        dir.path(),
        "pc.jsonl",
        "{\"prompt\": \"Mitt nummer er 41234567?\", \"completion\": \"Se https://www.nav.no/side.\", \"id\": \"x\"}\n",
    );
    let pc_out = dir.path().join("pc_out.jsonl");
    ok_json(&tilpass(&[
        "data",
        "pii",
        &pc,
        "--out",
        pc_out.to_str().unwrap(),
    ]));
    let row: Value = serde_json::from_str(&std::fs::read_to_string(&pc_out).unwrap()).unwrap();
    assert_eq!(row["completion"], "Se [URL].");
    assert_eq!(row["prompt"], "Mitt nummer er 41234567?");

    // Built-in datasets.
    for cmd in ["near-dedup", "pii"] {
        let o = dir.path().join(format!("{cmd}-builtin.jsonl"));
        let v = ok_json(&tilpass(&[
            "data",
            cmd,
            "builtin:norsk-chat",
            "--out",
            o.to_str().unwrap(),
        ]));
        assert!(
            std::fs::read_to_string(&o).unwrap().lines().count() > 300,
            "{v}"
        );
    }

    // Bad rows and settings: exit 2 naming file and line, nothing written.
    let bad = write(
        dir.path(),
        "bad.jsonl",
        &format!("{}\n{{\"messages\": 5}}\n", rows[0]),
    );
    let bad_out = dir.path().join("bad_out.jsonl");
    for cmd in ["near-dedup", "pii"] {
        let err = bad_input(&tilpass(&[
            "data",
            cmd,
            &bad,
            "--out",
            bad_out.to_str().unwrap(),
        ]));
        assert!(err.contains("bad.jsonl:line 2"), "{err}");
        assert!(!bad_out.exists());
        // pii streams into a temporary file beside the output: a bad row leaves none behind.
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("bad_out"))
            .collect();
        assert!(leftovers.is_empty(), "{cmd}: {leftovers:?}");
    }
    let err = bad_input(&tilpass(&[
        "data",
        "near-dedup",
        &input,
        "--out",
        bad_out.to_str().unwrap(),
        "--shingle",
        "bytes:3",
    ]));
    assert!(err.contains("words:N or chars:N"), "{err}");
    let err = bad_input(&tilpass(&["data", "near-dedup", &input, "--out", &input]));
    assert!(err.contains("out"), "{err}");
}

/// Every `tilpass data` command that writes a file refuses one that exists (exit 2, the file
/// untouched) unless `--overwrite`, then replaces it whole.
#[test]
fn data_commands_refuse_an_existing_output_unless_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(
        dir.path(),
        "chat.jsonl",
        r#"{"messages":[{"role":"user","content":"Kva heiter du?"},{"role":"assistant","content":"Eg heiter Kari og bur i Bergen, der det regnar mykje om hausten."}]}
"#,
    );
    let cases: [(&str, &[&str]); 4] = [
        ("dedup", &[]),
        ("near-dedup", &[]),
        ("pii", &[]),
        ("filter", &["--lang", "any", "--min-words", "1"]),
    ];
    for (cmd, extra) in cases {
        let out = dir.path().join(format!("{cmd}.out.jsonl"));
        std::fs::write(&out, "keep me\n").unwrap();
        let mut args = vec!["data", cmd, &input, "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let err = bad_input(&tilpass(&args));
        assert!(
            err.contains("--out") && err.contains("exists") && err.contains("--overwrite"),
            "{cmd}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me\n", "{cmd}");
        if cmd != "dedup" {
            // The report is checked too.
            let fresh = dir.path().join(format!("{cmd}.fresh.jsonl"));
            let report = dir.path().join(format!("{cmd}.report.jsonl"));
            std::fs::write(&report, "keep me too\n").unwrap();
            let mut args = vec!["data", cmd, &input, "--out", fresh.to_str().unwrap()];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["--report", report.to_str().unwrap()]);
            let err = bad_input(&tilpass(&args));
            assert!(err.contains("--report"), "{cmd}: {err}");
            assert!(!fresh.exists(), "{cmd}: nothing written");
            assert_eq!(std::fs::read_to_string(&report).unwrap(), "keep me too\n");
        }
        args.push("--overwrite");
        ok_json(&tilpass(&args));
        // Replaced whole (the filter's defaults may keep no row of this one).
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(!written.contains("keep me"), "{cmd}: {written}");
        assert!(
            cmd == "filter" || written.contains("Kari"),
            "{cmd}: {written}"
        );
    }
}

/// Few-shot `annotate` from the command line: shots, a Nynorsk verbalizer, contextual
/// calibration and a gold field give rows with `form`, `shots`, `uncalibrated` and a summary
/// whose agreement counts the rows (the values are checked in tests/all/lambert_fewshot.rs);
/// `--help` documents the flags.
#[test]
fn annotate_few_shot_flags_and_agreement_summary() {
    let dir = model_with_tokenizer("llama_gqa");
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: String = (0..6)
        .map(|i| {
            serde_json::json!({"text": format!("t{} t{}", 50 + i, 60 + i),
                "gold": if i % 2 == 0 { "a" } else { "b" }})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "texts.jsonl", &rows);
    let shots = write(
        work.path(),
        "shots.jsonl",
        "{\"text\": \"t20\", \"label\": \"a\"}\n{\"text\": \"t21 t22\", \"label\": \"b\"}\n",
    );
    let verb = write(
        work.path(),
        "verb.json",
        r#"{"a": {"nb": ["t5"], "nn": ["t6 t7"]}, "b": {"nb": ["t9"], "nn": ["t10", "t11"]}}"#,
    );
    let out = work.path().join("annotated.jsonl");
    let v = ok_json(&tilpass(&[
        "annotate",
        "--model",
        m,
        "--data",
        &data,
        "--labels",
        "a,b",
        "--template",
        "t1 {text} t30",
        "--shots",
        &shots,
        "--k",
        "2",
        "--shot-template",
        "t2 {text} t3 {label} t4 ",
        "--verbalizer",
        &verb,
        "--form",
        "nn",
        "--calibrate",
        "contextual",
        "--gold-field",
        "gold",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(v["rows"], 6, "{v}");
    assert_eq!(v["shots_dropped"], 0, "{v}");
    assert_eq!(v["agreement"]["rows"], 6, "{v}");
    let confusion: usize = v["agreement"]["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap() as usize)
        })
        .sum();
    assert_eq!(confusion, 6);
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let row: Value = serde_json::from_str(l).unwrap();
        assert_eq!(row["form"], "nn");
        assert_eq!(row["shots"], 2);
        assert!(row["uncalibrated"].is_object(), "{row}");
    }
    let help = String::from_utf8(tilpass(&["annotate", "--help"]).stdout).unwrap();
    for flag in [
        "--shots",
        "--k",
        "--shot-selection",
        "--embedder",
        "--shot-template",
        "--max-prompt-tokens",
        "--verbalizer",
        "--form",
        "--calibrate",
        "--gold-field",
    ] {
        assert!(help.contains(flag), "{flag} in --help");
    }
}
