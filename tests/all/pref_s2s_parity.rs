//! Encoder-decoder ORPO and SimPO parity with TRL 1.16.0's own `ORPOTrainer` and `CPOTrainer`
//! (trl.experimental, `is_encoder_decoder` path) on the tiny random T5.1.1 with a LoRA adapter
//! (tests/fixtures/train/{s2s_orpo,s2s_simpo}, made by tests/fixtures/generate_pref_s2s.py):
//! tilpass's collation of the rows TRL tokenised gives TRL's concatenated batches (encoder ids
//! and mask, labels, `_shift_right` decoder input), and from the same initial adapter three
//! optimiser steps give TRL's per-step loss, gradient norm, learning rate, every metric TRL
//! logged and the final adapter.
//!
//! Tolerances as tests/all/pref_trainer_parity.rs (tests/all/trl_diffs.rs): within 1e-5, or
//! twice TRL's own distance from float64 where that is larger, of the float64 run, and within
//! that plus TRL's own distance of TRL's float32 run (losses and gradient norms relative,
//! metrics and weights absolute). On
//! wgpu (lavapipe) SimPO's `logps/rejected` lies 1.68e-5 from float64 where TRL's float32 lies
//! 1.11e-5 from it. The tests print what they measure (`--nocapture`).
//!
//! Measured on flex (tilpass vs float64; TRL f32 vs float64 in brackets): ORPO loss 1.8e-7
//! relative (6.4e-8), gradient norm 4.7e-7 (5.8e-7), metrics 3.2e-6 absolute (7.7e-6), adapter
//! 2.9e-6 (2.8e-6); SimPO (lr 5e-3) loss 4.3e-7 (1.3e-6), gradient norm 4.8e-7 (3.2e-6), metrics
//! 3.6e-6 (1.4e-5, `logps/rejected` ~ -28), adapter 2.6e-6 (1.9e-5). These move by a few float32
//! steps with any change of rounding inside the model (with burn's composed RMS norm instead of
//! the f64-statistics kernel: SimPO metrics 1.8e-5, adapter 2.0e-5).

use crate::trl_diffs::Diffs;
use serde_json::Value;
use tilpass::core::Checkpoint;
use tilpass::data::DatasetSpec;
use tilpass::models::Seq2SeqLm;
use tilpass::peft::PeftModel;
use tilpass::preference::{
    CpoConfig, OrpoConfig, Seq2SeqPairBatch, seq2seq_pair_batches, train_cpo_seq2seq,
    train_orpo_seq2seq,
};
use tilpass::tokenize::Tokenizer;
use tilpass::train::{AdamWConfig, Event, ScheduleKind, StepLog, Target, TrainConfig};
use tilpass_tests::{fixture_json, fixture_path, max_abs_diff, max_rel_diff};

/// Per-step loss and gradient norm, relative.
const LOSS: f64 = 1e-5;
/// Every logged metric, absolute.
const METRICS: f64 = 1e-5;
/// The final adapter's weights, absolute.
const WEIGHTS: f64 = 1e-5;
/// Keys of TRL's step logs that are not trainer metrics.
const NOT_METRICS: [&str; 4] = ["loss", "grad_norm", "learning_rate", "step"];
/// The T5.1.1 fixture's pad id and decoder start token (its config.json).
const PAD: u32 = 0;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Rebuilds each recorded batch with [`Seq2SeqPairBatch::new`] from its unpadded prompts and
/// answers, and checks that it is the batch TRL fed to the model.
fn batches(reference: &Value) -> Vec<Seq2SeqPairBatch> {
    reference["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| {
            let ids: Vec<Vec<u32>> = rows(&b["input_ids"]);
            let mask: Vec<Vec<u8>> = rows(&b["attention_mask"]);
            let labels: Vec<Vec<i64>> = rows(&b["labels"]);
            let dec: Vec<Vec<u32>> = rows(&b["decoder_input_ids"]);
            let pairs = ids.len() / 2;
            let prompts: Vec<Vec<u32>> = ids[..pairs]
                .iter()
                .zip(&mask)
                .map(|(r, m)| {
                    r.iter()
                        .zip(m)
                        .filter(|(_, m)| **m == 1)
                        .map(|(t, _)| *t)
                        .collect()
                })
                .collect();
            let answers: Vec<Vec<u32>> = labels
                .iter()
                .map(|r| {
                    r.iter()
                        .filter(|l| **l != -100)
                        .map(|l| *l as u32)
                        .collect()
                })
                .collect();
            let ours =
                Seq2SeqPairBatch::new(&prompts, &answers[..pairs], &answers[pairs..], PAD, PAD)
                    .unwrap();
            assert_eq!(ours.input.input_ids, ids.concat(), "encoder ids");
            assert_eq!(ours.input.attention_mask, mask.concat(), "encoder mask");
            assert_eq!(ours.labels, labels.concat(), "labels");
            assert_eq!(ours.decoder_input_ids, dec, "decoder input ids");
            ours
        })
        .collect()
}

fn config(reference: &Value, out: &std::path::Path) -> TrainConfig {
    assert_eq!(reference["lr_scheduler_type"], "linear");
    TrainConfig {
        learning_rate: num(&reference["learning_rate"]),
        lr_scheduler_type: ScheduleKind::Linear,
        warmup_steps: reference["warmup_steps"].as_u64().unwrap() as usize,
        max_steps: reference["max_steps"].as_u64().unwrap() as usize,
        max_grad_norm: Some(num(&reference["max_grad_norm"])),
        adamw: AdamWConfig {
            beta1: num(&reference["adam_beta1"]),
            beta2: num(&reference["adam_beta2"]),
            eps: num(&reference["adam_epsilon"]),
            weight_decay: num(&reference["weight_decay"]),
        },
        output_dir: Some(out.to_path_buf()),
        ..Default::default()
    }
}

fn settings<T: serde::de::DeserializeOwned>(reference: &Value, keys: &[&str]) -> T {
    let mut m = serde_json::Map::new();
    for k in keys {
        m.insert(k.to_string(), reference[*k].clone());
    }
    serde_json::from_value(Value::Object(m)).unwrap()
}

type Train<'a> = &'a mut dyn FnMut(
    &Value,
    &mut PeftModel<Seq2SeqLm>,
    &[Seq2SeqPairBatch],
    &TrainConfig,
    &mut dyn FnMut(Event),
);

fn check_case(case: &str, train: Train<'_>) {
    let dir = format!("train/{case}");
    let reference = fixture_json(&format!("{dir}/reference.json"));
    let dev = tilpass_tests::test_device().autodiff();
    let base = fixture_path(reference["base"].as_str().unwrap());
    let mut peft = PeftModel::new(Seq2SeqLm::load(base, &dev).unwrap());
    let cfg_adapter = peft
        .load_adapter(fixture_path(&format!("{dir}/initial")), "default")
        .unwrap();
    assert_eq!(cfg_adapter.task_type.as_deref(), Some("SEQ_2_SEQ_LM"));
    peft.freeze_base();
    let out = tempfile::tempdir().unwrap();
    let cfg = config(&reference, out.path());
    let data = batches(&reference);
    let mut steps: Vec<StepLog> = Vec::new();
    train(&reference, &mut peft, &data, &cfg, &mut |e| {
        if let Event::Step(s) = e {
            steps.push(s.clone());
        }
    });
    let want = reference["steps"].as_array().expect("steps");
    let exact = reference["steps_f64"].as_array().expect("steps_f64");
    assert_eq!(steps.len(), want.len());
    assert_eq!(exact.len(), want.len());
    let col = |log: &[Value], key: &str| -> Vec<f64> { log.iter().map(|s| num(&s[key])).collect() };
    for (key, ours) in [
        ("loss", steps.iter().map(|s| s.loss).collect::<Vec<f64>>()),
        ("grad_norm", steps.iter().map(|s| s.grad_norm).collect()),
    ] {
        let diffs = Diffs::of(&ours, &col(want, key), &col(exact, key), max_rel_diff);
        eprintln!("measured {case} {key} (relative): {diffs}");
        diffs.check(case, key, LOSS);
    }
    let lrs: Vec<f64> = steps.iter().map(|s| s.lr).collect();
    let d = max_rel_diff(&lrs, &col(want, "learning_rate"));
    assert!(d <= 1e-12, "{case} learning rates {lrs:?} vs TRL: {d:e}");
    let mut worst = Diffs::default();
    for (i, (ours, theirs)) in steps.iter().zip(want).enumerate() {
        let theirs = theirs.as_object().unwrap();
        let mut names: Vec<&String> = theirs
            .keys()
            .filter(|k| !NOT_METRICS.contains(&k.as_str()))
            .collect();
        names.sort();
        let mut ours_names: Vec<&String> = ours.metrics.keys().collect();
        ours_names.sort();
        assert_eq!(ours_names, names, "{case} step {}: metric names", i + 1);
        for name in names {
            let d = Diffs::of(
                &[ours.metrics[name]],
                &[num(&theirs[name])],
                &[num(&exact[i][name])],
                max_abs_diff,
            );
            d.check(case, &format!("step {} {name}", i + 1), METRICS);
            worst = worst.max(d);
        }
    }
    eprintln!("measured {case} metrics: {worst}");
    let text = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), want.len());
    let saved = tempfile::tempdir().unwrap();
    peft.save_adapter("default", saved.path()).unwrap();
    let open = |p: std::path::PathBuf| Checkpoint::open(p).unwrap();
    let ours = open(saved.path().join("adapter_model.safetensors"));
    let theirs = open(fixture_path(&format!(
        "{dir}/final/adapter_model.safetensors"
    )));
    let theirs64 = open(fixture_path(&format!("{dir}/final_f64.safetensors")));
    let initial = open(fixture_path(&format!(
        "{dir}/initial/adapter_model.safetensors"
    )));
    let read = |c: &Checkpoint, k: &str| -> Vec<f64> {
        c.read_f32(k)
            .unwrap()
            .data
            .iter()
            .map(|x| f64::from(*x))
            .collect()
    };
    let mut keys: Vec<&str> = theirs.keys().collect();
    keys.sort();
    let mut our_keys: Vec<&str> = ours.keys().collect();
    our_keys.sort();
    assert_eq!(keys, our_keys, "the same tensors");
    let (mut d, mut moved) = (Diffs::default(), 0f64);
    for k in keys {
        let (a, b, c, start) = (
            read(&ours, k),
            read(&theirs, k),
            read(&theirs64, k),
            read(&initial, k),
        );
        d = d.max(Diffs::of(&a, &b, &c, max_abs_diff));
        moved = moved.max(max_abs_diff(&b, &start));
    }
    eprintln!("measured {case} final adapter: {d} (TRL moved the weights by up to {moved:.2e})");
    assert!(
        moved > 100.0 * WEIGHTS,
        "the reference run must change the weights"
    );
    d.check_weights(case, WEIGHTS);
}

#[test]
fn seq2seq_orpo_matches_trl() {
    check_case("s2s_orpo", &mut |reference,
                                 model,
                                 batches,
                                 cfg,
                                 on_event| {
        assert_eq!(reference["trainer"], "orpo");
        let orpo: OrpoConfig = settings(reference, &["beta"]);
        train_orpo_seq2seq(
            model,
            Target::Adapter("default"),
            &orpo,
            batches,
            cfg,
            None,
            on_event,
        )
        .unwrap();
    });
}

#[test]
fn seq2seq_simpo_matches_trl() {
    check_case(
        "s2s_simpo",
        &mut |reference, model, batches, cfg, on_event| {
            assert_eq!(reference["trainer"], "cpo");
            let cpo: CpoConfig = settings(
                reference,
                &[
                    "beta",
                    "loss_type",
                    "cpo_alpha",
                    "simpo_gamma",
                    "label_smoothing",
                    "alpha",
                ],
            );
            train_cpo_seq2seq(
                model,
                Target::Adapter("default"),
                &cpo,
                batches,
                cfg,
                None,
                on_event,
            )
            .unwrap();
        },
    );
}

/// tilpass's encoding of the fixture's rows (`prompt`, `chosen`, `rejected` text) with the
/// tokenizer TRL used gives the batches TRL fed to the model, for both trainers.
#[test]
fn seq2seq_preference_encoding_matches_trl() {
    let tok = Tokenizer::from_dir(fixture_path("train/s2s_orpo/tokenizer")).unwrap();
    for case in ["s2s_orpo", "s2s_simpo"] {
        let reference = fixture_json(&format!("train/{case}/reference.json"));
        let dir = tempfile::tempdir().unwrap();
        let rows = reference["data"].as_array().expect("data");
        let path = crate::runs::write_jsonl(&dir.path().join("rows.jsonl"), rows);
        let bs = reference["per_device_train_batch_size"].as_u64().unwrap() as usize;
        let ours = seq2seq_pair_batches(&tok, &DatasetSpec::File(path), bs, PAD, PAD, &mut |_| {})
            .unwrap();
        let theirs = batches(&reference);
        assert_eq!(ours.len(), theirs.len(), "{case}: one batch per step");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a.input.input_ids, b.input.input_ids,
                "{case} batch {i}: encoder ids"
            );
            assert_eq!(
                a.input.attention_mask, b.input.attention_mask,
                "{case} batch {i}: mask"
            );
            assert_eq!(a.labels, b.labels, "{case} batch {i}: labels");
            assert_eq!(
                a.decoder_input_ids, b.decoder_input_ids,
                "{case} batch {i}: decoder ids"
            );
        }
    }
}
