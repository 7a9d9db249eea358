//! Training parity with PyTorch + PEFT (tests/fixtures/train/lora_sft, made by
//! tests/fixtures/generate_train.py): from the same initial LoRA adapter and the same batches,
//! five steps of AdamW with HF's linear warmup schedule and global-norm clipping give the same
//! losses, learning rates, gradient norms and final adapter.

use serde_json::Value;
use tilpass::burn::tensor::Tensor;
use tilpass::core::Checkpoint;
use tilpass::models::{DecoderInput, DecoderLm, shifted_log_probs};
use tilpass::peft::PeftModel;
use tilpass::train::{
    AdamW, AdamWConfig, LrSchedule, ScheduleKind, clip_global_norm, collect_grads,
};
use tilpass_tests::{fixture_json, fixture_path};

fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// transformers' causal-LM loss: mean next-token NLL over labels != -100.
fn causal_lm_loss(logits: Tensor<3>, labels: &[i64]) -> Tensor<1> {
    let (lp, mask) = shifted_log_probs(logits, labels).unwrap();
    let n = mask.iter().filter(|m| **m).count() as f64;
    lp.sum().neg().div_scalar(n)
}

#[test]
fn five_lora_sft_steps_match_pytorch_and_peft() {
    let reference = fixture_json("train/lora_sft/reference.json");
    let batches: Vec<Value> =
        serde_json::from_value(fixture_json("train/lora_sft/batches.json")).unwrap();
    let dev = tilpass_tests::test_device().autodiff();
    let mut peft = PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap());
    peft.load_adapter(fixture_path("train/lora_sft/initial"), "default")
        .unwrap();
    peft.freeze_base();
    let f = |k: &str| reference[k].as_f64().unwrap();
    let mut opt = AdamW::new(AdamWConfig {
        beta1: reference["betas"][0].as_f64().unwrap(),
        beta2: reference["betas"][1].as_f64().unwrap(),
        eps: f("eps"),
        weight_decay: f("weight_decay"),
    });
    let schedule = LrSchedule {
        base_lr: f("lr"),
        kind: ScheduleKind::Linear,
        warmup_steps: reference["warmup_steps"].as_u64().unwrap() as usize,
        total_steps: reference["total_steps"].as_u64().unwrap() as usize,
    };
    for (step, b) in batches.iter().enumerate() {
        let ids: Vec<Vec<u32>> = rows(&b["input_ids"]);
        let mask: Vec<Vec<u8>> = rows(&b["attention_mask"]);
        let labels: Vec<Vec<i64>> = rows(&b["labels"]);
        // Right padding: positions 0.. for the real tokens (transformers' default position ids
        // are 0..seq for every row; padding is never a label).
        let seq = ids[0].len();
        let input = DecoderInput {
            batch: ids.len(),
            seq,
            input_ids: ids.concat(),
            attention_mask: mask.concat(),
            position_ids: (0..ids.len()).flat_map(|_| 0..seq as i64).collect(),
        };
        let loss = causal_lm_loss(peft.forward(&input, None).unwrap(), &labels.concat());
        let value: f32 = loss.clone().inner().into_scalar::<f32>();
        let want = &reference["steps"][step];
        let rel = (f64::from(value) - want["loss"].as_f64().unwrap()).abs()
            / want["loss"].as_f64().unwrap();
        assert!(rel <= 1e-4, "step {step}: loss {value} vs {}", want["loss"]);
        let grads = loss.backward();
        let mut params = peft.trainable_params_mut();
        let mut g = collect_grads(&params, &grads);
        assert_eq!(g.len(), 8, "A and B of q_proj and v_proj in 2 layers");
        let norm = clip_global_norm(&mut g, f("max_grad_norm"));
        let want_norm = want["grad_norm"].as_f64().unwrap();
        assert!(
            (norm - want_norm).abs() / want_norm <= 1e-4,
            "step {step}: grad norm {norm} vs {want_norm}"
        );
        let lr = schedule.lr(step);
        assert!(
            (lr - want["lr"].as_f64().unwrap()).abs() < 1e-12,
            "step {step}: lr"
        );
        opt.step(&mut params, &g, lr);
    }
    // The final adapter equals PEFT's.
    let dir = tempfile::tempdir().unwrap();
    peft.save_adapter("default", dir.path()).unwrap();
    let ours = Checkpoint::open(dir.path().join("adapter_model.safetensors")).unwrap();
    let theirs = Checkpoint::open(fixture_path(
        "train/lora_sft/final/adapter_model.safetensors",
    ))
    .unwrap();
    for k in theirs.keys() {
        let (a, b) = (
            ours.read_f32(k).unwrap().data,
            theirs.read_f32(k).unwrap().data,
        );
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-5, "{k}: {d}");
    }
}

fn reference_batches() -> Vec<tilpass::train::LmBatch> {
    let batches: Vec<Value> =
        serde_json::from_value(fixture_json("train/lora_sft/batches.json")).unwrap();
    batches
        .iter()
        .map(|b| {
            let ids: Vec<Vec<u32>> = rows(&b["input_ids"]);
            let mask: Vec<Vec<u8>> = rows(&b["attention_mask"]);
            let labels: Vec<Vec<i64>> = rows(&b["labels"]);
            let seq = ids[0].len();
            tilpass::train::LmBatch {
                input: DecoderInput {
                    batch: ids.len(),
                    seq,
                    input_ids: ids.concat(),
                    attention_mask: mask.concat(),
                    position_ids: (0..ids.len()).flat_map(|_| 0..seq as i64).collect(),
                },
                labels: labels.concat(),
            }
        })
        .collect()
}

fn fresh_model(adapter: &std::path::Path) -> PeftModel<DecoderLm> {
    let dev = tilpass_tests::test_device().autodiff();
    let mut peft = PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap());
    peft.load_adapter(adapter, "default").unwrap();
    peft.freeze_base();
    peft
}

fn reference_config() -> tilpass::train::TrainConfig {
    tilpass::train::TrainConfig {
        learning_rate: 1e-2,
        warmup_steps: 2,
        max_steps: 5,
        max_grad_norm: Some(0.7),
        adamw: AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn the_trainer_reproduces_the_reference_run_and_logs_metrics() {
    use tilpass::train::{Event, train_lm};
    let reference = fixture_json("train/lora_sft/reference.json");
    let mut peft = fresh_model(&fixture_path("train/lora_sft/initial"));
    let out = tempfile::tempdir().unwrap();
    let cfg = tilpass::train::TrainConfig {
        output_dir: Some(out.path().to_path_buf()),
        eval_steps: Some(5),
        ..reference_config()
    };
    let batches = reference_batches();
    let mut losses = Vec::new();
    let mut evals = Vec::new();
    let summary = train_lm(
        &mut peft,
        "default",
        &batches,
        &batches[..2],
        &cfg,
        None,
        &mut |e| match e {
            Event::Step(s) => losses.push(s.loss),
            Event::Eval(e) => evals.push(e.clone()),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(summary.steps, 5);
    for (i, l) in losses.iter().enumerate() {
        let want = reference["steps"][i]["loss"].as_f64().unwrap();
        assert!((l - want).abs() / want <= 1e-4, "step {i}: {l} vs {want}");
    }
    assert_eq!(evals.len(), 1);
    assert!((evals[0].perplexity - evals[0].eval_loss.exp()).abs() < 1e-9);
    let lines = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6, "5 steps + 1 evaluation");
}

fn adapter_values(peft: &PeftModel<DecoderLm>) -> Vec<Vec<f32>> {
    use tilpass::models::HasLinears;
    peft.linears()
        .iter()
        .flat_map(|(_, l)| {
            l.lora.iter().flat_map(|b| {
                [b.a.val(), b.b.val()]
                    .map(|t| t.inner().into_data().try_into_vec_as::<f32>().unwrap())
            })
        })
        .collect()
}

#[test]
fn resuming_from_a_checkpoint_ends_bit_identical_to_an_uninterrupted_run() {
    use tilpass::train::train_lm;
    let batches = reference_batches();
    let out = tempfile::tempdir().unwrap();
    let cfg = tilpass::train::TrainConfig {
        max_steps: 4,
        gradient_accumulation_steps: 2,
        save_steps: Some(2),
        save_total_limit: 5,
        output_dir: Some(out.path().to_path_buf()),
        ..reference_config()
    };
    let mut full = fresh_model(&fixture_path("train/lora_sft/initial"));
    train_lm(&mut full, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap();
    let ckpt = out.path().join("checkpoint-2");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(ckpt.join(f).is_file(), "{f}");
    }
    // Resume from step 2 in a fresh process-like setting: base model + checkpoint adapter.
    let mut resumed = fresh_model(&ckpt);
    let cfg2 = tilpass::train::TrainConfig {
        output_dir: None,
        save_steps: None,
        ..cfg.clone()
    };
    let s = train_lm(
        &mut resumed,
        "default",
        &batches,
        &[],
        &cfg2,
        Some(&ckpt),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(s.steps, 4);
    assert_eq!(
        adapter_values(&resumed),
        adapter_values(&full),
        "bit-identical"
    );
    // keep-last: only the newest checkpoints stay.
    let cfg3 = tilpass::train::TrainConfig {
        save_steps: Some(1),
        save_total_limit: 2,
        ..cfg.clone()
    };
    let out3 = tempfile::tempdir().unwrap();
    let cfg3 = tilpass::train::TrainConfig {
        output_dir: Some(out3.path().to_path_buf()),
        ..cfg3
    };
    let mut m = fresh_model(&fixture_path("train/lora_sft/initial"));
    train_lm(&mut m, "default", &batches, &[], &cfg3, None, &mut |_| {}).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(out3.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    names.sort();
    assert_eq!(names, ["checkpoint-3", "checkpoint-4"]);
}

#[test]
fn training_errors_name_step_batch_and_cause() {
    use tilpass::train::{TrainError, train_lm};
    let batches = reference_batches();
    // A learning rate that blows the weights up: the loss stops being finite.
    let cfg = tilpass::train::TrainConfig {
        learning_rate: 1e18,
        warmup_steps: 0,
        max_grad_norm: None,
        ..reference_config()
    };
    let mut peft = fresh_model(&fixture_path("train/lora_sft/initial"));
    let err = train_lm(&mut peft, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
    assert!(
        err.to_string().contains("step") && err.to_string().contains("batch"),
        "{err}"
    );
    // A batch without a supervised token.
    let mut bad = batches.clone();
    bad[1].labels.iter_mut().for_each(|l| *l = -100);
    let err = train_lm(
        &mut peft,
        "default",
        &bad,
        &[],
        &reference_config(),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainError::NoSupervision { batch: 1 }),
        "{err}"
    );
    // An unwritable output directory.
    let cfg = tilpass::train::TrainConfig {
        output_dir: Some("/proc/tilpass-cannot-write-here".into()),
        ..reference_config()
    };
    let mut peft = fresh_model(&fixture_path("train/lora_sft/initial"));
    let err = train_lm(&mut peft, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("/proc/tilpass-cannot-write-here"),
        "{err}"
    );
    // A full disk: metrics.jsonl pointing at /dev/full (every write fails with ENOSPC).
    #[cfg(target_os = "linux")]
    if std::path::Path::new("/dev/full").exists() {
        let out = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/full", out.path().join("metrics.jsonl")).unwrap();
        let cfg = tilpass::train::TrainConfig {
            output_dir: Some(out.path().to_path_buf()),
            ..reference_config()
        };
        let mut peft = fresh_model(&fixture_path("train/lora_sft/initial"));
        let err =
            train_lm(&mut peft, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, TrainError::Core(tilpass::core::Error::DiskFull { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("metrics.jsonl") && err.to_string().contains("no space"),
            "{err}"
        );
    } else {
        eprintln!("SKIPPED disk-full case: no /dev/full on this system");
    }
    // Resuming another adapter's checkpoint.
    let out = tempfile::tempdir().unwrap();
    let cfg = tilpass::train::TrainConfig {
        max_steps: 1,
        save_steps: Some(1),
        output_dir: Some(out.path().to_path_buf()),
        ..reference_config()
    };
    let mut peft = fresh_model(&fixture_path("train/lora_sft/initial"));
    train_lm(&mut peft, "default", &batches, &[], &cfg, None, &mut |_| {}).unwrap();
    let dev = tilpass_tests::test_device().autodiff();
    let mut other =
        PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap());
    other
        .load_adapter(fixture_path("peft/llama_lora"), "default")
        .unwrap();
    let err = train_lm(
        &mut other,
        "default",
        &batches,
        &[],
        &reference_config(),
        Some(&out.path().join("checkpoint-1")),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
}

fn base_model() -> PeftModel<DecoderLm> {
    let dev = tilpass_tests::test_device().autodiff();
    PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap())
}

fn full_config() -> tilpass::train::TrainConfig {
    tilpass::train::TrainConfig {
        learning_rate: 1e-3,
        lr_scheduler_type: ScheduleKind::Constant,
        max_steps: 3,
        max_grad_norm: Some(1.0),
        adamw: AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Full fine-tuning (every parameter, no decay on norms) against transformers + torch AdamW
/// with HF's decay groups (tests/fixtures/train/full_sft).
#[test]
fn full_fine_tuning_matches_pytorch() {
    use tilpass::train::{Event, Target, train_lm};
    let reference = fixture_json("train/full_sft/reference.json");
    let batches = reference_batches();
    let mut model = base_model();
    let mut steps = Vec::new();
    train_lm(
        &mut model,
        Target::Full,
        &batches[..3],
        &[],
        &full_config(),
        None,
        &mut |e| {
            if let Event::Step(s) = e {
                steps.push((s.loss, s.grad_norm));
            }
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 3);
    for (i, (loss, norm)) in steps.iter().enumerate() {
        let want = &reference["steps"][i];
        let (wl, wn) = (
            want["loss"].as_f64().unwrap(),
            want["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            (loss - wl).abs() / wl <= 1e-4,
            "step {i}: loss {loss} vs {wl}"
        );
        assert!(
            (norm - wn).abs() / wn <= 1e-4,
            "step {i}: norm {norm} vs {wn}"
        );
    }
    // After training, the whole model (not only adapters) equals the reference's.
    let logits = model.forward(&batches[0].input, None).unwrap();
    let ours = logits.inner().into_data().try_into_vec_as::<f32>().unwrap();
    let theirs: Vec<f32> = serde_json::from_value(reference["logits"].clone()).unwrap();
    assert_eq!(ours.len(), theirs.len());
    let d = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(d <= 1e-4, "logits after full fine-tuning differ by {d}");
}

fn all_weights(model: &mut PeftModel<DecoderLm>) -> Vec<(String, Vec<f32>)> {
    use tilpass::models::HasLinears;
    let mut out = Vec::new();
    model.map_params(None, &mut |p, v, _, _| {
        out.push((
            p.to_string(),
            v.into_data().try_into_vec_as::<f32>().unwrap(),
        ));
        None
    });
    out
}

#[test]
fn full_fine_tuning_resumes_bit_identically_and_rejects_an_adapter_checkpoint() {
    use tilpass::train::{Target, TrainError, train_lm};
    let batches = reference_batches();
    let out = tempfile::tempdir().unwrap();
    let cfg = tilpass::train::TrainConfig {
        max_steps: 4,
        save_steps: Some(2),
        save_total_limit: 5,
        output_dir: Some(out.path().to_path_buf()),
        ..full_config()
    };
    let mut whole = base_model();
    let before = all_weights(&mut whole);
    train_lm(
        &mut whole,
        Target::Full,
        &batches,
        &[],
        &cfg,
        None,
        &mut |_| {},
    )
    .unwrap();
    let after = all_weights(&mut whole);
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert_eq!(changed, before.len(), "every parameter moved");
    let ckpt = out.path().join("checkpoint-2");
    assert!(ckpt.join("model.safetensors").is_file());
    let mut resumed = base_model();
    let cfg2 = tilpass::train::TrainConfig {
        output_dir: None,
        save_steps: None,
        ..cfg.clone()
    };
    train_lm(
        &mut resumed,
        Target::Full,
        &batches,
        &[],
        &cfg2,
        Some(&ckpt),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(all_weights(&mut resumed), after, "bit-identical");
    // An adapter run cannot resume from a full checkpoint.
    let mut lora = fresh_model(&fixture_path("train/lora_sft/initial"));
    let err = train_lm(
        &mut lora,
        "default",
        &batches,
        &[],
        &cfg2,
        Some(&ckpt),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, TrainError::Resume { .. }), "{err}");
    assert!(err.to_string().contains("full model"), "{err}");
}

/// Packing: the summed loss of a packed batch equals the documents' losses computed one by
/// one (positions restart, attention stays within each document, no cross-document target).
#[test]
fn packed_batches_give_the_loss_of_their_documents() {
    use tilpass::tokenize::SftExample;
    use tilpass::train::{LmBatch, packed_batches};
    let dev = tilpass_tests::test_device();
    let model = DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap();
    let examples: Vec<SftExample> = reference_batches()
        .iter()
        .flat_map(|b| {
            let seq = b.input.seq;
            (0..b.input.batch)
                .map(|r| {
                    let n = b.input.attention_mask[r * seq..(r + 1) * seq]
                        .iter()
                        .filter(|m| **m == 1)
                        .count();
                    SftExample {
                        input_ids: b.input.input_ids[r * seq..r * seq + n].to_vec(),
                        labels: b.labels[r * seq..r * seq + n].to_vec(),
                        attention_mask: vec![1; n],
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(examples.len(), 10);
    let nll_sum = |b: &LmBatch| -> (f64, usize) {
        let (loss, n) = tilpass::train::causal_lm_loss(&model, b).unwrap();
        (f64::from(loss.into_scalar::<f32>()) * n as f64, n)
    };
    let separate: (f64, usize) = examples
        .iter()
        .map(|e| {
            nll_sum(&LmBatch {
                input: DecoderInput::unpadded(std::slice::from_ref(&e.input_ids)).unwrap(),
                labels: e.labels.clone(),
            })
        })
        .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let packed = packed_batches(&examples, 32, 2, 0, 512).unwrap();
    assert!(packed.len() < examples.len(), "fewer rows than documents");
    assert!(
        packed.iter().any(|b| b.input.attention_mask.contains(&2)),
        "rows hold several documents"
    );
    let joined = packed
        .iter()
        .map(nll_sum)
        .fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(joined.1, separate.1, "the same supervised tokens");
    assert!(
        (joined.0 - separate.0).abs() / separate.0 < 1e-5,
        "packed {} vs separate {}",
        joined.0,
        separate.0
    );
    assert!(
        packed_batches(&examples, 1024, 2, 0, 512).is_err(),
        "longer than the context"
    );
}
