//! Run configs on the command line: every LoRA option of `tilpass train sft --config` reaches
//! the adapter it writes; `--print-config` output is a config that resolves to itself; flags
//! win over the file; unknown keys and out-of-range settings exit 2 naming them; a run's
//! `run_config.json` given back as `--config` repeats it byte for byte (seeded dropout).

use std::path::Path;

use serde_json::{Value, json};
use tilpass::core::Checkpoint;
use tilpass::models::{DecoderLm, HasLinears};
use tilpass::peft::PeftModel;

mod common;
use common::{bad_input, ok_json, tilpass};

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The Llama fixture (hidden 64, 2 layers, 4 heads of 16, 2 KV heads) with a word-level
/// tokenizer whose token `tN` has id N.
fn llama_with_tokenizer() -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/llama_gqa");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(src).unwrap() {
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
    dir
}

fn sft_data(dir: &Path) -> String {
    let rows: String = (0..8)
        .map(|i| {
            json!({"prompt": format!("t{} t{} t30", 10 + i, 20 + i),
                   "completion": format!(" t{} t{} t2", 40 + i, 50 + i)})
            .to_string()
                + "\n"
        })
        .collect();
    write(dir, "train.jsonl", &rows)
}

const LORA_CONFIG: &str = r#"{
  "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "use_dora": true, "use_rslora": true,
           "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"v_proj": 16},
           "target_modules": ["q_proj", "v_proj"]},
  "batch_size": 4, "lr": 0.005, "steps": 2, "seed": 3
}"#;

/// DoRA, rsLoRA, dropout, rank and alpha patterns and target modules from `--config` are in
/// the written adapter: its config, its tensors (DoRA magnitudes, per-layer ranks, no
/// untargeted layer) and the scales a loaded adapter applies.
#[test]
fn train_sft_config_reaches_every_lora_option() {
    let model = llama_with_tokenizer();
    let m = model.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = sft_data(work.path());
    let cfg = write(work.path(), "sft.json", LORA_CONFIG);
    let out = work.path().join("run");
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
        out.to_str().unwrap(),
    ]));
    assert_eq!(v["summary"]["steps"], 2);
    let adapter = out.join("adapter");
    let written = read_json(&adapter.join("adapter_config.json"));
    for (key, want) in [
        ("r", json!(4)),
        ("lora_alpha", json!(8.0)),
        ("lora_dropout", json!(0.1)),
        ("use_dora", json!(true)),
        ("use_rslora", json!(true)),
        ("rank_pattern", json!({"v_proj": 2})),
        ("alpha_pattern", json!({"v_proj": 16.0})),
        ("target_modules", json!(["q_proj", "v_proj"])),
        ("task_type", json!("CAUSAL_LM")),
        ("base_model_name_or_path", json!(m)),
    ] {
        assert_eq!(written[key], want, "{key}: {written}");
    }
    let ck = Checkpoint::open(adapter.join("adapter_model.safetensors")).unwrap();
    assert_eq!(ck.len(), 2 * 2 * 3, "2 layers x (q, v) x (A, B, magnitude)");
    for layer in 0..2 {
        for (proj, r, out_dim) in [("q_proj", 4, 64), ("v_proj", 2, 32)] {
            let p = format!("base_model.model.model.layers.{layer}.self_attn.{proj}");
            let shape = |k: &str| ck.info(&format!("{p}.{k}")).unwrap().shape.clone();
            assert_eq!(shape("lora_A.weight"), [r, 64], "{p}: rank_pattern");
            assert_eq!(shape("lora_B.weight"), [out_dim, r], "{p}");
            assert_eq!(shape("lora_magnitude_vector"), [out_dim], "{p}: DoRA");
        }
    }
    assert!(
        ck.keys()
            .all(|k| !k.contains("k_proj") && !k.contains("o_proj"))
    );
    // Loaded back, each layer carries rsLoRA's scale alpha / sqrt(r) with its own r and alpha.
    let device = tilpass::device("flex").unwrap();
    let mut peft = PeftModel::new(DecoderLm::load(model.path(), &device).unwrap());
    peft.load_adapter(&adapter, "default").unwrap();
    let mut seen = 0;
    for (path, lin) in peft.linears() {
        let Some(b) = lin.lora.first() else { continue };
        let want = if path.ends_with("v_proj") {
            16.0 / 2f64.sqrt()
        } else {
            8.0 / 4f64.sqrt()
        };
        assert!((b.scale - want).abs() < 1e-12, "{path}: scale {}", b.scale);
        assert!(b.magnitude.is_some(), "{path}: DoRA");
        seen += 1;
    }
    assert_eq!(seen, 4);
}

/// `--print-config` prints the resolved config; fed back as `--config` it resolves to itself;
/// flags win over the file, LoRA flags included; the other jobs print theirs.
#[test]
fn print_config_round_trips_and_flags_win() {
    let work = tempfile::tempdir().unwrap();
    let cfg = write(work.path(), "sft.json", LORA_CONFIG);
    let printed = ok_json(&tilpass(&[
        "train",
        "sft",
        "--config",
        &cfg,
        "--steps",
        "6",
        "--lora-r",
        "8",
        "--use-dora=false",
        "--data",
        "builtin:norsk-chat",
        "--print-config",
    ]));
    assert_eq!(printed["steps"], 6, "the flag beat the file's 2");
    assert_eq!(printed["lr"], 0.005, "the file beat the default");
    assert_eq!(printed["batch_size"], 4);
    assert_eq!(printed["data"], "builtin:norsk-chat");
    let lora = &printed["lora"];
    assert_eq!(
        (lora["r"].clone(), lora["use_dora"].clone()),
        (json!(8), json!(false))
    );
    assert_eq!(
        lora["rank_pattern"],
        json!({"v_proj": 2}),
        "the rest of the file's lora"
    );
    assert_eq!(lora["use_rslora"], true);
    assert_eq!(printed["warmup"], 0, "defaults fill the rest");
    let again = write(work.path(), "printed.json", &printed.to_string());
    let back = ok_json(&tilpass(&[
        "train",
        "sft",
        "--config",
        &again,
        "--print-config",
    ]));
    assert_eq!(back, printed);
    // The same settings as flags only.
    let flags = ok_json(&tilpass(&[
        "train",
        "sft",
        "--data",
        "builtin:norsk-chat",
        "--steps",
        "6",
        "--lr",
        "0.005",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--lora-r",
        "8",
        "--lora-alpha",
        "8",
        "--lora-dropout",
        "0.1",
        "--use-rslora",
        "--rank-pattern",
        "v_proj=2",
        "--alpha-pattern",
        "v_proj=16",
        "--target-modules",
        "q_proj,v_proj",
        "--print-config",
    ]));
    assert_eq!(flags, printed);
    for job in [
        &["train", "classify"][..],
        &["annotate"][..],
        &["predict"][..],
    ] {
        let v = ok_json(&tilpass(&[job, &["--print-config"][..]].concat()));
        assert_eq!(v["device"], "flex", "{job:?}: {v}");
    }
    let v = ok_json(&tilpass(&["train", "classify", "--print-config"]));
    assert_eq!(
        (v["lora"]["r"].clone(), v["lr"].clone()),
        (json!(8), json!(0.001))
    );
}

/// Unknown keys, a setting given twice, out-of-range values and missing paths exit 2 with a
/// one-line cause naming them.
#[test]
fn bad_run_configs_exit_2_naming_the_setting() {
    let work = tempfile::tempdir().unwrap();
    let typo = write(
        work.path(),
        "typo.json",
        r#"{"steps": 2, "learning_rate": 0.1}"#,
    );
    let err = bad_input(&tilpass(&[
        "train",
        "sft",
        "--config",
        &typo,
        "--print-config",
    ]));
    assert!(
        err.contains("typo.json") && err.contains("`learning_rate`"),
        "{err}"
    );
    let twice = write(
        work.path(),
        "twice.json",
        r#"{"lora_r": 4, "lora": {"r": 8}}"#,
    );
    let err = bad_input(&tilpass(&["train", "sft", "--config", &twice]));
    assert!(err.contains("`lora_r` and `lora.r`"), "{err}");
    let model = llama_with_tokenizer();
    let m = model.path().to_str().unwrap();
    let data = sft_data(work.path());
    let out = work.path().join("never");
    let o = out.to_str().unwrap();
    for (flag, value, setting) in [
        ("--lr", "-1", "`lr`"),
        ("--steps", "0", "`steps`"),
        ("--warmup", "500", "`warmup`"),
        ("--lora-dropout", "1.5", "`lora.lora_dropout`"),
        ("--rank-pattern", "q_proj=0", "`lora.rank_pattern.q_proj`"),
    ] {
        let arg = format!("{flag}={value}");
        let err = bad_input(&tilpass(&[
            "train", "sft", "--model", m, "--data", &data, "--out", o, &arg,
        ]));
        assert!(
            err.contains("invalid setting") && err.contains(setting),
            "{flag}: {err}"
        );
        assert!(!out.exists(), "{flag}: nothing written");
    }
    let err = bad_input(&tilpass(&[
        "train",
        "classify",
        "--model",
        m,
        "--data",
        &data,
        "--out",
        o,
        "--eval-split",
        "1",
    ]));
    assert!(err.contains("`eval_split`"), "{err}");
    let err = bad_input(&tilpass(&[
        "predict", "--model", m, "--data", &data, "--out", o,
    ]));
    assert!(err.contains("--adapter"), "{err}");
}

/// A run's run_config.json repeats it: the same adapter bytes, with dropout (seeded), in
/// another process; another seed gives another adapter.
#[test]
fn run_config_json_reproduces_the_run() {
    let model = llama_with_tokenizer();
    let m = model.path().to_str().unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = sft_data(work.path());
    let cfg = write(work.path(), "sft.json", LORA_CONFIG);
    let run = |args: &[&str], out: &str| {
        let out = work.path().join(out);
        ok_json(&tilpass(
            &[args, &["--out", out.to_str().unwrap()][..]].concat(),
        ));
        out
    };
    let first = run(
        &[
            "train", "sft", "--config", &cfg, "--model", m, "--data", &data, "--steps", "3",
        ],
        "first",
    );
    let recorded = first.join("run_config.json");
    let r = read_json(&recorded);
    assert_eq!(
        (r["steps"].clone(), r["lora"]["lora_dropout"].clone()),
        (json!(3), json!(0.1))
    );
    let again = run(
        &["train", "sft", "--config", recorded.to_str().unwrap()],
        "again",
    );
    let other_seed = run(
        &[
            "train",
            "sft",
            "--config",
            recorded.to_str().unwrap(),
            "--seed",
            "4",
        ],
        "other",
    );
    let bytes = |dir: &Path, f: &str| std::fs::read(dir.join("adapter").join(f)).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        assert!(bytes(&first, f) == bytes(&again, f), "{f} differs");
    }
    assert!(
        bytes(&first, "adapter_model.safetensors")
            != bytes(&other_seed, "adapter_model.safetensors"),
        "another seed, another adapter"
    );
    let losses = |dir: &Path| -> Vec<f64> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(losses(&first), losses(&again));
}
