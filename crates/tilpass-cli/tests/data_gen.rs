//! End-to-end tests of `tilpass data translate` and `tilpass data self-instruct` on the tiny
//! random Llama fixture with word-level tokenizers: every row and field kept, quality objects,
//! resume after a kill (a torn output) equal byte for byte to an uninterrupted run, refusals of
//! foreign outputs, other configs and bad rows. (What the random model writes is noise; the
//! point is the bookkeeping around it.)

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

mod common;
use common::{bad_input, ok_json, tilpass};

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/models")
        .join(name)
}

/// A copy of the Llama fixture with a word-level tokenizer of `words` (id = position; the first
/// is the unknown token).
fn model_with_words(words: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_dir("llama_gqa")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let vocab: Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), Value::from(i)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": words[0]}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn t_words() -> Vec<String> {
    (0..256).map(|i| format!("t{i}")).collect()
}

fn jsonl(dir: &Path, name: &str, rows: &[Value]) -> String {
    let p = dir.join(name);
    let body: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The byte offset of the middle of line `n` (0-based) of `text`.
fn mid_line(text: &str, n: usize) -> usize {
    let start: usize = text.split_inclusive('\n').take(n).map(str::len).sum();
    let len = text.split_inclusive('\n').nth(n).unwrap().len();
    start + len / 2
}

#[test]
fn translate_keeps_rows_and_fields_resumes_exactly_and_refuses_what_is_not_its_own() {
    let model = model_with_words(&t_words());
    let m = model.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows = vec![
        json!({"id": 0, "messages": [
            {"role": "system", "content": "t4 t5"},
            {"role": "user", "content": "t5 t6 {name} `code` t7", "name": "kari"},
            {"role": "assistant", "content": "t9 t10"}]}),
        json!({"id": 1, "text": "t11 t12 [EPOST]", "meta": {"source": "x"}}),
        json!({"id": 2, "prompt": "t3 t4", "completion": "```py\nprint(1)\n```"}),
        json!({"id": 3, "instruction": "t20 t21", "input": "", "output": "t22"}),
        json!({"id": 4, "prompt": [{"role": "user", "content": "t30"}],
               "chosen": [{"role": "assistant", "content": "t31"}],
               "rejected": [{"role": "assistant", "content": "t32"}]}),
        json!({"id": 5, "prompt": "t40 t41", "completion": "t42", "label": true}),
        json!({"id": 6, "text": "t50 t51 t52"}),
    ];
    let data = jsonl(work.path(), "in.jsonl", &rows);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "data",
            "translate",
            &data,
            "--out",
            out.to_str().unwrap(),
            "--model",
            m,
            "--batch-size",
            "3",
            "--max-new-tokens",
            "5",
            "--template",
            "t1 t2 {text} t3",
            "--round-trip",
        ];
        args.extend_from_slice(extra);
        tilpass(&args)
    };
    let full = work.path().join("full.jsonl");
    let v = ok_json(&run(&full, &[]));
    assert_eq!(
        (v["rows"].as_u64(), v["written"].as_u64()),
        (Some(7), Some(7))
    );
    let out = read_jsonl(&full);
    assert_eq!(out.len(), rows.len());
    for (src, got) in rows.iter().zip(&out) {
        // Every input field is kept, non-text fields unchanged, a `quality` object added.
        for (k, v) in src.as_object().unwrap() {
            let g = &got[k];
            match v {
                Value::Array(msgs) => {
                    let g = g.as_array().unwrap();
                    assert_eq!(g.len(), msgs.len());
                    for (a, b) in msgs.iter().zip(g) {
                        assert_eq!(a["role"], b["role"]);
                        assert_eq!(a.get("name"), b.get("name"));
                    }
                }
                Value::String(_) => assert!(g.is_string(), "{k} in {got}"),
                other => assert_eq!(other, g, "{k}"),
            }
        }
        let q = &got["quality"];
        assert_eq!(
            q["ok"],
            json!(q["flags"].as_array().unwrap().is_empty()),
            "{q}"
        );
        assert!(
            q["round_trip_chrf"].is_number() || q["translated"] == 0,
            "{q}"
        );
    }
    // Code alone is copied, not sent to the model; empty Alpaca input stays empty.
    assert_eq!(out[2]["completion"], "```py\nprint(1)\n```");
    assert_eq!(out[3]["input"], "");
    // The random model drops the placeholder [EPOST] (its word-level tokenizer cannot even
    // write it): the row says so.
    let flags = out[1]["quality"]["flags"].as_array().unwrap();
    assert!(flags.contains(&json!("placeholders_changed")), "{}", out[1]);
    assert_eq!(
        out[1]["quality"]["placeholder_changes"],
        json!([{"field": "text", "placeholder": "[EPOST]", "source": 1, "output": 0}])
    );
    let full_text = std::fs::read_to_string(&full).unwrap();

    // A kill in the middle of a row (line 5, inside the second batch) and a kill between rows
    // of a batch (after row 4): the reruns write exactly the uninterrupted output.
    for cut in [
        mid_line(&full_text, 4),
        mid_line(&full_text, 4) - full_text.lines().nth(4).unwrap().len() / 2,
    ] {
        let out = work.path().join("resumed.jsonl");
        std::fs::copy(&full, &out).unwrap();
        std::fs::copy(
            work.path().join("full.jsonl.run.json"),
            work.path().join("resumed.jsonl.run.json"),
        )
        .unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
        f.set_len(cut as u64).unwrap();
        let v = ok_json(&run(&out, &[]));
        assert_eq!(v["resumed"], 4, "{v}");
        assert_eq!(v["written"], 3, "{v}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), full_text);
        std::fs::remove_file(&out).unwrap();
    }
    // A finished run rerun writes nothing.
    let v = ok_json(&run(&full, &[]));
    assert_eq!(
        (v["resumed"].as_u64(), v["written"].as_u64()),
        (Some(7), Some(0))
    );
    assert_eq!(std::fs::read_to_string(&full).unwrap(), full_text);

    // Another config on the same output is refused, naming the setting.
    let err = bad_input(&run(&full, &["--to", "nn"]));
    assert!(
        err.contains("`to` = \"nb\"") && err.contains("\"nn\""),
        "{err}"
    );
    // An output holding someone else's rows is refused and left alone.
    let foreign = work.path().join("foreign.jsonl");
    std::fs::write(&foreign, "{\"x\": 1}\n").unwrap();
    let err = bad_input(&run(&foreign, &[]));
    assert!(err.contains("foreign content"), "{err}");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "{\"x\": 1}\n");
    // Bad rows: file:line, before anything is written.
    let bad = jsonl(
        work.path(),
        "bad.jsonl",
        &[json!({"text": "t1"}), json!({"text": 3})],
    );
    let o = work.path().join("o.jsonl");
    let err = bad_input(&tilpass(&[
        "data",
        "translate",
        &bad,
        "--out",
        o.to_str().unwrap(),
        "--model",
        m,
    ]));
    assert!(err.contains("bad.jsonl:2"), "{err}");
    assert!(!o.exists() && !work.path().join("o.jsonl.run.json").exists());
    let bad = jsonl(
        work.path(),
        "bad2.jsonl",
        &[json!({"text": "t1", "quality": 1})],
    );
    let err = bad_input(&tilpass(&[
        "data",
        "translate",
        &bad,
        "--out",
        o.to_str().unwrap(),
        "--model",
        m,
    ]));
    assert!(
        err.contains("bad2.jsonl:1") && err.contains("quality"),
        "{err}"
    );
    // The output may not be the input.
    let err = bad_input(&tilpass(&[
        "data",
        "translate",
        &data,
        "--out",
        &data,
        "--model",
        m,
    ]));
    assert!(err.contains("out"), "{err}");
}

/// Bokmål words from the embedded norsk-chat conversations, most frequent first, behind an
/// unknown token: the random model's output reads as (nonsense) Bokmål.
fn bokmal_words(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/norsk-chat.jsonl"),
    )
    .unwrap();
    let mut count = std::collections::HashMap::<String, usize>::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["lang"] != "nb" {
            continue;
        }
        for m in v["messages"].as_array().unwrap() {
            for w in m["content"].as_str().unwrap().split_whitespace() {
                let w = w.trim_matches(|c: char| !c.is_alphabetic()).to_lowercase();
                if !w.is_empty() && w.chars().all(char::is_alphabetic) {
                    *count.entry(w).or_default() += 1;
                }
            }
        }
    }
    let mut words: Vec<(String, usize)> = count.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    std::iter::once("[UNK]".to_string())
        .chain(words.into_iter().map(|w| w.0).take(n - 1))
        .collect()
}

#[test]
fn self_instruct_filters_reports_rejects_and_resumes_exactly() {
    // The random model writes Bokmål words of norsk-chat and never a newline: each attempt's
    // instruction is its whole first generation, and the answer a second one.
    let model = model_with_words(&bokmal_words(256));
    let m = model.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let seed_texts = [
        "hva heter hovedstaden i norge",
        "skriv en setning om vann",
        "hvilket fylke ligger bergen i",
    ];
    let seeds = jsonl(
        work.path(),
        "seeds.jsonl",
        &[
            json!({"instruction": seed_texts[0], "input": "", "output": "oslo"}),
            json!({"messages": [{"role": "user", "content": seed_texts[1]},
                                {"role": "assistant", "content": "vann er godt"}]}),
            json!({"prompt": seed_texts[2], "completion": "vestland"}),
        ],
    );
    let run = |out: &Path, max_new: &str| {
        tilpass(&[
            "data",
            "self-instruct",
            "--seeds",
            &seeds,
            "--out",
            out.to_str().unwrap(),
            "--model",
            m,
            "--num",
            "6",
            "--max-attempts",
            "30",
            "--batch-size",
            "4",
            "--max-new-tokens",
            max_new,
            "--seed",
            "1",
            "--num-examples",
            "2",
        ])
    };
    let out = work.path().join("si.jsonl");
    // Instructions of 2 words are too short for the default 3..150: all rejected as such.
    let short = work.path().join("short.jsonl");
    let v = ok_json(&run(&short, "2"));
    assert_eq!(v["accepted"], 0, "{v}");
    assert_eq!(v["reasons"], json!({"instruction_length": 30}), "{v}");
    let v = ok_json(&run(&out, "12"));
    let rejects_path = work.path().join("si.jsonl.rejects.jsonl");
    assert_eq!(v["rejects"], rejects_path.display().to_string());
    let accepted = read_jsonl(&out);
    let rejects = read_jsonl(&rejects_path);
    assert_eq!(accepted.len() as u64, v["accepted"].as_u64().unwrap());
    assert_eq!(rejects.len() as u64, v["rejected"].as_u64().unwrap());
    assert!(
        accepted.len() >= 2,
        "the fixture model should get tasks through: {v}"
    );
    // Every attempt is in exactly one of the files.
    let mut attempts: Vec<u64> = accepted
        .iter()
        .map(|r| r["self_instruct"]["attempt"].as_u64().unwrap())
        .chain(rejects.iter().map(|r| r["attempt"].as_u64().unwrap()))
        .collect();
    attempts.sort();
    assert_eq!(attempts, (0..attempts.len() as u64).collect::<Vec<_>>());
    assert_eq!(attempts.len() as u64, v["attempts"].as_u64().unwrap());
    let known = [
        "empty_instruction",
        "instruction_length",
        "empty_answer",
        "language",
        "written_form",
        "rouge_l",
    ];
    for r in &rejects {
        assert!(known.contains(&r["reason"].as_str().unwrap()), "{r}");
    }
    // Accepted tasks are TRL conversations whose instruction is far (ROUGE-L < 0.7) from the
    // seeds and from every task accepted before it, and read as Bokmål.
    let rouge = tilpass::metrics::Rouge::new(
        &[tilpass::metrics::RougeType::L],
        tilpass::metrics::RougeTokenizer::default(),
    );
    let mut seen: Vec<String> = seed_texts.iter().map(|s| s.to_string()).collect();
    for r in &accepted {
        let msgs = r["messages"].as_array().unwrap();
        assert_eq!(
            (msgs[0]["role"].as_str(), msgs[1]["role"].as_str()),
            (Some("user"), Some("assistant"))
        );
        assert!(!msgs[1]["content"].as_str().unwrap().is_empty());
        let inst = msgs[0]["content"].as_str().unwrap().to_string();
        assert!(inst.split_whitespace().count() >= 3, "{r}");
        let max = seen
            .iter()
            .map(|s| rouge.score(s, &inst).scores["rougeL"].fmeasure)
            .fold(0.0, f64::max);
        assert!(max < 0.7, "{r}");
        assert!((r["self_instruct"]["rouge_l_max"].as_f64().unwrap() - max).abs() < 1e-12);
        assert_eq!(r["self_instruct"]["lang"], "nb");
        seen.push(inst);
    }
    // Killed in the middle of writing attempt `cut`: the outputs hold the attempts before it
    // and a torn line; the rerun ends equal to the uninterrupted run.
    let (full_out, full_rej) = (
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&rejects_path).unwrap(),
    );
    let cut = attempts.len() as u64 / 2;
    let before = |text: &str, attempt: &dyn Fn(&Value) -> u64| -> String {
        text.lines()
            .filter(|l| attempt(&serde_json::from_str(l).unwrap()) < cut)
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let mut torn_out = before(&full_out, &|v| {
        v["self_instruct"]["attempt"].as_u64().unwrap()
    });
    let mut torn_rej = before(&full_rej, &|v| v["attempt"].as_u64().unwrap());
    let torn_line = full_out
        .lines()
        .chain(full_rej.lines())
        .find(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["attempt"]
                .as_u64()
                .or(v["self_instruct"]["attempt"].as_u64())
                == Some(cut)
        })
        .unwrap();
    if full_out.contains(torn_line) {
        torn_out.push_str(&torn_line[..torn_line.len() / 2]);
    } else {
        torn_rej.push_str(&torn_line[..torn_line.len() / 2]);
    }
    let out2 = work.path().join("again.jsonl");
    std::fs::write(&out2, torn_out).unwrap();
    std::fs::write(work.path().join("again.jsonl.rejects.jsonl"), torn_rej).unwrap();
    std::fs::copy(
        work.path().join("si.jsonl.run.json"),
        work.path().join("again.jsonl.run.json"),
    )
    .unwrap();
    let v2 = ok_json(&run(&out2, "12"));
    assert_eq!(
        v2["attempts"].as_u64(),
        Some(attempts.len() as u64 - cut),
        "{v2}"
    );
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), full_out);
    assert_eq!(
        std::fs::read_to_string(work.path().join("again.jsonl.rejects.jsonl")).unwrap(),
        full_rej
    );
    // Another setting on the same output is refused.
    let err = bad_input(&run(&out, "13"));
    assert!(err.contains("max_new_tokens"), "{err}");
    // A bad seed row is named by file and line.
    let bad = jsonl(
        work.path(),
        "bad.jsonl",
        &[
            json!({"instruction": "a b c", "output": "x"}),
            json!({"text": "no task"}),
        ],
    );
    let o = work.path().join("o.jsonl");
    let err = bad_input(&tilpass(&[
        "data",
        "self-instruct",
        "--seeds",
        &bad,
        "--out",
        o.to_str().unwrap(),
        "--model",
        m,
    ]));
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn self_instruct_rejects_a_repeat_of_an_earlier_task_by_rouge_l() {
    // Greedy decoding with one seed shows the model the same prompt at every attempt: it
    // writes the same task again, and the copy is rejected (ROUGE-L 1.0 >= 0.7).
    let model = model_with_words(&bokmal_words(256));
    let work = tempfile::tempdir().unwrap();
    let seeds = jsonl(
        work.path(),
        "seeds.jsonl",
        &[json!({"instruction": "hva heter hovedstaden i norge", "output": "oslo"})],
    );
    let out = work.path().join("si.jsonl");
    let v = ok_json(&tilpass(&[
        "data",
        "self-instruct",
        "--seeds",
        &seeds,
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.path().to_str().unwrap(),
        "--num",
        "2",
        "--max-attempts",
        "3",
        "--do-sample",
        "false",
        "--max-new-tokens",
        "8",
        "--format",
        "prompt_completion",
    ]));
    let rejects = read_jsonl(&work.path().join("si.jsonl.rejects.jsonl"));
    let accepted = read_jsonl(&out);
    assert_eq!((accepted.len(), rejects.len()), (1, 2), "{v}");
    assert!(accepted[0]["completion"].is_string());
    for r in &rejects {
        assert_eq!(r["reason"], "rouge_l", "{r}");
        assert_eq!(r["rouge_l"], 1.0);
        assert_eq!(r["most_similar"], accepted[0]["prompt"]);
    }
}

/// A copy of a fixture model (`models/...` or `encoders/...`) with the `tN` word-level tokenizer.
fn fixture_with_t_words(rel: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel);
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let words = t_words();
    let vocab: Map<String, Value> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), Value::from(i)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

#[test]
fn translations_are_what_tilpass_generate_writes_for_the_prompt_on_decoders_and_t5() {
    let work = tempfile::tempdir().unwrap();
    let texts = ["t5 t6 t7 t8", "t40 t41", "t90 t91 t92 t93 t94 t95"];
    let rows: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
    let data = jsonl(work.path(), "in.jsonl", &rows);
    for rel in ["models/llama_gqa", "models/gpt2", "encoders/t5_v1_1"] {
        let model = fixture_with_t_words(rel);
        let m = model.path().to_str().unwrap();
        let out = work.path().join(format!("{}.jsonl", rel.replace('/', "_")));
        // One row per batch: no padding, so the texts must equal single-prompt generation.
        ok_json(&tilpass(&[
            "data",
            "translate",
            &data,
            "--out",
            out.to_str().unwrap(),
            "--model",
            m,
            "--template",
            "t1 {text} t3",
            "--batch-size",
            "1",
            "--max-new-tokens",
            "6",
        ]));
        let got = read_jsonl(&out);
        for (t, row) in texts.iter().zip(&got) {
            let prompt = format!("t1 {t} t3");
            let v = ok_json(&tilpass(&[
                "generate",
                "--model",
                m,
                "--prompt",
                &prompt,
                "--max-new-tokens",
                "6",
                "--json",
            ]));
            assert_eq!(
                row["text"].as_str().unwrap(),
                v["text"].as_str().unwrap().trim(),
                "{rel}: {t}"
            );
        }
    }
    // A text longer than the decoder's context (128 positions) gets no translation, flagged;
    // the other row of its batch is still translated.
    let model = fixture_with_t_words("models/llama_gqa");
    let long: Vec<String> = (0..140).map(|i| format!("t{}", 10 + i % 200)).collect();
    let data = jsonl(
        work.path(),
        "long.jsonl",
        &[json!({"text": long.join(" ")}), json!({"text": "t5 t6"})],
    );
    let out = work.path().join("long-out.jsonl");
    ok_json(&tilpass(&[
        "data",
        "translate",
        &data,
        "--out",
        out.to_str().unwrap(),
        "--model",
        model.path().to_str().unwrap(),
        "--template",
        "{text}",
        "--max-new-tokens",
        "4",
    ]));
    let got = read_jsonl(&out);
    assert_eq!(got[0]["text"], "");
    assert!(
        got[0]["quality"]["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("empty_output"))
    );
    assert!(!got[1]["text"].as_str().unwrap().is_empty());
}
