//! The jobs as library types (`tilpass::train::runs`): each run type's `run()` on the fixture
//! models, checked against the reference where one exists (the PyTorch + PEFT SFT run, the
//! transformers logits) and otherwise against an independent computation (one unpadded
//! forward per row); settings are validated before any work starts.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tilpass::core::Checkpoint;
use tilpass::data::DatasetSpec;
use tilpass::models::{DecoderInput, DecoderLm, EncoderInput, EncoderModel};
use tilpass::peft::PeftModel;
use tilpass::tokenize::Tokenizer;
use tilpass::train::runs::{self, RUN_CONFIG_FILE, RunConfig, text_perplexity};
use tilpass::train::{AnnotateRun, ClassifyRun, Event, PredictRun, SftRun, TrainError};
use tilpass_tests::{fixture_json, fixture_path, max_abs_diff, test_device};

use crate::train_parity::{LORA_GRAD_NORM, LORA_LOSS, LORA_WEIGHTS, check_rel};

/// A copy of a fixture model directory with a word-level tokenizer (`t0` .. `t255` = ids
/// 0..255, split on white space, no special tokens), as the CLI tests use.
pub(crate) fn with_tokenizer(fixture: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_path(fixture)).unwrap() {
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

fn words(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn write_jsonl(path: &Path, rows: &[Value]) -> PathBuf {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The reference SFT batches of tests/fixtures/train/lora_sft as a prompt-completion dataset:
/// each row's unpadded ids, the prompt where its labels are -100.
pub(crate) fn reference_rows() -> Vec<Value> {
    let file = fixture_json("train/lora_sft/batches.json");
    let mut rows = Vec::new();
    for b in file["batches"].as_array().unwrap() {
        let ids: Vec<Vec<u32>> = serde_json::from_value(b["input_ids"].clone()).unwrap();
        let mask: Vec<Vec<u32>> = serde_json::from_value(b["attention_mask"].clone()).unwrap();
        let labels: Vec<Vec<i64>> = serde_json::from_value(b["labels"].clone()).unwrap();
        for ((ids, mask), labels) in ids.iter().zip(&mask).zip(&labels) {
            let n = mask.iter().sum::<u32>() as usize;
            let p = labels.iter().position(|l| *l != -100).unwrap();
            rows.push(json!({"prompt": words(&ids[..p]), "completion": format!(" {}", words(&ids[p..n]))}));
        }
    }
    rows
}

/// `train sft` as a library call reproduces PyTorch + PEFT's five LoRA steps: from PEFT's
/// initial adapter and the reference's rows as a data file (encoded, batched and padded by
/// the run), the same losses and gradient norms per step and the same final adapter.
#[test]
fn sft_run_reproduces_the_peft_reference_from_a_data_file() {
    let model = with_tokenizer("models/llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let data = write_jsonl(&work.path().join("train.jsonl"), &reference_rows());
    let reference = fixture_json("train/lora_sft/reference.json");
    let run = SftRun {
        model: Some(model.path().into()),
        data: Some(DatasetSpec::File(data)),
        out: Some(work.path().join("run")),
        init_adapter: Some(fixture_path("train/lora_sft/initial")),
        batch_size: 2,
        lr: 1e-2,
        warmup: 2,
        steps: 5,
        max_grad_norm: Some(0.7),
        weight_decay: 0.01,
        ..Default::default()
    };
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    let outcome = run
        .run(&test_device(), &mut |e| {
            if let Event::Step(s) = e {
                losses.push(s.loss);
                norms.push(s.grad_norm);
            }
        })
        .unwrap();
    assert_eq!(outcome.summary.steps, 5);
    check_rel(
        "SftRun loss",
        &losses,
        &reference,
        "loss",
        LORA_LOSS,
        LORA_LOSS,
    );
    check_rel(
        "SftRun grad norm",
        &norms,
        &reference,
        "grad_norm",
        LORA_GRAD_NORM,
        LORA_GRAD_NORM,
    );
    let want = Checkpoint::open(fixture_path(
        "train/lora_sft/final/adapter_model.safetensors",
    ))
    .unwrap();
    let got = Checkpoint::open(outcome.saved.join("adapter_model.safetensors")).unwrap();
    let mut keys: Vec<&str> = want.keys().collect();
    keys.sort();
    let mut got_keys: Vec<&str> = got.keys().collect();
    got_keys.sort();
    assert_eq!(got_keys, keys);
    let mut worst = 0f64;
    for k in keys {
        let (g, w) = (got.read_f32(k).unwrap(), want.read_f32(k).unwrap());
        assert_eq!(g.shape, w.shape, "{k}");
        worst = worst.max(max_abs_diff(&g.data, &w.data));
    }
    eprintln!("measured SftRun final adapter: max abs difference {worst:.2e} vs PEFT f32");
    assert!(worst <= LORA_WEIGHTS, "final adapter vs PEFT: {worst:e}");
    // The run wrote its config; read back, it is the run.
    let back: SftRun = runs::load(work.path().join("run").join(RUN_CONFIG_FILE)).unwrap();
    assert_eq!(back, run);
}

/// A fresh adapter from `lora`, evaluation before and after training, and every file where
/// the run says; the same config run twice gives the same adapter bytes. (Without dropout:
/// dropout draws from burn's process-wide RNG, which the other tests of this binary draw
/// from at the same time; the CLI tests check seeded dropout, one process per run.)
#[test]
fn sft_run_with_a_new_adapter_evaluates_and_repeats_itself() {
    let model = with_tokenizer("models/llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let data = write_jsonl(&work.path().join("train.jsonl"), &reference_rows());
    let spec = DatasetSpec::File(data);
    let mut run = SftRun {
        model: Some(model.path().into()),
        data: Some(spec.clone()),
        eval_data: Some(spec),
        batch_size: 4,
        lr: 5e-3,
        steps: 3,
        eval_steps: Some(2),
        eval_on_start: true,
        eval_samples: 1,
        sample_max_new_tokens: 3,
        seed: 7,
        ..Default::default()
    };
    run.lora.target_modules = Some(["q_proj", "v_proj"].into());
    let mut outcomes = Vec::new();
    for name in ["a", "b"] {
        run.out = Some(work.path().join(name));
        let mut evals = Vec::new();
        let o = run
            .run(&test_device(), &mut |e| {
                if let Event::Eval(e) = e {
                    evals.push(e.step);
                }
            })
            .unwrap();
        assert_eq!(evals, [0, 2], "eval_on_start, then every 2 steps");
        let (first, last) = (
            o.initial_eval.clone().unwrap(),
            o.final_eval.clone().unwrap(),
        );
        assert_eq!((first.step, last.step), (0, 3));
        assert_eq!(first.samples.len(), 1);
        assert!(last.eval_loss < first.eval_loss, "{first:?} -> {last:?}");
        let lines = std::fs::read_to_string(work.path().join(name).join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 5, "eval at 0, 3 steps, eval at 2");
        outcomes.push(std::fs::read(o.saved.join("adapter_model.safetensors")).unwrap());
    }
    assert!(
        outcomes[0] == outcomes[1],
        "the same seed gives the same adapter"
    );
}

/// A change to a run's settings.
type Mutation = Box<dyn Fn(&mut SftRun)>;

/// Every numeric setting is checked (range, finiteness) with an error naming it, before
/// anything is written.
#[test]
fn run_settings_are_validated_before_any_work() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("never");
    let base = SftRun {
        model: Some("m".into()),
        data: Some(DatasetSpec::norsk_chat(None)),
        out: Some(out.clone()),
        ..Default::default()
    };
    base.validate().unwrap();
    let cases: Vec<(&str, Mutation)> = vec![
        ("lr", Box::new(|r| r.lr = 0.0)),
        ("lr", Box::new(|r| r.lr = f64::NAN)),
        ("lr", Box::new(|r| r.lr = f64::INFINITY)),
        ("batch_size", Box::new(|r| r.batch_size = 0)),
        ("grad_accum", Box::new(|r| r.grad_accum = 0)),
        ("steps", Box::new(|r| r.steps = 0)),
        ("warmup", Box::new(|r| r.warmup = 101)),
        ("max_length", Box::new(|r| r.max_length = Some(0))),
        ("max_grad_norm", Box::new(|r| r.max_grad_norm = Some(-1.0))),
        ("weight_decay", Box::new(|r| r.weight_decay = -0.1)),
        ("adam_beta1", Box::new(|r| r.adam_beta1 = 1.0)),
        ("adam_epsilon", Box::new(|r| r.adam_epsilon = 0.0)),
        ("eval_steps", Box::new(|r| r.eval_steps = Some(0))),
        ("save_steps", Box::new(|r| r.save_steps = Some(0))),
        ("save_total_limit", Box::new(|r| r.save_total_limit = 0)),
        ("lora.r", Box::new(|r| r.lora.r = 0)),
        (
            "lora.lora_alpha",
            Box::new(|r| r.lora.lora_alpha = f64::NAN),
        ),
        ("lora.lora_dropout", Box::new(|r| r.lora.lora_dropout = 1.0)),
        (
            "lora.rank_pattern.v_proj",
            Box::new(|r| {
                r.lora.rank_pattern.insert("v_proj".into(), 0);
            }),
        ),
    ];
    for (setting, mutate) in cases {
        let mut run = base.clone();
        mutate(&mut run);
        let err = run.run(&test_device(), &mut |_| {}).unwrap_err();
        match &err {
            TrainError::InvalidSetting { setting: s, .. } => assert_eq!(s, setting, "{err}"),
            other => panic!("{setting}: {other}"),
        }
        assert!(err.to_string().contains(&format!("`{setting}`")), "{err}");
        assert!(!out.exists(), "{setting}: nothing written before the check");
    }
    let missing = SftRun::default().validate().unwrap_err();
    assert!(
        matches!(&missing, TrainError::MissingSetting { setting, .. } if setting == "model"),
        "{missing}"
    );
    for (setting, run) in [
        (
            "eval_split",
            ClassifyRun {
                eval_split: 1.0,
                ..classify_base()
            },
        ),
        (
            "eval_split",
            ClassifyRun {
                eval_split: -0.1,
                ..classify_base()
            },
        ),
        (
            "max_length",
            ClassifyRun {
                max_length: 1,
                ..classify_base()
            },
        ),
    ] {
        let err = run.validate().unwrap_err();
        assert!(err.to_string().contains(&format!("`{setting}`")), "{err}");
    }
    let annotate = AnnotateRun {
        model: Some("m".into()),
        data: Some("d".into()),
        out: Some("o".into()),
        ..Default::default()
    };
    let err = annotate.validate().unwrap_err();
    assert!(err.to_string().contains("--labels"), "{err}");
    let err = PredictRun {
        batch_size: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(
        err.to_string().contains("`model`"),
        "required paths first: {err}"
    );
}

fn classify_base() -> ClassifyRun {
    ClassifyRun {
        model: Some("m".into()),
        data: Some("d".into()),
        out: Some("o".into()),
        ..Default::default()
    }
}

/// Config files: unknown keys are errors naming them, the top-level LoRA keys fold into
/// `lora`, flags (overrides) win section by section.
#[test]
fn run_configs_merge_files_and_flags() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("sft.json");
    std::fs::write(
        &file,
        r#"{"lora_r": 4, "lora": {"use_dora": true, "rank_pattern": {"q_proj": 2}}, "steps": 2, "lr": 0.1}"#,
    )
    .unwrap();
    let run: SftRun = runs::resolve(
        Some(&file),
        json!({"steps": 6, "lora_alpha": 3.0, "use_rslora": true}),
    )
    .unwrap();
    assert_eq!((run.steps, run.lr), (6, 0.1));
    assert_eq!((run.lora.r, run.lora.lora_alpha), (4, 3.0));
    assert!(run.lora.use_dora && run.lora.use_rslora);
    assert_eq!(run.lora.rank_pattern["q_proj"], 2);
    assert_eq!(
        run.lora.task_type.as_deref(),
        Some("CAUSAL_LM"),
        "a partial lora section keeps the run's LoRA defaults"
    );
    let partial: SftRun = runs::from_json(json!({"lora": {"use_dora": true}}), "x").unwrap();
    assert_eq!((partial.lora.r, partial.lora.lora_alpha), (16, 32.0));
    assert_eq!(
        run.batch_size,
        SftRun::default().batch_size,
        "defaults fill the rest"
    );
    // The resolved config, printed and read back, is the same config.
    let printed = run.to_json().unwrap();
    assert_eq!(runs::from_json::<SftRun>(printed, "printed").unwrap(), run);
    std::fs::write(&file, r#"{"stepz": 3}"#).unwrap();
    let err = runs::resolve::<SftRun>(Some(&file), json!({})).unwrap_err();
    assert!(
        err.to_string().contains("sft.json") && err.to_string().contains("`stepz`"),
        "{err}"
    );
    let typo = json!({"model": "m", "data": "d.jsonl", "out": "o", "lora": {"use_dorra": true}});
    let err = runs::from_json::<SftRun>(typo, "x")
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("lora.use_dorra"), "{err}");
    let err = runs::from_json::<SftRun>(json!({"lora_r": 4, "lora": {"r": 8}}), "x").unwrap_err();
    assert!(err.to_string().contains("`lora_r` and `lora.r`"), "{err}");
    let err = runs::from_json::<PredictRun>(json!({"lr": 1.0}), "predict.json").unwrap_err();
    assert!(err.to_string().contains("`lr`"), "{err}");
}

/// One unpadded forward per row: the log-probability of each one-token label after the
/// prompt, as a softmax over the labels.
fn label_probs(model: &DecoderLm, prompt: &[u32], labels: &[u32]) -> Vec<f64> {
    let logits = model
        .forward(&DecoderInput::unpadded(&[prompt.to_vec()]).unwrap(), None)
        .unwrap();
    let v: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().unwrap();
    let vocab = v.len() / prompt.len();
    let last = &v[(prompt.len() - 1) * vocab..];
    let scores: Vec<f64> = labels
        .iter()
        .map(|&l| f64::from(last[l as usize]))
        .collect();
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
    scores.iter().map(|s| (s - max).exp() / sum).collect()
}

/// `annotate` as a library call: every row comes back in order with the label probabilities
/// of one unpadded forward per text (the run batches and pads texts × labels).
#[test]
fn annotate_run_labels_rows_as_single_forwards_do() {
    let model = with_tokenizer("models/llama_gqa");
    let work = tempfile::tempdir().unwrap();
    let texts: Vec<Vec<u32>> = (0..7u32)
        .map(|i| {
            (0..(2 + i % 4))
                .map(|j| (i * 31 + j * 7) % 240 + 10)
                .collect()
        })
        .collect();
    let rows: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "body": words(t)}))
        .collect();
    let data = write_jsonl(&work.path().join("texts.jsonl"), &rows);
    let out = work.path().join("labelled.jsonl");
    let run = AnnotateRun {
        model: Some(model.path().into()),
        data: Some(data),
        text_field: "body".into(),
        labels: vec!["t5".into(), "t9".into(), "t11".into()],
        template: "t1 {text} t30".into(),
        out: Some(out.clone()),
        batch_size: 4,
        ..Default::default()
    };
    let o = run.run(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(o.rows, 7);
    let llm = DecoderLm::load(model.path(), &test_device()).unwrap();
    let got = read_jsonl(&out);
    assert_eq!(got.len(), 7);
    for (i, (row, t)) in got.iter().zip(&texts).enumerate() {
        assert_eq!(row["id"], i);
        let prompt = [vec![1], t.clone(), vec![30]].concat();
        let want = label_probs(&llm, &prompt, &[5, 9, 11]);
        let probs: Vec<f64> = ["t5", "t9", "t11"]
            .iter()
            .map(|l| row["probabilities"][l].as_f64().unwrap())
            .collect();
        let d = max_abs_diff(&probs, &want);
        assert!(d <= 1e-5, "row {i}: {probs:?} vs {want:?}: {d:e}");
        let best = ["t5", "t9", "t11"][want
            .iter()
            .enumerate()
            .fold(0, |b, (j, p)| if *p > want[b] { j } else { b })];
        assert_eq!(row["label"], best);
    }
    // A malformed line is named by file and line, and no output is left behind.
    std::fs::write(work.path().join("bad.jsonl"), "{\"body\": \"t1\"}\n{oops\n").unwrap();
    let bad_out = work.path().join("bad_out.jsonl");
    let err = AnnotateRun {
        data: Some(work.path().join("bad.jsonl")),
        out: Some(bad_out.clone()),
        ..run.clone()
    }
    .run(&test_device(), &mut |_| {})
    .unwrap_err();
    assert!(err.to_string().contains("bad.jsonl:2"), "{err}");
    assert!(!bad_out.exists() && !bad_out.with_extension("jsonl.tmp").exists());
    // A prompt-learning adapter is refused, not ignored.
    let err = AnnotateRun {
        adapter: Some(fixture_path("peft/llama_prompt")),
        ..run
    }
    .run(&test_device(), &mut |_| {})
    .unwrap_err();
    assert!(err.to_string().contains("prompt-learning"), "{err}");
}

/// `train classify` then `predict` as library calls on a BERT and a NorBERT3 fixture: the
/// adapter carries the family's targets and head, and predict's batched probabilities equal
/// one unpadded forward per row of the saved classifier; the held-out report counts them.
#[test]
fn classify_then_predict_runs_agree_with_single_forwards() {
    for (fixture, head) in [
        ("encoders/bert_cls", "classifier"),
        ("encoders/ltg_bert_mlm", "head"),
    ] {
        let model = with_tokenizer(fixture);
        let work = tempfile::tempdir().unwrap();
        let rows: Vec<Value> = (0..20)
            .map(|i| {
                let label = ["nb", "nn"][i % 2];
                json!({"text": format!("t{} t{} t{}", 10 + i % 2, 30 + i, 50 + i % 2), "label": label})
            })
            .collect();
        let data = write_jsonl(&work.path().join("labelled.jsonl"), &rows);
        let run = ClassifyRun {
            model: Some(model.path().into()),
            data: Some(data.clone()),
            out: Some(work.path().join("cls")),
            batch_size: 6,
            lr: 5e-3,
            steps: 10,
            eval_split: 0.2,
            ..Default::default()
        };
        let o = run.run(&test_device(), &mut |_| {}).unwrap();
        assert_eq!(o.labels, ["nb", "nn"], "{fixture}");
        assert!(o.summary.last_loss < o.summary.first_loss, "{fixture}");
        let cfg: Value = serde_json::from_str(
            &std::fs::read_to_string(o.adapter.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(cfg["modules_to_save"], json!([head]), "{fixture}");
        assert_eq!(cfg["task_type"], "SEQ_CLS");
        let preds = work.path().join("preds.jsonl");
        let p = PredictRun {
            model: Some(model.path().into()),
            adapter: Some(o.adapter.clone()),
            data: Some(data),
            out: Some(preds.clone()),
            batch_size: 7,
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap();
        assert_eq!(p.rows, 20);
        // The saved classifier, one row at a time.
        let tok = Tokenizer::from_dir(model.path()).unwrap();
        let base = EncoderModel::load(model.path(), &test_device())
            .unwrap()
            .with_new_classifier(&o.labels, 0)
            .unwrap();
        let mut peft = PeftModel::new(base);
        peft.load_adapter(&o.adapter, "default").unwrap();
        let clf = peft.into_model();
        let got = read_jsonl(&preds);
        let mut correct = 0;
        for (i, (row, src)) in got.iter().zip(&rows).enumerate() {
            let ids = tok.encode(src["text"].as_str().unwrap(), true).unwrap();
            let input = EncoderInput::from_batch(&tilpass::tokenize::Batch::from_ids(
                &[ids],
                tilpass::tokenize::Padding::right(0),
            ))
            .unwrap();
            let logits: Vec<f32> = clf
                .classify(&input)
                .unwrap()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            let max = logits.iter().cloned().fold(f32::MIN, f32::max);
            let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            let want: Vec<f64> = logits
                .iter()
                .map(|l| f64::from((l - max).exp() / sum))
                .collect();
            let probs: Vec<f64> = ["nb", "nn"]
                .iter()
                .map(|l| row["probabilities"][l].as_f64().unwrap())
                .collect();
            let d = max_abs_diff(&probs, &want);
            assert!(d <= 1e-5, "{fixture} row {i}: {probs:?} vs {want:?}: {d:e}");
            if i >= 16 && row["label"] == src["label"] {
                correct += 1;
            }
        }
        let eval = o.eval.unwrap();
        assert_eq!(eval.support, [2, 2], "{fixture}: the last 20% held out");
        assert!(
            (eval.accuracy - f64::from(correct) / 4.0).abs() < 1e-12,
            "{fixture}"
        );
    }
}

/// Perplexity from the library equals the one from the transformers fixture's logits.
#[test]
fn text_perplexity_equals_the_transformers_logits() {
    let model = with_tokenizer("models/llama_gqa");
    let ids = [1u32, 17, 42, 99, 200, 3, 5, 7, 11, 13, 250, 128];
    let llm = DecoderLm::load(model.path(), &test_device()).unwrap();
    let tok = Tokenizer::from_dir(model.path()).unwrap();
    let p = text_perplexity(&llm, &tok, &[words(&ids), "t5".into()]).unwrap();
    assert_eq!((p.texts, p.truncated, p.scores.tokens), (2, 0, 11));
    let logits = Checkpoint::open(fixture_path("models/llama_gqa/expected.safetensors"))
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
    let got = p.scores.perplexity;
    assert!((got - want).abs() / want < 1e-4, "{got} vs {want}");
}

/// `SftRun` on an encoder-decoder: `run` (decoders) refuses it naming `run_seq2seq`;
/// `run_seq2seq` refuses decoder-only settings before any work and otherwise trains a
/// SEQ_2_SEQ_LM adapter whose evaluations carry greedy sample answers.
#[test]
fn sft_run_takes_encoder_decoders_through_run_seq2seq() {
    let model = with_tokenizer("encoders/t5_v1_1");
    std::fs::write(
        model.path().join("tokenizer_config.json"),
        r#"{"eos_token": "t1", "pad_token": "t0"}"#,
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..6)
        .map(|i| {
            json!({"messages": [{"role": "user", "content": format!("t{} t{}", 10 + i, 20 + i)},
                                {"role": "assistant", "content": "t40 t41"}]})
        })
        .collect();
    let data = write_jsonl(&work.path().join("chat.jsonl"), &rows);
    let base = SftRun {
        model: Some(model.path().to_path_buf()),
        data: Some(DatasetSpec::File(data.clone())),
        eval_data: Some(DatasetSpec::File(data)),
        out: Some(work.path().join("run")),
        steps: 2,
        eval_steps: Some(2),
        sample_max_new_tokens: 3,
        batch_size: 3,
        lora: tilpass::peft::LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            target_modules: Some(tilpass::peft::TargetModules::List(vec![
                "q".into(),
                "v".into(),
            ])),
            ..SftRun::default().lora
        },
        ..Default::default()
    };
    let err = base.run(&test_device(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "model")
            && err.to_string().contains("run_seq2seq"),
        "{err}"
    );
    for (bad, name) in [
        (
            SftRun {
                packing: true,
                ..base.clone()
            },
            "packing",
        ),
        (
            SftRun {
                completion_only_loss: Some(false),
                ..base.clone()
            },
            "completion_only_loss",
        ),
        (
            SftRun {
                assistant_only_loss: false,
                ..base.clone()
            },
            "assistant_only_loss",
        ),
    ] {
        let err = bad.run_seq2seq(&test_device(), &mut |_| {}).unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == name),
            "{name}: {err}"
        );
        assert!(!work.path().join("run").exists(), "refused before any work");
    }
    let out = base.run_seq2seq(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(out.summary.steps, 2);
    let eval = out.final_eval.expect("an evaluation at the last step");
    assert_eq!(eval.samples.len(), 2, "sample answers to held-out sources");
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(out.saved.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
}
