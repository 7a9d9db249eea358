//! Classifier adaptation methods (`tilpass train classify --method`) against PEFT 0.21.2 /
//! transformers + torch AdamW (tests/fixtures/train/classify, made by
//! tests/fixtures/generate_classify_methods.py) on the tiny BERT sequence classifier: prompt
//! tuning, P-tuning, prefix tuning (with and without the projection) as PEFT's
//! `PeftModelForSequenceClassification` (the head trained alongside), and full fine-tuning.
//! For each: the initial logits equal the reference's; three steps give its losses, learning
//! rates and gradient norms; the final table, head and logits match; what tilpass saves
//! reloads with the same logits, and the committed files tilpass wrote (see
//! `TILPASS_WRITE_CLASSIFY_ROUNDTRIP` and the script's `--verify`) give PEFT's / transformers'
//! logits. Then every method end to end through `ClassifyRun` / `PredictRun` on the embedded
//! norsk-topic data, and bad settings as typed errors naming them.

use std::path::Path;

use serde_json::{Value, json};
use tilpass::core::Checkpoint;
use tilpass::models::{Bert, BertConfig, EncoderInput, EncoderModel, SequenceClassifier};
use tilpass::peft::{PeftModel, PromptAdapter};
use tilpass::train::classify_methods::{
    ClassifyMethod, PromptClassifier, bert_prompt_dims, load_classifier, save_full_classifier,
};
use tilpass::train::{
    AdamWConfig, ClassifyRun, ClsBatch, Event, PredictRun, RunConfig, StepLog, Target, TrainConfig,
    TrainError, train_classifier, train_prompt_classifier,
};
use tilpass_tests::{fixture_json, fixture_path, test_device};

pub(crate) const ROOT: &str = "train/classify";
/// Loss and gradient norm per step, relative (DESIGN.md's 1e-5).
const LOSS: f64 = 1e-5;
/// Logits after training and of reloaded / round-tripped files, absolute.
pub(crate) const LOGITS: f64 = 1e-4;

fn table_tol() -> f64 {
    if crate::preference_losses::on_cpu() {
        1e-5
    } else {
        5e-5
    }
}

fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn batches() -> Vec<ClsBatch> {
    fixture_json(&format!("{ROOT}/batches.json"))["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let ids: Vec<Vec<u32>> = rows(&b["input_ids"]);
            let mask: Vec<Vec<u8>> = rows(&b["attention_mask"]);
            let types: Vec<Vec<u32>> = rows(&b["token_type_ids"]);
            let (batch, seq) = (ids.len(), ids[0].len());
            ClsBatch {
                input: EncoderInput {
                    input_ids: ids.concat(),
                    attention_mask: mask.concat(),
                    token_type_ids: types.concat(),
                    batch,
                    seq,
                },
                labels: serde_json::from_value(b["labels"].clone()).unwrap(),
            }
        })
        .collect()
}

pub(crate) fn config(reference: &Value) -> TrainConfig {
    let num = |k: &str| reference[k].as_f64().unwrap();
    TrainConfig {
        learning_rate: num("lr"),
        warmup_steps: num("warmup_steps") as usize,
        max_steps: num("total_steps") as usize,
        max_grad_norm: Some(num("max_grad_norm")),
        adamw: AdamWConfig {
            weight_decay: num("weight_decay"),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(crate) fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

pub(crate) fn logits<M: SequenceClassifier>(m: &M, b: &ClsBatch) -> Vec<f32> {
    m.classify(&b.input)
        .unwrap()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap()
}

pub(crate) fn reference(case: &str) -> (Value, Checkpoint) {
    (
        fixture_json(&format!("{ROOT}/{case}/reference.json")),
        Checkpoint::open(fixture_path(&format!(
            "{ROOT}/{case}/reference.safetensors"
        )))
        .unwrap(),
    )
}

pub(crate) fn check_steps(case: &str, steps: &[StepLog], reference: &Value) {
    let want = reference["steps"].as_array().unwrap();
    assert_eq!(steps.len(), want.len(), "{case}: steps");
    for (got, w) in steps.iter().zip(want) {
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        let (loss, norm) = (
            w["loss"].as_f64().unwrap(),
            w["grad_norm"].as_f64().unwrap(),
        );
        eprintln!(
            "measured {case} step {}: loss rel {:.2e}, grad norm rel {:.2e}",
            got.step,
            rel(got.loss, loss),
            rel(got.grad_norm, norm)
        );
        assert!(
            rel(got.loss, loss) <= LOSS,
            "{case} step {}: loss {} vs {loss}",
            got.step,
            got.loss
        );
        assert!(
            rel(got.grad_norm, norm) <= LOSS,
            "{case} step {}: grad norm {} vs {norm}",
            got.step,
            got.grad_norm
        );
        assert!(
            (got.lr - w["lr"].as_f64().unwrap()).abs() <= 1e-12,
            "{case}: lr"
        );
    }
}

fn bert(dev: &tilpass::burn::tensor::Device) -> Bert {
    let md = tilpass::core::ModelDir::open(fixture_path("encoders/bert_cls")).unwrap();
    let cfg: BertConfig = md.config().unwrap();
    Bert::load(cfg, None, &md.checkpoint().unwrap(), "config.json", dev).unwrap()
}

/// With `TILPASS_WRITE_CLASSIFY_ROUNDTRIP=DIR`, copies `files` to `DIR/<case>/<sub>` with the
/// logits on batch 0 for the script's `--verify`; otherwise checks the committed copy: the
/// logits tilpass gives for it equal the reference's (its `verified.json`).
pub(crate) fn round_trip(
    case: &str,
    sub: &str,
    files: &Path,
    ours: &[f32],
    reload: &dyn Fn(&Path) -> Vec<f32>,
) {
    if let Ok(root) = std::env::var("TILPASS_WRITE_CLASSIFY_ROUNDTRIP") {
        let d = Path::new(&root).join(case);
        let to = d.join(sub);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(files).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap();
            if name != "labels.json" {
                std::fs::copy(&p, to.join(name)).unwrap();
            }
        }
        std::fs::write(
            d.join("tilpass_logits.json"),
            json!({"logits": ours}).to_string(),
        )
        .unwrap();
        return;
    }
    let d = fixture_path(&format!("{ROOT}/roundtrip/{case}"));
    let verified: Value = fixture_json(&format!("{ROOT}/roundtrip/{case}/verified.json"));
    let want: Vec<f32> = serde_json::from_value(verified["logits"].clone()).unwrap();
    let got = reload(&d.join(sub));
    let diff = max_abs(&got, &want);
    eprintln!("measured {case}: tilpass vs reference on tilpass's committed files {diff:.2e}");
    assert!(diff <= LOGITS, "{case}: {diff}");
    // The committed files are what this training gives.
    let diff = max_abs(&got, ours);
    assert!(
        diff <= LOGITS,
        "{case}: the committed files are not this run's: {diff}"
    );
}

fn check_prompt_case(case: &str) {
    let dev = test_device().autodiff();
    let (reference, ck) = reference(case);
    let data = batches();
    let mut model = bert(&dev);
    let initial = fixture_path(&format!("{ROOT}/{case}/initial"));
    let prompt = PromptAdapter::load_with(&initial, bert_prompt_dims(&model), &dev).unwrap();
    assert_eq!(
        prompt.apply_saved_modules(&mut model).unwrap(),
        1,
        "{case}: the head"
    );
    let mut pm = PromptClassifier::new(model, prompt);
    let want = ck.read_f32("logits").unwrap().data;
    let d = max_abs(&logits(&pm, &data[0]), &want);
    eprintln!("measured {case}: initial logits {d:.2e}");
    assert!(d <= 1e-5, "{case}: initial logits {d}");
    assert_eq!(
        pm.trainable_report().split(" || ").next().unwrap(),
        format!("trainable params: {}", reference["trainable"]),
        "{case}: PEFT's trainable count (adapter + head)"
    );
    let mut steps = Vec::new();
    train_prompt_classifier(&mut pm, &data, &config(&reference), None, &mut |e| {
        if let Event::Step(s) = e {
            steps.push(s.clone());
        }
    })
    .unwrap();
    check_steps(case, &steps, &reference);
    let dir = tempfile::tempdir().unwrap();
    pm.save(dir.path()).unwrap();
    let saved = Checkpoint::open(dir.path().join("adapter_model.safetensors")).unwrap();
    let table = saved.read_f32("prompt_embeddings").unwrap().data;
    let d = max_abs(&table, &ck.read_f32("final").unwrap().data);
    eprintln!("measured {case}: final prompt_embeddings {d:.2e}");
    assert!(d <= table_tol(), "{case}: final table {d}");
    let head = saved.read_f32("base_model.classifier.weight").unwrap();
    let want_head = ck.read_f32("final_head").unwrap();
    assert_eq!(
        head.shape, want_head.shape,
        "{case}: head layout [labels, hidden]"
    );
    let d = max_abs(&head.data, &want_head.data);
    assert!(d <= table_tol(), "{case}: final head {d}");
    let ours = logits(&pm, &data[0]);
    let d = max_abs(&ours, &ck.read_f32("final_logits").unwrap().data);
    eprintln!("measured {case}: final logits {d:.2e}");
    assert!(d <= LOGITS, "{case}: final logits {d}");
    let cfg: Value = tilpass::core::read_json(dir.path().join("adapter_config.json")).unwrap();
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    let reload = |p: &Path| {
        let dev = test_device();
        logits(
            &PromptClassifier::load(bert(&dev), p, &dev).unwrap(),
            &data[0],
        )
    };
    let d = max_abs(&reload(dir.path()), &ours);
    assert!(d <= 1e-6, "{case}: reloaded {d}");
    round_trip(case, "adapter", dir.path(), &ours, &reload);
}

#[test]
fn prompt_tuning_classifier_trains_as_peft() {
    check_prompt_case("prompt");
}

#[test]
fn p_tuning_classifier_trains_as_peft() {
    check_prompt_case("ptuning");
}

#[test]
fn prefix_tuning_classifier_trains_as_peft() {
    check_prompt_case("prefix");
    check_prompt_case("prefix_projection");
}

/// LoRA / DoRA from PEFT's initial adapter (the head in `modules_to_save`): the loop of
/// `tilpass train classify --method lora|dora`.
fn check_lora_case(case: &str) {
    let dev = test_device().autodiff();
    let (reference, ck) = reference(case);
    let data = batches();
    let base = fixture_path("encoders/bert_cls");
    let initial = fixture_path(&format!("{ROOT}/{case}/initial"));
    let mut peft = PeftModel::new(EncoderModel::load(&base, &dev).unwrap());
    let cfg = peft.load_adapter(&initial, "default").unwrap();
    assert_eq!(cfg.use_dora, case == "dora", "{case}");
    assert_eq!(cfg.task_type.as_deref(), Some("SEQ_CLS"));
    peft.freeze_base();
    let d = max_abs(
        &logits(peft.model(), &data[0]),
        &ck.read_f32("logits").unwrap().data,
    );
    assert!(d <= 1e-5, "{case}: initial logits {d}");
    let mut steps = Vec::new();
    train_classifier(
        &mut peft,
        "default",
        &data,
        &config(&reference),
        None,
        &mut |e| {
            if let Event::Step(s) = e {
                steps.push(s.clone());
            }
        },
    )
    .unwrap();
    check_steps(case, &steps, &reference);
    let ours = logits(peft.model(), &data[0]);
    let d = max_abs(&ours, &ck.read_f32("final_logits").unwrap().data);
    eprintln!("measured {case}: final logits {d:.2e}");
    assert!(d <= LOGITS, "{case}: final logits {d}");
    let dir = tempfile::tempdir().unwrap();
    peft.save_adapter("default", dir.path()).unwrap();
    let reload = |p: &Path| {
        let dev = test_device();
        let mut m = PeftModel::new(EncoderModel::load(&base, &dev).unwrap());
        m.load_adapter(p, "default").unwrap();
        logits(&m.into_model(), &data[0])
    };
    let d = max_abs(&reload(dir.path()), &ours);
    assert!(d <= 1e-6, "{case}: reloaded {d}");
    round_trip(case, "adapter", dir.path(), &ours, &reload);
}

#[test]
fn lora_and_dora_classifiers_train_as_peft() {
    check_lora_case("lora");
    check_lora_case("dora");
}

#[test]
fn full_fine_tuning_of_a_classifier_trains_as_transformers_and_saves_a_model_dir() {
    let dev = test_device().autodiff();
    let (reference, ck) = reference("full");
    let data = batches();
    let base = fixture_path("encoders/bert_cls");
    let model = EncoderModel::load(&base, &dev).unwrap();
    let d = max_abs(
        &logits(&model, &data[0]),
        &ck.read_f32("logits").unwrap().data,
    );
    assert!(d <= 1e-5, "full: initial logits {d}");
    let mut peft = PeftModel::new(model);
    let mut steps = Vec::new();
    train_classifier(
        &mut peft,
        Target::Full,
        &data,
        &config(&reference),
        None,
        &mut |e| {
            if let Event::Step(s) = e {
                steps.push(s.clone());
            }
        },
    )
    .unwrap();
    check_steps("full", &steps, &reference);
    let ours = logits(peft.model(), &data[0]);
    let d = max_abs(&ours, &ck.read_f32("final_logits").unwrap().data);
    eprintln!("measured full: final logits {d:.2e}");
    assert!(d <= LOGITS, "full: final logits {d}");
    let labels: Vec<String> = ["negativ", "nøytral", "positiv"].map(String::from).to_vec();
    let dir = tempfile::tempdir().unwrap();
    save_full_classifier(peft.model(), &base, &labels, dir.path()).unwrap();
    let cfg: Value = tilpass::core::read_json(dir.path().join("config.json")).unwrap();
    assert_eq!(
        cfg["architectures"],
        json!(["BertForSequenceClassification"])
    );
    assert_eq!(cfg["id2label"]["1"], "nøytral");
    let reload = |p: &Path| {
        let dev = test_device();
        let (m, names) = load_classifier(&base, p, &dev).unwrap();
        assert_eq!(names, labels);
        logits(&m, &data[0])
    };
    let d = max_abs(&reload(dir.path()), &ours);
    assert!(d <= 1e-6, "full: reloaded {d}");
    round_trip("full", "model", dir.path(), &ours, &reload);
}

/// A word-level text of norsk-topic's sentence for the tiny fixture vocabulary (`t4`..`t255`
/// by a stable hash of each lower-cased word).
pub(crate) fn hashed(text: &str) -> String {
    text.split_whitespace()
        .map(|w| {
            let h = w
                .to_lowercase()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
            format!("t{}", 4 + h % 252)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_method_trains_saves_and_predicts_on_norsk_topic() {
    let model = crate::runs::with_tokenizer("encoders/bert_cls");
    let work = tempfile::tempdir().unwrap();
    let items = tilpass::data::embedded::norsk_topic(Some("train")).unwrap();
    let rows: Vec<Value> = items
        .iter()
        .take(48)
        .map(|t| json!({"text": hashed(&t.text), "label": t.label}))
        .collect();
    let data = crate::runs::write_jsonl(&work.path().join("topic.jsonl"), &rows);
    for method in ClassifyMethod::ALL {
        let prompt = method.prompt_method().is_some();
        let out = work.path().join(method.name());
        let run = ClassifyRun {
            model: Some(model.path().into()),
            data: Some(data.clone()),
            out: Some(out.clone()),
            method,
            num_virtual_tokens: prompt.then_some(4),
            prefix_projection: method == ClassifyMethod::Prefix,
            encoder_hidden_size: (method == ClassifyMethod::PTuning).then_some(8),
            batch_size: 8,
            lr: 5e-3,
            steps: 4,
            max_length: 24,
            eval_split: 0.25,
            ..Default::default()
        };
        let o = run.run(&test_device(), &mut |_| {}).unwrap();
        assert_eq!(o.method, method);
        assert!(o.summary.last_loss.is_finite(), "{method}");
        let eval = o.eval.expect("held-out rows");
        assert!((0.0..=1.0).contains(&eval.accuracy), "{method}");
        let saved = if method == ClassifyMethod::Full {
            assert!(
                o.adapter.join("config.json").exists()
                    && o.adapter.join("model.safetensors").exists()
            );
            out.join("model")
        } else {
            let cfg: Value =
                tilpass::core::read_json(o.adapter.join("adapter_config.json")).unwrap();
            assert_eq!(cfg["task_type"], "SEQ_CLS", "{method}");
            out.join("adapter")
        };
        assert_eq!(o.adapter, saved);
        let preds = work.path().join(format!("{}.preds.jsonl", method.name()));
        let p = PredictRun {
            model: Some(model.path().into()),
            adapter: Some(saved.clone()),
            data: Some(data.clone()),
            out: Some(preds.clone()),
            batch_size: 5,
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap();
        assert_eq!(p.rows, rows.len(), "{method}");
        // Prediction equals the trained classifier's evaluation on the held-out rows.
        let lines: Vec<Value> = std::fs::read_to_string(&preds)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let held = &lines[36..];
        let right = held
            .iter()
            .zip(&rows[36..])
            .filter(|(p, r)| p["label"] == r["label"])
            .count();
        assert!(
            (right as f64 / held.len() as f64 - eval.accuracy).abs() < 1e-9,
            "{method}: predict's accuracy {right}/{} vs the run's {}",
            held.len(),
            eval.accuracy
        );
    }
}

#[test]
fn bad_method_settings_are_typed_errors_naming_them() {
    let base = || ClassifyRun {
        model: Some("m".into()),
        data: Some("d".into()),
        out: Some("o".into()),
        ..Default::default()
    };
    let cases = [
        (
            "num_virtual_tokens",
            ClassifyRun {
                method: ClassifyMethod::Prompt,
                ..base()
            },
        ),
        (
            "num_virtual_tokens",
            ClassifyRun {
                method: ClassifyMethod::Prefix,
                num_virtual_tokens: Some(0),
                ..base()
            },
        ),
        (
            "num_virtual_tokens",
            ClassifyRun {
                num_virtual_tokens: Some(4),
                ..base()
            },
        ),
        (
            "prefix_projection",
            ClassifyRun {
                method: ClassifyMethod::PTuning,
                num_virtual_tokens: Some(4),
                prefix_projection: true,
                ..base()
            },
        ),
        (
            "encoder_hidden_size",
            ClassifyRun {
                method: ClassifyMethod::Prefix,
                num_virtual_tokens: Some(4),
                encoder_hidden_size: Some(8),
                ..base()
            },
        ),
        (
            "encoder_hidden_size",
            ClassifyRun {
                method: ClassifyMethod::PTuning,
                num_virtual_tokens: Some(4),
                encoder_hidden_size: Some(0),
                ..base()
            },
        ),
        (
            "encoder_hidden_size",
            ClassifyRun {
                encoder_hidden_size: Some(8),
                ..base()
            },
        ),
    ];
    for (setting, run) in cases {
        let err = run.validate().unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidSetting { setting: s, .. } if s == setting),
            "{setting}: {err}"
        );
        assert!(err.to_string().contains(&format!("`{setting}`")), "{err}");
    }
    let run: ClassifyRun = serde_json::from_value(json!({"method": "p-tuning"})).unwrap();
    assert_eq!(run.method, ClassifyMethod::PTuning);
    assert!(serde_json::from_value::<ClassifyRun>(json!({"method": "ia3"})).is_err());
    // Virtual tokens and text must fit BERT's positions (128 in the fixture): refused before
    // training.
    let bert_dir = crate::runs::with_tokenizer("encoders/bert_cls");
    let work0 = tempfile::tempdir().unwrap();
    let rows0: Vec<Value> = (0..8)
        .map(|i| json!({"text": format!("t{} t{}", 10 + i, 20 + i % 2), "label": (["a", "b"][i % 2])}))
        .collect();
    let data0 = crate::runs::write_jsonl(&work0.path().join("d.jsonl"), &rows0);
    let err = ClassifyRun {
        model: Some(bert_dir.path().into()),
        data: Some(data0),
        out: Some(work0.path().join("out")),
        method: ClassifyMethod::Prompt,
        num_virtual_tokens: Some(120),
        max_length: 24,
        eval_split: 0.0,
        ..Default::default()
    }
    .run(&test_device(), &mut |_| {})
    .unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "num_virtual_tokens"),
        "{err}"
    );
    assert!(err.to_string().contains("at most 104"), "{err}");
    assert!(!work0.path().join("out/adapter").exists());
    // Prompt learning on NorBERT3 / LTG-BERT: PEFT cannot apply it; refused before training,
    // naming the method, with nothing written but the run's config.
    let model = crate::runs::with_tokenizer("encoders/ltg_bert_cls");
    let work = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..8)
        .map(|i| json!({"text": format!("t{} t{}", 10 + i, 20 + i % 2), "label": (["a", "b"][i % 2])}))
        .collect();
    let data = crate::runs::write_jsonl(&work.path().join("d.jsonl"), &rows);
    for method in [
        ClassifyMethod::Prefix,
        ClassifyMethod::PTuning,
        ClassifyMethod::Prompt,
    ] {
        let out = work.path().join(method.name());
        let err = ClassifyRun {
            model: Some(model.path().into()),
            data: Some(data.clone()),
            out: Some(out.clone()),
            method,
            num_virtual_tokens: Some(2),
            eval_split: 0.0,
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "method"),
            "{method}: {err}"
        );
        assert!(err.to_string().contains("LTG-BERT"), "{err}");
        assert!(!out.join("adapter").exists(), "{method}: nothing saved");
    }
}
