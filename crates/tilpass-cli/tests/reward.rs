//! End-to-end tests of `tilpass train reward` and `tilpass reward score` on the tiny Llama
//! fixture with a word-level tokenizer (token `tN` has id N).

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

mod common;
use common::{bad_input, tilpass};

fn ok_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout lines are JSON"))
        .collect()
}

fn ok_json(out: &Output) -> Value {
    let mut v = ok_lines(out);
    assert_eq!(v.len(), 1, "one JSON line");
    v.remove(0)
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// A copy of the tiny Llama with a word-level tokenizer, EOS `t2` and pad `t0`.
fn model_dir() -> tempfile::TempDir {
    fixture_with_tokenizer("models/llama_gqa")
}

/// A copy of the fixture model `rel` (under tests/fixtures) with the word-level tokenizer.
fn fixture_with_tokenizer(rel: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel);
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("t{i}"), Value::from(i)))
        .collect();
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "t0"}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tok.to_string()).unwrap();
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"eos_token": "t2", "pad_token": "t0"}"#,
    );
    dir
}

fn pairs(n: usize, margin: bool) -> String {
    (0..n)
        .map(|i| {
            let mut row = json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                                 "chosen": format!(" t{} t{}", 40 + i % 3, 50),
                                 "rejected": format!(" t{} t{} t{}", 60 + i % 3, 70, 80)});
            if margin {
                row["margin"] = json!(0.5);
            }
            row.to_string() + "\n"
        })
        .collect()
}

#[test]
fn train_reward_defaults_are_trls_reward_config() {
    let out = tilpass(&["train", "reward", "--print-config"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("the config as JSON");
    for (k, want) in [
        ("lr", json!(1e-4)),
        ("max_length", json!(1024)),
        ("center_rewards_coefficient", Value::Null),
        ("batch_size", json!(8)),
        ("lr_scheduler_type", json!("linear")),
        ("warmup", json!(0)),
        ("max_grad_norm", json!(1.0)),
        ("weight_decay", json!(0.0)),
        ("adam_beta1", json!(0.9)),
        ("adam_beta2", json!(0.999)),
        ("adam_epsilon", json!(1e-8)),
    ] {
        assert_eq!(v[k], want, "default {k}");
    }
    assert_eq!(v["lora"]["modules_to_save"], json!(["score"]));
    assert_eq!(v["lora"]["task_type"], "SEQ_CLS");
}

#[test]
fn train_reward_then_score_rows() {
    let dir = model_dir();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = write(work.path(), "pref.jsonl", &pairs(12, true));
    let out = work.path().join("run");
    let train = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "reward",
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
            "--steps",
            "6",
            "--lr",
            "0.01",
            "--center-rewards-coefficient",
            "0.01",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok_json(&tilpass(&args))
    };
    let v = train(&out, &["--eval-data", &data, "--save-steps", "3"]);
    assert_eq!(v["summary"]["steps"], 6);
    // --eval-steps: the loop evaluates every 2 steps too (TRL's eval_ names); the evaluation
    // at the last step is the final one.
    let evals: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("eval_loss").is_some())
        .collect();
    assert_eq!(evals.len(), 2, "before and after training: {evals:?}");
    let out_every = work.path().join("run_every");
    let v2 = train(
        &out_every,
        &[
            "--eval-data",
            &data,
            "--eval-steps",
            "2",
            "--early-stopping-patience",
            "9",
        ],
    );
    let evals: Vec<Value> = std::fs::read_to_string(out_every.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("eval_loss").is_some())
        .collect();
    let at: Vec<u64> = evals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(
        at,
        [0, 2, 4, 6],
        "initial, then every 2 steps (the last is the final)"
    );
    for e in &evals {
        for k in [
            "eval_accuracy",
            "eval_margin",
            "eval_mean_reward",
            "eval_min_reward",
            "eval_max_reward",
        ] {
            assert!(e[k].as_f64().is_some_and(f64::is_finite), "{k} in {e}");
        }
    }
    assert_eq!(v2["final_eval"]["step"], 6);
    assert_eq!(v2["final_eval"]["eval_loss"], evals[3]["eval_loss"]);
    assert_eq!(
        (&v2["summary"]["first_loss"], &v2["summary"]["last_loss"]),
        (&v["summary"]["first_loss"], &v["summary"]["last_loss"]),
        "evaluation leaves training alone"
    );
    // Training on the pairs separates them: the held-out (here: the same) accuracy and margin
    // rise.
    let (first, last) = (&v["initial_eval"], &v["final_eval"]);
    assert_eq!(
        (first["step"].as_u64(), last["step"].as_u64()),
        (Some(0), Some(6))
    );
    let f = |e: &Value, k: &str| e[k].as_f64().unwrap_or_else(|| panic!("{k} in {e}"));
    assert!(
        f(last, "eval_margin") > f(first, "eval_margin") && f(last, "eval_accuracy") == 1.0,
        "{first} -> {last}"
    );
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let steps: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 6);
    for k in [
        "accuracy",
        "margin",
        "min_reward",
        "mean_reward",
        "max_reward",
    ] {
        assert!(steps[0][k].is_number(), "metric {k} in {}", steps[0]);
    }
    // Resumed from step 3, it ends with the same adapter, byte for byte.
    let resumed = work.path().join("resumed");
    let ckpt = out.join("checkpoint-3");
    let v = train(&resumed, &["--resume", ckpt.to_str().unwrap()]);
    assert_eq!(v["summary"]["steps"], 6);
    let file = "adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(out.join(file)).unwrap(),
        std::fs::read(resumed.join(file)).unwrap(),
        "resumed adapter"
    );
    // The adapter carries the score head (PEFT's modules_to_save).
    let adapter = out.join("adapter");
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["modules_to_save"], json!(["score"]));
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    // Scores: a pair row gives both, a prompt/completion row one; the same text scores the
    // same either way, and the trained model prefers the chosen answer.
    let rows = format!(
        "{}\n{}\n",
        json!({"prompt": "t10 t20 t30", "chosen": " t40 t50", "rejected": " t60 t70 t80"}),
        json!({"prompt": "t10 t20 t30", "completion": " t40 t50"})
    );
    let rows = write(work.path(), "rows.jsonl", &rows);
    let a = adapter.to_str().unwrap();
    let got = ok_lines(&tilpass(&[
        "reward",
        "score",
        "--model",
        m,
        "--adapter",
        a,
        "--data",
        &rows,
    ]));
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0]["line"].as_u64(), got[1]["line"].as_u64()),
        (Some(1), Some(2))
    );
    let (c, r, s) = (
        f(&got[0], "chosen"),
        f(&got[0], "rejected"),
        f(&got[1], "score"),
    );
    assert!(c > r, "chosen {c} vs rejected {r}");
    assert!((c - s).abs() <= 1e-6, "{c} vs {s}");
    // Without the adapter the causal LM has no score head: a typed error naming it.
    let err = bad_input(&tilpass(&[
        "reward", "score", "--model", m, "--data", &rows,
    ]));
    assert!(err.contains("score.weight"), "{err}");
    // Bad rows name the file and line, before any scoring.
    let bad = write(
        work.path(),
        "bad.jsonl",
        "{\"prompt\": \"t1\", \"completion\": \" t2\"}\n{\"text\": \"t3\"}\n",
    );
    let err = bad_input(&tilpass(&[
        "reward",
        "score",
        "--model",
        m,
        "--adapter",
        a,
        "--data",
        &bad,
    ]));
    assert!(
        err.contains("bad.jsonl:2") && err.contains("prompt/completion"),
        "{err}"
    );
    let bad = write(
        work.path(),
        "bad2.jsonl",
        "{\"prompt\": \"t1\", \"completion\": \" t2\"}\nnot json\n",
    );
    let err = bad_input(&tilpass(&[
        "reward",
        "score",
        "--model",
        m,
        "--adapter",
        a,
        "--data",
        &bad,
    ]));
    assert!(err.contains("bad2.jsonl:2"), "{err}");
    // A margin column on some rows only is refused, naming the row.
    let mixed = pairs(2, true) + &pairs(1, false);
    let mixed = write(work.path(), "mixed.jsonl", &mixed);
    let err = bad_input(&tilpass(&[
        "train",
        "reward",
        "--model",
        m,
        "--data",
        &mixed,
        "--out",
        work.path().join("run2").to_str().unwrap(),
    ]));
    assert!(err.contains("margin") && err.contains("line 3"), "{err}");
}

#[test]
fn full_reward_training_saves_a_sequence_classifier() {
    let dir = model_dir();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("run");
    // The embedded Norwegian preference set (the word-level tokenizer reads most of it as
    // unknown tokens; this checks the plumbing, not the quality).
    let v = ok_json(&tilpass(&[
        "train",
        "reward",
        "--model",
        m,
        "--data",
        "builtin:norsk-pref",
        "--chat-template",
        "chatml",
        "--full",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "0.001",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(v["summary"]["steps"], 2);
    let model = out.join("model");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["architectures"],
        json!(["LlamaForSequenceClassification"])
    );
    assert_eq!(cfg["pad_token_id"], 0);
    let rows = write(
        work.path(),
        "rows.jsonl",
        &(json!({"prompt": "t10", "completion": " t40"}).to_string() + "\n"),
    );
    let got = ok_lines(&tilpass(&[
        "reward",
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        &rows,
    ]));
    assert!(got[0]["score"].is_number(), "{got:?}");
}

/// BERT and NorBERT3 sequence classifiers (the tiny 3-label fixtures): `train reward` gives
/// them a new one-score head and a LoRA adapter that saves it (`classifier` / `head`), with
/// evaluation every --eval-steps; `reward score` loads the base with that adapter and scores
/// rows; the held-out margin rises; `--full` is refused before any work.
#[test]
fn encoder_reward_models_train_and_score() {
    for (fixture, head) in [
        ("encoders/bert_cls", "classifier"),
        ("encoders/ltg_bert_cls", "head"),
    ] {
        let dir = fixture_with_tokenizer(fixture);
        let m = dir.path().to_str().unwrap();
        let work = tempfile::tempdir().unwrap();
        let data = write(work.path(), "pref.jsonl", &pairs(8, false));
        let out = work.path().join("run");
        let base = [
            "train",
            "reward",
            "--model",
            m,
            "--data",
            &data,
            "--batch-size",
            "4",
            "--lora-r",
            "4",
            "--steps",
            "6",
            "--lr",
            "0.01",
        ];
        let mut args = base.to_vec();
        args.extend([
            "--eval-data",
            &data,
            "--eval-steps",
            "3",
            "--out",
            out.to_str().unwrap(),
        ]);
        let v = ok_json(&tilpass(&args));
        assert_eq!(v["summary"]["steps"], 6, "{fixture}");
        let f = |e: &Value, k: &str| e[k].as_f64().unwrap_or_else(|| panic!("{k} in {e}"));
        let (first, last) = (&v["initial_eval"], &v["final_eval"]);
        assert!(
            f(last, "eval_margin") > f(first, "eval_margin"),
            "{fixture}: {first} -> {last}"
        );
        let adapter = out.join("adapter");
        let cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["modules_to_save"], json!([head]), "{fixture}");
        assert_eq!(cfg["task_type"], "SEQ_CLS");
        let evals: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l.get("eval_loss").is_some())
            .collect();
        let at: Vec<u64> = evals.iter().map(|e| e["step"].as_u64().unwrap()).collect();
        assert_eq!(at, [0, 3, 6], "{fixture}");
        // Scoring with the base + adapter gives the trained model's scores: the pairs' mean
        // margin equals the final evaluation's.
        let lines = ok_lines(&tilpass(&[
            "reward",
            "score",
            "--model",
            m,
            "--adapter",
            adapter.to_str().unwrap(),
            "--data",
            &data,
        ]));
        assert_eq!(lines.len(), 8, "{fixture}");
        let margin: f64 = lines
            .iter()
            .map(|l| f(l, "chosen") - f(l, "rejected"))
            .sum::<f64>()
            / 8.0;
        assert!(
            (margin - f(last, "eval_margin")).abs() < 1e-4,
            "{fixture}: scored margin {margin} vs eval_margin {}",
            f(last, "eval_margin")
        );
        // Without the adapter the 3-label base is not a reward model.
        let err = bad_input(&tilpass(&[
            "reward", "score", "--model", m, "--data", &data,
        ]));
        assert!(err.contains("one output"), "{err}");
        let o = work.path().join("full");
        let mut args = base.to_vec();
        args.extend(["--full", "--out", o.to_str().unwrap()]);
        let err = bad_input(&tilpass(&args));
        assert!(err.contains("full"), "{err}");
        assert!(!o.join("metrics.jsonl").exists());
    }
}
