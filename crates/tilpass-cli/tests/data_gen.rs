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
        json!([["[EPOST]", 1, 0]])
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
    let work = tempfile::tempdir().unwrap();
    // Seeds without answers, so that no prompt holds the answer label `Svar:`.
    let seed_texts = [
        "hva heter hovedstaden i norge",
        "skriv en setning om vann",
        "hvilket fylke ligger bergen i",
    ];
    let seeds = jsonl(
        work.path(),
        "seeds.jsonl",
        &[
            json!({"prompt": seed_texts[0]}),
            json!({"messages": [{"role": "user", "content": seed_texts[1]}]}),
            json!({"prompt": [{"role": "user", "content": seed_texts[2]}]}),
        ],
    );
    let run_with = |out: &Path, m: &Path| {
        tilpass(&[
            "data",
            "self-instruct",
            "--seeds",
            &seeds,
            "--out",
            out.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--num",
            "3",
            "--max-attempts",
            "30",
            "--batch-size",
            "4",
            "--max-new-tokens",
            "16",
            "--seed",
            "1",
            "--num-examples",
            "2",
        ])
    };
    // A probe run finds the word the sampled outputs hold most often (and no prompt holds:
    // the prompts' ids stay the same); that word becomes the answer label.
    let mut words = bokmal_words(256);
    let probe = model_with_words(&words);
    let probe_out = work.path().join("probe.jsonl");
    ok_json(&run_with(&probe_out, probe.path()));
    let prompt_words = format!(
        "{} {}",
        tilpass::train::runs::self_instruct::default_header(tilpass::train::runs::WrittenForm::Nb),
        seed_texts.join(" ")
    )
    .to_lowercase();
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for r in read_jsonl(&work.path().join("probe.jsonl.rejects.jsonl")) {
        for w in r["text"].as_str().unwrap().split_whitespace().skip(3) {
            if w != "[UNK]"
                && !prompt_words
                    .split(|c: char| !c.is_alphabetic())
                    .any(|p| p == w)
            {
                *count.entry(w.to_string()).or_default() += 1;
            }
        }
    }
    let label = count.iter().max_by_key(|(_, n)| **n).unwrap().0.clone();
    let id = words.iter().position(|w| *w == label).unwrap();
    words[id] = "Svar:".into();
    let model = model_with_words(&words);
    let run = |out: &Path| run_with(out, model.path());
    let out = work.path().join("si.jsonl");
    let v = ok_json(&run(&out));
    let rejects_path = work.path().join("si.jsonl.rejects.jsonl");
    assert_eq!(v["rejects"], rejects_path.display().to_string());
    let accepted = read_jsonl(&out);
    let rejects = read_jsonl(&rejects_path);
    assert_eq!(accepted.len() as u64, v["accepted"].as_u64().unwrap());
    assert_eq!(rejects.len() as u64, v["rejected"].as_u64().unwrap());
    assert!(
        !accepted.is_empty(),
        "the fixture model should get a task through: {v}"
    );
    // Every attempt is in exactly one of the files, in order.
    let mut attempts: Vec<u64> = accepted
        .iter()
        .map(|r| r["self_instruct"]["attempt"].as_u64().unwrap())
        .chain(rejects.iter().map(|r| r["attempt"].as_u64().unwrap()))
        .collect();
    attempts.sort();
    assert_eq!(attempts, (0..attempts.len() as u64).collect::<Vec<_>>());
    assert_eq!(attempts.len() as u64, v["attempts"].as_u64().unwrap());
    let known = [
        "unparseable",
        "instruction_length",
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
    // Killed in the middle of the last line of the rejects report: the rerun ends equal.
    let (full_out, full_rej) = (
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(&rejects_path).unwrap(),
    );
    let last_accepted = accepted.last().unwrap()["self_instruct"]["attempt"]
        .as_u64()
        .unwrap();
    let cut_rej = rejects
        .iter()
        .position(|r| r["attempt"].as_u64().unwrap() > last_accepted / 2)
        .unwrap_or(0);
    let keep_out = accepted
        .iter()
        .filter(|r| {
            r["self_instruct"]["attempt"].as_u64().unwrap()
                < rejects[cut_rej]["attempt"].as_u64().unwrap()
        })
        .count();
    let out2 = work.path().join("again.jsonl");
    let rej2 = work.path().join("again.jsonl.rejects.jsonl");
    let prefix: usize = full_out
        .split_inclusive('\n')
        .take(keep_out)
        .map(str::len)
        .sum();
    std::fs::write(&out2, &full_out[..prefix]).unwrap();
    std::fs::write(&rej2, &full_rej[..mid_line(&full_rej, cut_rej)]).unwrap();
    std::fs::copy(
        work.path().join("si.jsonl.run.json"),
        work.path().join("again.jsonl.run.json"),
    )
    .unwrap();
    ok_json(&run(&out2));
    assert_eq!(std::fs::read_to_string(&out2).unwrap(), full_out);
    assert_eq!(std::fs::read_to_string(&rej2).unwrap(), full_rej);
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
        model.path().to_str().unwrap(),
    ]));
    assert!(err.contains("bad.jsonl:2"), "{err}");
}

#[test]
fn self_instruct_rejects_a_repeat_of_an_earlier_task_by_rouge_l() {
    // Greedy decoding with one seed shows the model the same prompt every attempt: whatever it
    // writes first, it writes again, and the copy is rejected (ROUGE-L 1.0 >= 0.7). The answer
    // label is put where the model's first greedy output has its fourth word.
    let work = tempfile::tempdir().unwrap();
    let seeds = jsonl(
        work.path(),
        "seeds.jsonl",
        &[json!({"prompt": "hva heter hovedstaden i norge"})],
    );
    let args = |out: &Path, m: &Path| -> Vec<String> {
        [
            "data",
            "self-instruct",
            "--seeds",
            &seeds,
            "--out",
            out.to_str().unwrap(),
            "--model",
            m.to_str().unwrap(),
            "--num",
            "2",
            "--max-attempts",
            "3",
            "--do-sample",
            "false",
            "--max-new-tokens",
            "12",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |out: &Path, m: &Path| {
        let a = args(out, m);
        tilpass(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let mut words = bokmal_words(256);
    let probe = model_with_words(&words);
    let out = work.path().join("probe.jsonl");
    ok_json(&run(&out, probe.path()));
    let first = &read_jsonl(&work.path().join("probe.jsonl.rejects.jsonl"))[0];
    // A word at position >= 3 that the prompt does not hold (so the prompt's ids stay the
    // same); the seed has no answer, so the prompt holds no `Svar:` either.
    let prompt_words = format!(
        "{} hva heter hovedstaden i norge",
        tilpass::train::runs::self_instruct::default_header(tilpass::train::runs::WrittenForm::Nb)
    )
    .to_lowercase();
    let generated: Vec<&str> = first["text"].as_str().unwrap().split_whitespace().collect();
    let label = generated[3..generated.len() - 1]
        .iter()
        .find(|w| {
            **w != "[UNK]"
                && !prompt_words
                    .split(|c: char| !c.is_alphabetic())
                    .any(|p| p == **w)
        })
        .expect("a word to turn into the answer label")
        .to_string();
    let id = words.iter().position(|w| *w == label).unwrap();
    words[id] = "Svar:".into();
    let model = model_with_words(&words);
    let out = work.path().join("si.jsonl");
    let v = ok_json(&run(&out, model.path()));
    let rejects = read_jsonl(&work.path().join("si.jsonl.rejects.jsonl"));
    let accepted = read_jsonl(&out);
    assert_eq!(accepted.len(), 1, "{v}");
    assert!(!rejects.is_empty(), "{v}");
    for r in &rejects {
        assert_eq!(r["reason"], "rouge_l", "{r}");
        assert_eq!(r["rouge_l"], 1.0);
        assert_eq!(r["most_similar"], accepted[0]["messages"][0]["content"]);
    }
}
