//! End-to-end tests of `tilpass train orpo|cpo|kto`: TRL's defaults and metric names, the
//! adapter written, paired data unpaired for KTO, and bad input refused (exit 2, one line,
//! naming the setting or the row) before any work.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{bad_input, ok_json, tilpass};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// A copy of the tiny Llama fixture with a word-level tokenizer (`tN` = id N; EOS t2, BOS t1).
fn model() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama_gqa");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
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
    write(
        dir.path(),
        "tokenizer_config.json",
        r#"{"eos_token": "t2", "bos_token": "t1"}"#,
    );
    dir
}

fn pairs(n: usize) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                               "chosen": format!(" t{} t{}", 40 + i, 50 + i),
                               "rejected": format!(" t{} t{} t{}", 60 + i, 70 + i, 80 + i)})
            .to_string()
                + "\n"
        })
        .collect()
}

fn metric_lines(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs `train <job>` on `data` with a small adapter; returns the JSON result.
fn run(job: &str, m: &str, data: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "train",
        job,
        "--model",
        m,
        "--data",
        data,
        "--batch-size",
        "4",
        "--lora-r",
        "4",
        "--target-modules",
        "q_proj,v_proj",
        "--steps",
        "2",
        "--lr",
        "0.01",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok_json(&tilpass(&args))
}

#[test]
fn orpo_and_cpo_train_with_trl_defaults_and_metric_names() {
    let dir = model();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = write(work.path(), "pref.jsonl", &pairs(8));
    // TRL's defaults, but the learning rate (documented).
    let v = ok_json(&tilpass(&["train", "orpo", "--print-config"]));
    for (k, want) in [
        ("beta", serde_json::json!(0.1)),
        ("max_length", serde_json::json!(1024)),
        ("batch_size", serde_json::json!(8)),
        ("max_grad_norm", serde_json::json!(1.0)),
        ("weight_decay", serde_json::json!(0.0)),
        ("lr", serde_json::json!(5e-5)),
    ] {
        assert_eq!(v[k], want, "orpo default {k}");
    }
    let v = ok_json(&tilpass(&["train", "cpo", "--print-config"]));
    for (k, want) in [
        ("beta", serde_json::json!(0.1)),
        ("loss_type", serde_json::json!("sigmoid")),
        ("cpo_alpha", serde_json::json!(1.0)),
        ("simpo_gamma", serde_json::json!(0.5)),
        ("label_smoothing", serde_json::json!(0.0)),
        ("alpha", serde_json::json!(0.0)),
        ("lr", serde_json::json!(5e-5)),
    ] {
        assert_eq!(v[k], want, "cpo default {k}");
    }
    let out = work.path().join("orpo");
    let v = run("orpo", m, &data, &out, &[]);
    assert_eq!(v["summary"]["steps"], 2);
    assert!(out.join("adapter/adapter_model.safetensors").is_file());
    for l in metric_lines(&out) {
        for k in [
            "rewards/chosen",
            "rewards/accuracies",
            "logps/rejected",
            "logits/chosen",
            "nll_loss",
            "log_odds_ratio",
            "log_odds_chosen",
        ] {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    let out = work.path().join("simpo");
    run(
        "cpo",
        m,
        &data,
        &out,
        &["--loss-type", "simpo", "--cpo-alpha", "0"],
    );
    let lines = metric_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["nll_loss"], 0.0, "no NLL term with cpo_alpha 0");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["loss_type"], "simpo");
    // Bad settings and rows: exit 2, before any work.
    let o = work.path().join("bad");
    let o = o.to_str().unwrap();
    let err = bad_input(&tilpass(&[
        "train", "orpo", "--model", m, "--data", &data, "--out", o, "--beta", "0",
    ]));
    assert!(err.contains("beta"), "{err}");
    let empty = write(
        work.path(),
        "empty.jsonl",
        &(pairs(2) + r#"{"prompt": "t1", "chosen": " ", "rejected": " t5"}"#),
    );
    let err = bad_input(&tilpass(&[
        "train", "cpo", "--model", m, "--data", &empty, "--out", o,
    ]));
    assert!(
        err.contains("empty.jsonl:3") && err.contains("chosen"),
        "{err}"
    );
    let unpaired = write(
        work.path(),
        "unpaired.jsonl",
        r#"{"prompt": "t1", "completion": " t5", "label": true}"#,
    );
    let err = bad_input(&tilpass(&[
        "train", "orpo", "--model", m, "--data", &unpaired, "--out", o,
    ]));
    assert!(err.contains("unpaired.jsonl:1"), "{err}");
    assert!(!Path::new(o).join("metrics.jsonl").exists());
}

#[test]
fn kto_trains_on_unpaired_and_paired_rows() {
    let dir = model();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let v = ok_json(&tilpass(&["train", "kto", "--print-config"]));
    for (k, want) in [
        ("beta", serde_json::json!(0.1)),
        ("loss_type", serde_json::json!("kto")),
        ("desirable_weight", serde_json::json!(1.0)),
        ("undesirable_weight", serde_json::json!(1.0)),
        ("lr", serde_json::json!(5e-5)),
    ] {
        assert_eq!(v[k], want, "kto default {k}");
    }
    let rows: String = (0..8)
        .map(|i| {
            serde_json::json!({"prompt": format!("t{} t30", 10 + i),
                               "completion": format!(" t{} t{}", 40 + i, 50 + i),
                               "label": i % 2 == 0})
            .to_string()
                + "\n"
        })
        .collect();
    let data = write(work.path(), "kto.jsonl", &rows);
    let out = work.path().join("kto");
    let v = run("kto", m, &data, &out, &[]);
    assert_eq!(v["summary"]["steps"], 2);
    let lines = metric_lines(&out);
    // The first step's policy is the reference (LoRA B = 0): zero rewards and KL, loss 0.5.
    assert_eq!(lines[0]["kl"], 0.0);
    assert!((lines[0]["loss"].as_f64().unwrap() - 0.5).abs() < 1e-6);
    for k in [
        "kl",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "entropy",
        "logits/rejected",
    ] {
        assert!(
            lines[1][k].as_f64().is_some_and(f64::is_finite),
            "{k} in {}",
            lines[1]
        );
    }
    // Paired rows, unpaired as TRL does.
    let pref = write(work.path(), "pref.jsonl", &pairs(4));
    let out = work.path().join("kto_pairs");
    let v = run("kto", m, &pref, &out, &[]);
    assert_eq!(v["summary"]["steps"], 2);
    // Bad settings and rows.
    let o = work.path().join("bad");
    let o = o.to_str().unwrap();
    let err = bad_input(&tilpass(&[
        "train",
        "kto",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        o,
        "--batch-size",
        "1",
    ]));
    assert!(err.contains("batch_size"), "{err}");
    let bad = write(
        work.path(),
        "bad.jsonl",
        r#"{"prompt": "t1", "completion": " t5", "label": true}
{"prompt": "t1", "completion": "", "label": false}
"#,
    );
    let err = bad_input(&tilpass(&[
        "train", "kto", "--model", m, "--data", &bad, "--out", o,
    ]));
    assert!(
        err.contains("bad.jsonl:2") && err.contains("completion"),
        "{err}"
    );
    assert!(!Path::new(o).join("metrics.jsonl").exists());
}

/// `--eval-data` / `--eval-steps` / `--early-stopping-patience` as `train dpo`: an evaluation
/// line every N steps with `eval_loss` and TRL's metrics under the `eval_` prefix; the flags'
/// dependencies refused before any work.
#[test]
fn orpo_cpo_and_kto_evaluate_every_eval_steps() {
    let dir = model();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = write(work.path(), "pref.jsonl", &pairs(8));
    let held = write(work.path(), "held.jsonl", &pairs(3));
    for (job, names) in [
        (
            "orpo",
            &[
                "eval_rewards/accuracies",
                "eval_log_odds_ratio",
                "eval_log_odds_chosen",
                "eval_nll_loss",
                "eval_logits/chosen",
            ][..],
        ),
        (
            "cpo",
            &[
                "eval_rewards/margins",
                "eval_logps/rejected",
                "eval_nll_loss",
            ][..],
        ),
        (
            "kto",
            &[
                "eval_kl",
                "eval_rewards/chosen",
                "eval_rewards/rejected",
                "eval_entropy",
            ][..],
        ),
    ] {
        let out = work.path().join(format!("{job}_eval"));
        let v = run(
            job,
            m,
            &data,
            &out,
            &[
                "--eval-data",
                &held,
                "--eval-steps",
                "1",
                "--early-stopping-patience",
                "5",
            ],
        );
        assert_eq!(v["summary"]["steps"], 2, "{job}");
        let evals: Vec<Value> = metric_lines(&out)
            .into_iter()
            .filter(|l| l.get("eval_loss").is_some())
            .collect();
        assert_eq!(evals.len(), 2, "{job}: one evaluation per step");
        for (i, e) in evals.iter().enumerate() {
            assert_eq!(e["step"].as_u64(), Some(i as u64 + 1), "{job}");
            assert!(e["eval_loss"].as_f64().is_some_and(f64::is_finite), "{e}");
            for k in names {
                assert!(
                    e[*k].as_f64().is_some_and(f64::is_finite),
                    "{job}: {k} in {e}"
                );
            }
        }
        let o = work.path().join(format!("{job}_bad"));
        let o = o.to_str().unwrap();
        let err = bad_input(&tilpass(&[
            "train",
            job,
            "--model",
            m,
            "--data",
            &data,
            "--out",
            o,
            "--eval-steps",
            "1",
        ]));
        assert!(
            err.contains("eval_steps") && err.contains("eval_data"),
            "{err}"
        );
        let err = bad_input(&tilpass(&[
            "train",
            job,
            "--model",
            m,
            "--data",
            &data,
            "--out",
            o,
            "--eval-data",
            &held,
            "--early-stopping-patience",
            "2",
        ]));
        assert!(err.contains("early_stopping_patience"), "{err}");
        assert!(!Path::new(o).join("metrics.jsonl").exists());
    }
}
