//! End-to-end tests of `tilpass train grpo|rloo` on the tiny Llama fixture with a word-level
//! tokenizer (token `tN` has id N): TRL's defaults, two steps with a rule reward, an exact
//! resume, a reward model made by `tilpass train reward`, and bad input refused (exit 2, one
//! line) before any work.

use std::path::Path;

use serde_json::{Value, json};

mod common;
use common::{bad_input, ok_json, tilpass};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

/// A copy of the tiny Llama with a word-level tokenizer, EOS `t2` and pad `t0`.
fn model_dir() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama_gqa");
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

/// Prompt rows with an extra column (`answer`) the rewards may read.
fn prompts(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i), "answer": "t40"}).to_string()
                + "\n"
        })
        .collect()
}

fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The arguments of a small run: 2 prompts x G = 4 completions of at most 6 tokens a step.
fn small_run<'a>(cmd: &'a str, m: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    run_with_g(cmd, m, data, out, "4")
}

/// [`small_run`] with `g` completions per prompt.
fn run_with_g<'a>(
    cmd: &'a str,
    m: &'a str,
    data: &'a str,
    out: &'a str,
    g: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        cmd,
        "--model",
        m,
        "--data",
        data,
        "--num-generations",
        g,
        "--batch-size",
        "8",
        "--max-completion-length",
        "6",
        "--lora-r",
        "4",
        "--target-modules",
        "q_proj,v_proj",
        "--lr",
        "0.01",
        "--out",
        out,
    ]
}

#[test]
fn train_grpo_defaults_are_trls_grpo_config() {
    let v = ok_json(&tilpass(&["train", "grpo", "--print-config"]));
    for (k, want) in [
        ("algorithm", json!("grpo")),
        ("num_iterations", json!(1)),
        ("max_completion_length", json!(512)),
        ("temperature", json!(1.0)),
        ("top_p", json!(1.0)),
        ("epsilon", json!(0.2)),
        ("batch_size", json!(8)),
        ("max_grad_norm", json!(1.0)),
        ("lr", json!(5e-5)),
    ] {
        assert_eq!(v[k], want, "default {k}");
    }
    let v = ok_json(&tilpass(&["train", "rloo", "--print-config"]));
    assert_eq!(v["algorithm"], "rloo");
}

#[test]
fn train_grpo_with_a_rule_reward_resumes_exactly() {
    let dir = model_dir();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = write(work.path(), "prompts.jsonl", &prompts(6));
    let out = work.path().join("run");
    let o = out.to_str().unwrap();
    let mut args = small_run("grpo", m, &data, o);
    args.extend([
        "--reward",
        "distinct=1",
        "--reward",
        "length=4..12:0.5",
        "--steps",
        "2",
        "--save-steps",
        "1",
    ]);
    let v = ok_json(&tilpass(&args));
    assert_eq!(v["summary"]["steps"], 2);
    assert_eq!(v["algorithm"], "grpo");
    assert!(out.join("adapter/adapter_model.safetensors").is_file());
    assert!(out.join("checkpoint-1").is_dir());
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["rewards"], json!(["distinct=1", "length=4..12:0.5"]));
    let lines = metrics(&out);
    assert_eq!(lines.len(), 2, "one line a step: {lines:?}");
    for l in &lines {
        for k in ["loss", "reward", "reward_std"] {
            assert!(l[k].as_f64().is_some_and(f64::is_finite), "{k} in {l}");
        }
    }
    // Resumed from step 1 (optimiser, schedule and sampler state), it ends with the same
    // adapter, byte for byte.
    let resumed = work.path().join("resumed");
    let r = resumed.to_str().unwrap();
    let ckpt = out.join("checkpoint-1");
    let mut args = small_run("grpo", m, &data, r);
    args.extend([
        "--reward",
        "distinct=1",
        "--reward",
        "length=4..12:0.5",
        "--steps",
        "2",
        "--resume",
        ckpt.to_str().unwrap(),
    ]);
    ok_json(&tilpass(&args));
    let file = "adapter/adapter_model.safetensors";
    assert_eq!(
        std::fs::read(out.join(file)).unwrap(),
        std::fs::read(resumed.join(file)).unwrap(),
        "resumed adapter"
    );
    // RLOO on the same data.
    let rloo = work.path().join("rloo");
    let mut args = small_run("rloo", m, &data, rloo.to_str().unwrap());
    args.extend(["--reward", "distinct=1", "--steps", "1"]);
    let v = ok_json(&tilpass(&args));
    assert_eq!(
        (v["algorithm"].as_str(), v["summary"]["steps"].as_u64()),
        (Some("rloo"), Some(1))
    );
}

#[test]
fn train_grpo_with_a_reward_model_from_train_reward() {
    let dir = model_dir();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let pairs: String = (0..8)
        .map(|i| {
            json!({"prompt": format!("t{} t30", 10 + i), "chosen": " t40 t50",
                   "rejected": " t60 t70 t80"})
            .to_string()
                + "\n"
        })
        .collect();
    let pref = write(work.path(), "pref.jsonl", &pairs);
    let rm = work.path().join("rm");
    ok_json(&tilpass(&[
        "train",
        "reward",
        "--model",
        m,
        "--data",
        &pref,
        "--batch-size",
        "4",
        "--lora-r",
        "4",
        "--target-modules",
        "q_proj,v_proj",
        "--steps",
        "2",
        "--out",
        rm.to_str().unwrap(),
    ]));
    let data = write(work.path(), "prompts.jsonl", &prompts(4));
    let out = work.path().join("run");
    let spec = format!("model={}:0.5", rm.display());
    let mut args = small_run("grpo", m, &data, out.to_str().unwrap());
    args.extend(["--reward", &spec, "--reward", "distinct=1", "--steps", "2"]);
    let v = ok_json(&tilpass(&args));
    assert_eq!(v["summary"]["steps"], 2);
    let lines = metrics(&out);
    assert_eq!(lines.len(), 2);
    // Both reward sources are logged with TRL's rewards/{name}/mean names.
    let keys: Vec<&String> = lines[0].as_object().unwrap().keys().collect();
    let per_fn = keys
        .iter()
        .filter(|k| k.starts_with("rewards/") && k.ends_with("/mean"))
        .count();
    assert_eq!(per_fn, 2, "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k.as_str() == "rewards/reward_model_rm/mean"),
        "the reward model is named after its directory: {keys:?}"
    );
    // The adapter directory alone works too.
    let adapter = format!("model={}", rm.join("adapter").display());
    let out2 = work.path().join("run2");
    let mut args = small_run("grpo", m, &data, out2.to_str().unwrap());
    args.extend(["--reward", &adapter, "--steps", "1"]);
    ok_json(&tilpass(&args));
}

#[test]
fn train_grpo_refuses_bad_input_before_any_work() {
    let dir = model_dir();
    let m = dir.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = write(work.path(), "prompts.jsonl", &prompts(4));
    let out = work.path().join("bad");
    let o = out.to_str().unwrap();
    let err = bad_input(&tilpass(&small_run("grpo", m, &data, o)));
    assert!(err.contains("reward"), "{err}");
    let mut args = small_run("grpo", m, &data, o);
    args.extend(["--reward", "model=/nonexistent/rm"]);
    let err = bad_input(&tilpass(&args));
    assert!(err.contains("/nonexistent/rm"), "{err}");
    let mut args = small_run("grpo", m, &data, o);
    args.extend(["--reward", "lenght=3..4"]);
    let err = bad_input(&tilpass(&args));
    assert!(err.contains("lenght=3..4"), "{err}");
    // 8 completions a batch hold no whole groups of 3.
    let mut args = run_with_g("grpo", m, &data, o, "3");
    args.extend(["--reward", "distinct=1"]);
    let err = bad_input(&tilpass(&args));
    assert!(err.contains("num_generations"), "{err}");
    // A reward-less directory is not a reward model.
    let spec = format!("model={}", work.path().display());
    let mut args = small_run("grpo", m, &data, o);
    args.extend(["--reward", &spec]);
    let err = bad_input(&tilpass(&args));
    assert!(err.contains("reward model directory"), "{err}");
    // A row without a prompt is named by file and line.
    let bad_rows = write(
        work.path(),
        "bad.jsonl",
        "{\"prompt\": \"t10 t11\"}\n{\"question\": \"t12\"}\n",
    );
    let mut args = small_run("grpo", m, &bad_rows, o);
    args.extend(["--reward", "distinct=1"]);
    let err = bad_input(&tilpass(&args));
    assert!(
        err.contains("bad.jsonl:2") && err.contains("prompt"),
        "{err}"
    );
    let mut args = small_run("rloo", m, &data, o);
    args.extend(["--reward", "distinct=1", "--scale-rewards", "batch"]);
    let err = bad_input(&tilpass(&args));
    assert!(err.contains("scale_rewards"), "{err}");
    assert!(!out.join("metrics.jsonl").exists());
    assert!(!out.join("run_config.json").exists());
}
