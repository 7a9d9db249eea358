//! Decoder sequence classifiers (`tilpass train classify --model <decoder>`): Llama and GPT-2
//! `*ForSequenceClassification` made from the tiny causal LMs, LoRA (PEFT's default targets,
//! the `score` head in `modules_to_save`) and full fine-tuning against transformers / PEFT +
//! torch AdamW (tests/fixtures/train/classify/{llama,gpt2}_{lora,full}, made by
//! tests/fixtures/generate_classify_methods.py): initial logits, losses, learning rates and
//! gradient norms of three steps, final logits, reload, and the files tilpass saved loading in
//! PEFT / transformers with the same logits (the script's `--verify`). Then every decoder
//! method end to end through `ClassifyRun` / `PredictRun`, and the typed errors: no pad id
//! with batches of several rows, a checkpoint head of another number of labels.

use std::path::Path;

use serde_json::{Value, json};
use tilpass::models::{DecoderClassifier, EncoderInput, ScoreInit};
use tilpass::peft::{PeftModel, PromptAdapter};
use tilpass::train::classify_methods::{
    ClassifyMethod, DecoderPromptClassifier, decoder_prompt_dims, load_classifier,
    save_full_decoder_classifier,
};
use tilpass::train::{
    ClassifyRun, ClsBatch, Event, PredictRun, Target, TrainError, train_classifier,
    train_prompt_classifier,
};
use tilpass_tests::{fixture_json, fixture_path, test_device};

use crate::classify_methods::{
    LOGITS, ROOT, check_steps, config, hashed, logits, max_abs, reference, round_trip,
};

/// Logits on batch 0 of the files in a directory.
type Reload = dyn Fn(&Path) -> Vec<f32>;

/// The pad id the reference sets in the config (`decoder_batches.json` pads with it).
const PAD: u32 = 0;

fn base_of(family: &str) -> &'static str {
    match family {
        "llama" => "models/llama_gqa",
        _ => "models/gpt2",
    }
}

fn decoder_batches() -> Vec<ClsBatch> {
    fixture_json(&format!("{ROOT}/decoder_batches.json"))["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let ids: Vec<Vec<u32>> = serde_json::from_value(b["input_ids"].clone()).unwrap();
            let mask: Vec<Vec<u8>> = serde_json::from_value(b["attention_mask"].clone()).unwrap();
            let (batch, seq) = (ids.len(), ids[0].len());
            ClsBatch {
                input: EncoderInput {
                    input_ids: ids.concat(),
                    attention_mask: mask.concat(),
                    token_type_ids: vec![0; batch * seq],
                    batch,
                    seq,
                },
                labels: serde_json::from_value(b["labels"].clone()).unwrap(),
            }
        })
        .collect()
}

/// The base as the reference starts it: three labels, pad id 0, the reference's initial head.
fn start(
    family: &str,
    ck: &tilpass::core::Checkpoint,
    dev: &tilpass::burn::tensor::Device,
) -> DecoderClassifier {
    let init = ScoreInit::NewIfMissing {
        num_labels: 3,
        seed: 0,
    };
    let mut m = DecoderClassifier::load_with(fixture_path(base_of(family)), init, dev).unwrap();
    m.set_pad_token_id(Some(PAD));
    let w = ck.read_f32("initial_score").unwrap();
    assert_eq!(w.shape, vec![3, 64], "{family}: [labels, hidden]");
    let head = m.score_head_mut();
    head.weight =
        tilpass::burn::module::Param::from_tensor(w.transposed().unwrap().to_tensor(dev).unwrap());
    m
}

fn labels3() -> Vec<String> {
    (0..3).map(|i| format!("LABEL_{i}")).collect()
}

fn check_decoder_case(family: &str, method: &str) {
    let case = format!("{family}_{method}");
    let dev = test_device().autodiff();
    let (reference, ck) = reference(&case);
    let data = decoder_batches();
    let base = fixture_path(base_of(family));
    let mut peft = PeftModel::new(start(family, &ck, &dev));
    let full = method == "full";
    if !full {
        let initial = fixture_path(&format!("{ROOT}/{case}/initial"));
        let cfg = peft.load_adapter(&initial, "default").unwrap();
        assert_eq!(cfg.task_type.as_deref(), Some("SEQ_CLS"));
        peft.freeze_base();
    }
    let d = max_abs(
        &logits(peft.model(), &data[0]),
        &ck.read_f32("logits").unwrap().data,
    );
    eprintln!("measured {case}: initial logits {d:.2e}");
    assert!(d <= 1e-5, "{case}: initial logits {d}");
    let mut steps = Vec::new();
    let mut on = |e: Event| {
        if let Event::Step(s) = e {
            steps.push(s.clone());
        }
    };
    let cfg = config(&reference);
    if full {
        train_classifier(&mut peft, Target::Full, &data, &cfg, None, &mut on).unwrap();
    } else {
        train_classifier(&mut peft, "default", &data, &cfg, None, &mut on).unwrap();
    }
    check_steps(&case, &steps, &reference);
    let ours = logits(peft.model(), &data[0]);
    let d = max_abs(&ours, &ck.read_f32("final_logits").unwrap().data);
    eprintln!("measured {case}: final logits {d:.2e}");
    assert!(d <= LOGITS, "{case}: final logits {d}");
    let dir = tempfile::tempdir().unwrap();
    let (sub, reload): (&str, Box<Reload>) = if full {
        save_full_decoder_classifier(peft.model(), &base, &labels3(), dir.path()).unwrap();
        let cfg: Value = tilpass::core::read_json(dir.path().join("config.json")).unwrap();
        assert_eq!(
            cfg["pad_token_id"],
            json!(PAD),
            "{case}: the pad id is saved"
        );
        let base = base.clone();
        let data = data.clone();
        (
            "model",
            Box::new(move |p: &Path| {
                let (m, names) = load_classifier(&base, p, &test_device()).unwrap();
                assert_eq!(names, labels3());
                logits(&m, &data[0])
            }),
        )
    } else {
        peft.save_adapter("default", dir.path()).unwrap();
        let saved =
            tilpass::core::Checkpoint::open(dir.path().join("adapter_model.safetensors")).unwrap();
        let head = saved.read_f32("base_model.model.score.weight").unwrap();
        assert_eq!(head.shape, vec![3, 64], "{case}: the head in PEFT's layout");
        let data = data.clone();
        let family = family.to_string();
        (
            "adapter",
            Box::new(move |p: &Path| {
                let dev = test_device();
                let init = ScoreInit::NewIfMissing {
                    num_labels: 3,
                    seed: 7,
                };
                let mut m =
                    DecoderClassifier::load_with(fixture_path(base_of(&family)), init, &dev)
                        .unwrap();
                m.set_pad_token_id(Some(PAD));
                let mut peft = PeftModel::new(m);
                peft.load_adapter(p, "default").unwrap();
                logits(&peft.into_model(), &data[0])
            }),
        )
    };
    let d = max_abs(&reload(dir.path()), &ours);
    assert!(d <= 1e-6, "{case}: reloaded {d}");
    round_trip(&case, sub, dir.path(), &ours, &*reload);
}

#[test]
fn llama_classifier_lora_and_full_train_as_peft_and_transformers() {
    check_decoder_case("llama", "lora");
    check_decoder_case("llama", "full");
}

#[test]
fn gpt2_classifier_lora_and_full_train_as_peft_and_transformers() {
    check_decoder_case("gpt2", "lora");
    check_decoder_case("gpt2", "full");
}

/// Prompt tuning / P-tuning / prefix tuning of the Llama classifier from PEFT's initial
/// adapter (table, head, prompt encoder).
fn check_decoder_prompt_case(method: &str) {
    let case = format!("llama_{method}");
    let dev = test_device().autodiff();
    let (reference, ck) = reference(&case);
    let data = decoder_batches();
    let mut model = start("llama", &ck, &dev);
    let initial = fixture_path(&format!("{ROOT}/{case}/initial"));
    let prompt = PromptAdapter::load_with(&initial, decoder_prompt_dims(&model), &dev).unwrap();
    assert_eq!(
        prompt.apply_saved_modules(&mut model).unwrap(),
        1,
        "{case}: the head"
    );
    let mut pm = DecoderPromptClassifier::new(model, prompt);
    let d = max_abs(&logits(&pm, &data[0]), &ck.read_f32("logits").unwrap().data);
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
    check_steps(&case, &steps, &reference);
    let dir = tempfile::tempdir().unwrap();
    pm.save(dir.path()).unwrap();
    let saved =
        tilpass::core::Checkpoint::open(dir.path().join("adapter_model.safetensors")).unwrap();
    let table = saved.read_f32("prompt_embeddings").unwrap().data;
    let d = max_abs(&table, &ck.read_f32("final").unwrap().data);
    eprintln!("measured {case}: final prompt_embeddings {d:.2e}");
    assert!(d <= 5e-5, "{case}: final table {d}");
    let head = saved.read_f32("base_model.score.weight").unwrap();
    let want_head = ck.read_f32("final_head").unwrap();
    assert_eq!(
        head.shape, want_head.shape,
        "{case}: head layout [labels, hidden]"
    );
    let d = max_abs(&head.data, &want_head.data);
    assert!(d <= 5e-5, "{case}: final head {d}");
    let ours = logits(&pm, &data[0]);
    let d = max_abs(&ours, &ck.read_f32("final_logits").unwrap().data);
    eprintln!("measured {case}: final logits {d:.2e}");
    assert!(d <= LOGITS, "{case}: final logits {d}");
    let reload = |p: &Path| {
        let dev = test_device();
        let mut m = DecoderClassifier::load_with(
            fixture_path("models/llama_gqa"),
            ScoreInit::NewIfMissing {
                num_labels: 3,
                seed: 7,
            },
            &dev,
        )
        .unwrap();
        m.set_pad_token_id(Some(PAD));
        logits(
            &DecoderPromptClassifier::load(m, p, &dev).unwrap(),
            &data[0],
        )
    };
    let d = max_abs(&reload(dir.path()), &ours);
    assert!(d <= 1e-6, "{case}: reloaded {d}");
    round_trip(&case, "adapter", dir.path(), &ours, &reload);
}

#[test]
fn llama_classifier_prompt_methods_train_as_peft() {
    check_decoder_prompt_case("prompt");
    check_decoder_prompt_case("ptuning");
    check_decoder_prompt_case("prefix");
}

/// A copy of a decoder fixture with the word-level tokenizer and, with `pad`, `t0` as its pad
/// token (what a user's tokenizer gives when the config has no `pad_token_id`).
fn decoder_dir(fixture: &str, pad: bool) -> tempfile::TempDir {
    let dir = crate::runs::with_tokenizer(fixture);
    if pad {
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            json!({"pad_token": "t0"}).to_string(),
        )
        .unwrap();
    }
    dir
}

fn topic_rows(n: usize) -> Vec<Value> {
    tilpass::data::embedded::norsk_topic(Some("train"))
        .unwrap()
        .iter()
        .take(n)
        .map(|t| json!({"text": hashed(&t.text), "label": t.label}))
        .collect()
}

#[test]
fn decoder_methods_train_save_and_predict_on_norsk_topic() {
    let work = tempfile::tempdir().unwrap();
    let rows = topic_rows(32);
    let data = crate::runs::write_jsonl(&work.path().join("topic.jsonl"), &rows);
    for fixture in ["models/llama_gqa", "models/gpt2"] {
        let model = decoder_dir(fixture, true);
        // Every method on Llama; GPT-2 lora, dora and full.
        let methods: &[ClassifyMethod] = if fixture == "models/gpt2" {
            &[
                ClassifyMethod::Lora,
                ClassifyMethod::Dora,
                ClassifyMethod::Full,
            ]
        } else {
            &ClassifyMethod::ALL
        };
        for &method in methods {
            let prompt = method.prompt_method().is_some();
            let out = work
                .path()
                .join(format!("{}-{}", fixture.replace('/', "_"), method.name()));
            let o = ClassifyRun {
                model: Some(model.path().into()),
                data: Some(data.clone()),
                out: Some(out.clone()),
                method,
                num_virtual_tokens: prompt.then_some(4),
                prefix_projection: method == ClassifyMethod::Prefix,
                encoder_hidden_size: (method == ClassifyMethod::PTuning).then_some(8),
                batch_size: 8,
                lr: 5e-3,
                steps: 3,
                max_length: 24,
                eval_split: 0.25,
                ..Default::default()
            }
            .run(&test_device(), &mut |_| {})
            .unwrap();
            assert!(o.summary.last_loss.is_finite(), "{fixture} {method}");
            let eval = o.eval.expect("held-out rows");
            if method == ClassifyMethod::Full {
                let cfg: Value = tilpass::core::read_json(o.adapter.join("config.json")).unwrap();
                assert_eq!(
                    cfg["pad_token_id"],
                    json!(0),
                    "the tokenizer's pad id is saved"
                );
                assert!(
                    cfg["architectures"][0]
                        .as_str()
                        .unwrap()
                        .ends_with("ForSequenceClassification")
                );
            } else {
                let cfg: Value =
                    tilpass::core::read_json(o.adapter.join("adapter_config.json")).unwrap();
                assert_eq!(cfg["task_type"], "SEQ_CLS", "{fixture} {method}");
                if prompt {
                    let saved = tilpass::core::Checkpoint::open(
                        o.adapter.join("adapter_model.safetensors"),
                    )
                    .unwrap();
                    let head = saved.read_f32("base_model.score.weight").unwrap();
                    assert_eq!(head.shape, vec![o.labels.len(), 64], "{method}");
                } else {
                    assert_eq!(cfg["modules_to_save"], json!(["classifier", "score"]));
                    assert_eq!(cfg["use_dora"], json!(method == ClassifyMethod::Dora));
                }
            }
            let mut runs = vec![(model.path().to_path_buf(), Some(o.adapter.clone()))];
            if method == ClassifyMethod::Full {
                // The saved model directory predicts on its own too.
                runs.push((o.adapter.clone(), None));
            }
            for (i, (m, adapter)) in runs.into_iter().enumerate() {
                let preds = out.with_extension(format!("{i}.preds.jsonl"));
                let p = PredictRun {
                    model: Some(m),
                    adapter,
                    data: Some(data.clone()),
                    out: Some(preds.clone()),
                    batch_size: 5,
                    ..Default::default()
                }
                .run(&test_device(), &mut |_| {})
                .unwrap();
                assert_eq!(p.rows, rows.len());
                let lines: Vec<Value> = std::fs::read_to_string(&preds)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                let right = lines[24..]
                    .iter()
                    .zip(&rows[24..])
                    .filter(|(p, r)| p["label"] == r["label"])
                    .count();
                if prompt && method != ClassifyMethod::Prefix {
                    // Scored at the last column, which depends on the batch's padding, and
                    // predict batches rows by length: only the labels are checked.
                    assert!(
                        lines
                            .iter()
                            .all(|l| o.labels.iter().any(|n| l["label"] == json!(n))),
                        "{method}"
                    );
                } else {
                    assert!(
                        (right as f64 / 8.0 - eval.accuracy).abs() < 1e-9,
                        "{fixture} {method}: predict's accuracy {right}/8 vs the run's {}",
                        eval.accuracy
                    );
                }
            }
        }
    }
}

#[test]
fn decoder_classifier_errors_are_typed_and_come_before_training() {
    let work = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = (0..12)
        .map(|i| json!({"text": format!("t{} t{}", 10 + i, 20 + i % 3), "label": (["a", "b", "c"][i % 3])}))
        .collect();
    let data = crate::runs::write_jsonl(&work.path().join("three.jsonl"), &rows);
    let run = |model: &Path, out: &str, method: ClassifyMethod, batch_size: usize| ClassifyRun {
        model: Some(model.into()),
        data: Some(data.clone()),
        out: Some(work.path().join(out)),
        method,
        num_virtual_tokens: method.prompt_method().map(|_| 2),
        batch_size,
        steps: 2,
        max_length: 16,
        eval_split: 0.0,
        ..Default::default()
    };
    // No pad id in the config nor the tokenizer: batches of several rows are refused as in
    // transformers (prompt methods too: PEFT hands transformers `inputs_embeds`, which it
    // refuses to score in batches without a pad id); one-row batches train.
    let no_pad = decoder_dir("models/llama_gqa", false);
    for method in [ClassifyMethod::Lora, ClassifyMethod::Prompt] {
        let out = format!("nopad-{method}");
        let err = run(no_pad.path(), &out, method, 4)
            .run(&test_device(), &mut |_| {})
            .unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "batch_size"),
            "{err}"
        );
        assert!(err.to_string().contains("pad"), "{err}");
        assert!(!work.path().join(out).join("adapter").exists());
    }
    let o = run(no_pad.path(), "nopad1", ClassifyMethod::Lora, 1)
        .run(&test_device(), &mut |_| {})
        .unwrap();
    assert!(o.summary.last_loss.is_finite());
    // A classifier checkpoint whose head has another number of labels than the data.
    let model = decoder_dir("models/llama_gqa", true);
    let full = run(model.path(), "full", ClassifyMethod::Full, 4)
        .run(&test_device(), &mut |_| {})
        .unwrap();
    let two: Vec<Value> = (0..8)
        .map(|i| json!({"text": format!("t{} t{}", 10 + i, 20 + i % 2), "label": (["a", "b"][i % 2])}))
        .collect();
    let data2 = crate::runs::write_jsonl(&work.path().join("two.jsonl"), &two);
    let err = ClassifyRun {
        data: Some(data2),
        ..run(&full.adapter, "mismatch", ClassifyMethod::Lora, 4)
    }
    .run(&test_device(), &mut |_| {})
    .unwrap_err();
    assert!(err.to_string().contains("score.weight"), "{err}");
    assert!(!work.path().join("mismatch/adapter").exists());
}
