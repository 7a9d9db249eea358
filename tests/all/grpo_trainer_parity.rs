//! The GRPO / RLOO online trainer (`tilpass_preference::train_online`): sampling on the tiny
//! random Llama with a LoRA adapter, exact resume from a checkpoint taken in the middle of a
//! generation batch, the zero-reward-spread warning, settings refused before any work, and
//! parity with TRL 1.16.0's own `GRPOTrainer` / `RLOOTrainer` on fixed completions
//! (tests/fixtures/train/{grpo_dapo,grpo_bnpo_kl,grpo_grpo_once,rloo}, made by
//! tests/fixtures/generate_grpo_trainer.py): from TRL's initial adapter, its prompt order, its
//! completions and its shuffle of each generation batch, three optimiser steps (accumulation 2,
//! `num_iterations` 2 or 1) give TRL's per-step loss, gradient norm, learning rate, every metric
//! TRL logs (but its cumulative `num_tokens`) and its final adapter, within 1e-5 or twice TRL's
//! own float32 distance from its float64 run of that run (and that plus TRL's own distance of
//! TRL's float32 run: tests/all/trl_diffs.rs).
//!
//! Measured on the CPU (tilpass vs TRL float32; vs float64): losses <= 2.3e-6 relative (RLOO),
//! gradient norms <= 2.8e-6, metrics <= 6.4e-7 absolute, adapters <= 2.0e-6 (TRL's own f32 run
//! is 1.3e-6 from float64). The tests print what they measure (`--nocapture`).

use crate::trl_diffs::Diffs;
use serde_json::Value;
use tilpass::models::DecoderLm;
use tilpass::peft::PeftModel;
use tilpass::preference::{
    FnReward, GENERATION_BUFFER_FILE, GrpoConfig, OnlineAlgorithm, OnlineConfig, PreferenceError,
    PromptRow, RlooConfig, WeightedReward, train_online,
};
use tilpass::tokenize::Tokenizer;
use tilpass::train::{Event, StepLog, Target, TrainConfig};
use tilpass_tests::fixture_path;

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(fixture_path("train/orpo/tokenizer")).unwrap()
}

/// Six prompts of the word-level fixture tokenizer (BOS + words).
fn prompts(tok: &Tokenizer) -> Vec<PromptRow> {
    [
        "w3 w4 w5",
        "w10 w11",
        "w20 w21 w22 w23",
        "w7",
        "w30 w31 w32",
        "w40 w41",
    ]
    .iter()
    .map(|p| {
        let mut ids = vec![tok.bos_id().unwrap()];
        ids.extend(tok.encode(p, false).unwrap());
        PromptRow {
            prompt: p.to_string(),
            prompt_ids: ids,
            row: Value::Null,
        }
    })
    .collect()
}

/// Words of the completion whose number is even (varies between completions of a random model).
fn words(_: &str, completion: &str, _: &Value) -> Option<f32> {
    let even = completion
        .split_whitespace()
        .filter(|w| w.ends_with(['0', '2', '4', '6', '8']))
        .count();
    Some(even as f32)
}

fn model() -> PeftModel<DecoderLm> {
    crate::train_parity::fresh_model(&fixture_path("train/lora_sft/initial"))
}

fn online(algorithm: OnlineAlgorithm) -> OnlineConfig {
    OnlineConfig {
        algorithm,
        num_generations: 2,
        num_iterations: 2,
        steps_per_generation: None,
        per_device_train_batch_size: 4,
        max_prompt_length: Some(3),
        max_completion_length: 6,
        temperature: 0.9,
        top_p: 0.95,
        top_k: Some(50),
        seed: 7,
    }
}

fn train_cfg(out: Option<&std::path::Path>, save: Option<usize>) -> TrainConfig {
    TrainConfig {
        learning_rate: 5e-2,
        max_steps: 4,
        gradient_accumulation_steps: 2,
        save_steps: save,
        save_total_limit: 10,
        output_dir: out.map(|p| p.to_path_buf()),
        ..Default::default()
    }
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

/// Runs 4 steps (accumulation 2, a generation batch every 2 steps: `num_iterations` 2),
/// checkpointing every step, each with its generation batch as soon as it exists; resumes from
/// steps 1 and 3 (inside a generation batch) and 2 (at the second's start) and checks each ends
/// bit-identical to the uninterrupted run, with the same step logs.
fn resume_case(algorithm: OnlineAlgorithm) {
    let tok = tokenizer();
    let rows = prompts(&tok);
    let reward = FnReward::new("words", words);
    let rewards = [WeightedReward {
        reward: &reward,
        weight: 1.0,
    }];
    let online = online(algorithm);
    let out = tempfile::tempdir().unwrap();
    let mut full = model();
    let mut steps: Vec<StepLog> = Vec::new();
    let mut messages = Vec::new();
    train_online(
        &mut full,
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &online,
        &train_cfg(Some(out.path()), Some(1)),
        None,
        &mut |e| match e {
            Event::Step(s) => steps.push(s.clone()),
            Event::Message(m) => messages.push(m.to_string()),
            Event::Checkpoint(p) => assert!(
                p.join(GENERATION_BUFFER_FILE).is_file(),
                "{} without its generation batch",
                p.display()
            ),
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 4);
    assert!(messages.is_empty(), "{messages:?}");
    for s in &steps {
        println!(
            "step {}: loss {:e}, grad_norm {:e}, {:?}",
            s.step, s.loss, s.grad_norm, s.metrics
        );
    }
    // Reward metrics with the steps that generated (1 and 3), loss metrics every step.
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(
            s.metrics.contains_key("reward"),
            i % 2 == 0,
            "step {}: {:?}",
            s.step,
            s.metrics.keys()
        );
        assert!(s.metrics.contains_key("entropy"), "{:?}", s.metrics.keys());
        assert!(s.metrics.contains_key("clip_ratio/region_mean"));
        assert!(s.loss.is_finite() && s.grad_norm.is_finite());
    }
    assert!(steps[0].metrics.contains_key("completions/mean_length"));
    assert!(steps[0].metrics.contains_key("time/generation_s"));
    // Training time and throughput of every step, also in metrics.jsonl.
    assert!(steps.iter().all(|s| s.metrics["time/train_s"] > 0.0));
    assert!(
        steps.iter().all(|s| s.tokens_per_s > 0.0),
        "tokens per second"
    );
    let logged: Vec<StepLog> = std::fs::read_to_string(out.path().join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), steps.len());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    for (l, s) in logged.iter().zip(&steps) {
        assert!(close(l.tokens_per_s, s.tokens_per_s), "{l:?}");
        assert!(
            close(l.metrics["time/train_s"], s.metrics["time/train_s"]),
            "{l:?}"
        );
    }
    assert!(steps[0].metrics.contains_key("rewards/words/mean"));
    assert!(steps[0].grad_norm > 0.0, "the adapter must move");
    let want = adapter_values(&full);
    // Without the saved generation batch, a run stopped inside one cannot resume exactly.
    let ck1 = out.path().join("checkpoint-1");
    let bare = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&ck1).unwrap() {
        let f = f.unwrap();
        if f.file_name() != GENERATION_BUFFER_FILE {
            std::fs::copy(f.path(), bare.path().join(f.file_name())).unwrap();
        }
    }
    let err = train_online(
        &mut crate::train_parity::fresh_model(bare.path()),
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &online,
        &train_cfg(None, None),
        Some(bare.path()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains(GENERATION_BUFFER_FILE), "{err}");
    // A saved batch that does not fit the run is refused, naming the file.
    let mut buffer: Value =
        serde_json::from_slice(&std::fs::read(ck1.join(GENERATION_BUFFER_FILE)).unwrap()).unwrap();
    buffer["micro"][0]["advantages"] = serde_json::json!([0.0]);
    std::fs::write(
        bare.path().join(GENERATION_BUFFER_FILE),
        serde_json::to_vec(&buffer).unwrap(),
    )
    .unwrap();
    let err = train_online(
        &mut crate::train_parity::fresh_model(bare.path()),
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &online,
        &train_cfg(None, None),
        Some(bare.path()),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(GENERATION_BUFFER_FILE)
            && err.to_string().contains("micro-batch 0"),
        "{err}"
    );
    for ck in [1, 2, 3] {
        let dir = out.path().join(format!("checkpoint-{ck}"));
        assert!(dir.join(GENERATION_BUFFER_FILE).is_file());
        let mut resumed = crate::train_parity::fresh_model(&dir);
        let mut again: Vec<StepLog> = Vec::new();
        let s = train_online(
            &mut resumed,
            Target::Adapter("default"),
            &tok,
            &rows,
            &rewards,
            &online,
            &train_cfg(None, None),
            Some(&dir),
            &mut |e| {
                if let Event::Step(s) = e {
                    again.push(s.clone())
                }
            },
        )
        .unwrap();
        assert_eq!(s.steps, 4);
        assert_eq!(adapter_values(&resumed), want, "resumed from step {ck}");
        assert_eq!(again.len(), 4 - ck);
        for (a, b) in again.iter().zip(&steps[ck..]) {
            assert_eq!(a.step, b.step);
            assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {} loss", a.step);
            assert_eq!(a.grad_norm.to_bits(), b.grad_norm.to_bits());
        }
    }
}

#[test]
fn grpo_resumes_inside_a_generation_batch_bit_identically() {
    resume_case(OnlineAlgorithm::Grpo(GrpoConfig {
        beta: 0.04,
        ..Default::default()
    }));
}

#[test]
fn rloo_resumes_inside_a_generation_batch_bit_identically() {
    resume_case(OnlineAlgorithm::Rloo(RlooConfig::default()));
}

#[test]
fn a_constant_reward_warns_that_the_loss_is_zero() {
    let tok = tokenizer();
    let rows = prompts(&tok);
    let reward = FnReward::new("one", |_: &str, _: &str, _: &Value| Some(1.0));
    let rewards = [WeightedReward {
        reward: &reward,
        weight: 1.0,
    }];
    let mut messages = Vec::new();
    let mut steps = Vec::new();
    let cfg = TrainConfig {
        max_steps: 1,
        ..train_cfg(None, None)
    };
    train_online(
        &mut model(),
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &online(OnlineAlgorithm::default()),
        &cfg,
        None,
        &mut |e| match e {
            Event::Message(m) => messages.push(m.to_string()),
            Event::Step(s) => steps.push(s.clone()),
            _ => {}
        },
    )
    .unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("step 1") && m.contains("trl#3857")),
        "{messages:?}"
    );
    assert_eq!(steps[0].loss, 0.0);
    assert_eq!(steps[0].metrics["frac_reward_zero_std"], 1.0);
}

#[test]
fn settings_that_cannot_form_whole_groups_are_refused_before_training() {
    let tok = tokenizer();
    let rows = prompts(&tok);
    let reward = FnReward::new("words", words);
    let rewards = [WeightedReward {
        reward: &reward,
        weight: 1.0,
    }];
    let mut bad = online(OnlineAlgorithm::default());
    bad.num_generations = 3;
    let err = train_online(
        &mut model(),
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &bad,
        &train_cfg(None, None),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PreferenceError::Incompatible {
                setting: "num_generations",
                ..
            }
        ),
        "{err}"
    );
    let err = train_online(
        &mut model(),
        Target::Adapter("default"),
        &tok,
        &rows,
        &[],
        &online(OnlineAlgorithm::default()),
        &train_cfg(None, None),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("reward"), "{err}");
    // The tiny Llama has 128 positions.
    let mut long = online(OnlineAlgorithm::default());
    long.max_completion_length = 126;
    let err = train_online(
        &mut model(),
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &long,
        &train_cfg(None, None),
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("128 positions"), "{err}");
}

// --- Parity with TRL's own trainers on fixed completions -------------------------------------

/// Per-step loss and gradient norm, relative (to the value, or absolute below 1: an online
/// loss can be exactly 0).
const STEP_TOL: f64 = 1e-5;
/// Every logged metric, absolute.
const METRICS: f64 = 1e-5;
/// The final adapter's weights, absolute.
const WEIGHTS: f64 = 1e-5;

/// Keys of TRL's step logs that are not compared as metrics: the step values checked apart and
/// TRL's cumulative `num_tokens` (the fixture leaves out its wall-clock `step_time`).
const NOT_METRICS: [&str; 5] = ["loss", "grad_norm", "learning_rate", "step", "num_tokens"];

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// |a - b| / max(|b|, 1), the largest over the values.
fn max_scaled_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y).abs() / y.abs().max(1.0);
            if d.is_nan() { f64::INFINITY } else { d }
        })
        .fold(0.0, f64::max)
}

/// The fixture's `even` reward: words with an even number, `None` for rows whose `idx` is a
/// multiple of 3.
fn even(_: &str, completion: &str, row: &Value) -> Option<f32> {
    let idx = row["idx"].as_u64().unwrap();
    if idx.is_multiple_of(3) {
        return None;
    }
    let n = completion
        .split_whitespace()
        .filter(|w| w[1..].parse::<u32>().unwrap() % 2 == 0)
        .count();
    Some(n as f32)
}

fn count_words(_: &str, completion: &str, _: &Value) -> Option<f32> {
    Some(completion.split_whitespace().count() as f32)
}

/// Replays TRL's run `case` (tests/fixtures/generate_grpo_trainer.py) on its completions and
/// checks every step's loss, gradient norm, learning rate and metrics, and the final adapter.
fn trl_case(case: &str) {
    use tilpass::core::Checkpoint;
    use tilpass::preference::{FixedRollout, OnlineExtras, train_online_with};
    use tilpass_tests::{fixture_json, max_abs_diff};
    let dir = format!("train/{case}");
    let reference = fixture_json(&format!("{dir}/reference.json"));
    let tok = tokenizer();
    let rows: Vec<PromptRow> = reference["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| PromptRow {
            prompt: r["prompt"].as_str().unwrap().to_string(),
            prompt_ids: serde_json::from_value(r["prompt_ids"].clone()).unwrap(),
            row: serde_json::json!({ "idx": r["idx"] }),
        })
        .collect();
    let fixed: Vec<FixedRollout> = reference["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| FixedRollout {
            prompt_indices: serde_json::from_value(g["prompt_indices"].clone()).unwrap(),
            completions: serde_json::from_value(g["completions"].clone()).unwrap(),
            permutation: Some(serde_json::from_value(g["permutation"].clone()).unwrap()),
        })
        .collect();
    for (g, f) in reference["generations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&fixed)
    {
        // The prompts TRL generated from are the rows' token ids.
        let ids: Vec<Vec<u32>> = serde_json::from_value(g["prompt_ids"].clone()).unwrap();
        for (i, p) in f.prompt_indices.iter().zip(&ids) {
            assert_eq!(&rows[*i].prompt_ids, p);
        }
    }
    let words = FnReward::new("words", count_words);
    let even = FnReward::new("even", even);
    let weights: Vec<f64> = serde_json::from_value(reference["reward_weights"].clone()).unwrap();
    let rewards = [
        WeightedReward {
            reward: &words,
            weight: weights[0],
        },
        WeightedReward {
            reward: &even,
            weight: weights[1],
        },
    ];
    let get = |k: &str| reference[k].clone();
    let algorithm = match reference["algorithm"].as_str().unwrap() {
        "grpo" => {
            let mut m = serde_json::Map::new();
            for k in ["loss_type", "beta", "scale_rewards", "epsilon_high"] {
                if !reference[k].is_null() {
                    m.insert(k.into(), get(k));
                }
            }
            OnlineAlgorithm::Grpo(serde_json::from_value(Value::Object(m)).unwrap())
        }
        "rloo" => OnlineAlgorithm::Rloo(RlooConfig {
            beta: num(&get("beta")),
            ..Default::default()
        }),
        other => panic!("{other}"),
    };
    let count = |k: &str| reference[k].as_u64().unwrap() as usize;
    let online = OnlineConfig {
        algorithm,
        num_generations: count("num_generations"),
        num_iterations: count("num_iterations"),
        steps_per_generation: Some(count("steps_per_generation")),
        per_device_train_batch_size: count("per_device_train_batch_size"),
        max_prompt_length: None,
        max_completion_length: count("max_completion_length"),
        temperature: num(&get("temperature")),
        top_p: 1.0,
        top_k: None,
        seed: 42,
    };
    let out = tempfile::tempdir().unwrap();
    let cfg = TrainConfig {
        gradient_accumulation_steps: count("gradient_accumulation_steps"),
        ..crate::pref_trainer_parity::config(&reference, out.path())
    };
    let mut peft = crate::train_parity::fresh_model(&fixture_path(&format!("{dir}/initial")));
    let mut steps: Vec<StepLog> = Vec::new();
    train_online_with(
        &mut peft,
        Target::Adapter("default"),
        &tok,
        &rows,
        &rewards,
        &online,
        &cfg,
        None,
        OnlineExtras {
            reference: None,
            fixed: Some(&fixed),
        },
        &mut |e| {
            if let Event::Step(s) = e {
                steps.push(s.clone());
            }
        },
    )
    .unwrap();
    let want = reference["steps"].as_array().unwrap();
    let exact = reference["steps_f64"].as_array().unwrap();
    assert_eq!(steps.len(), want.len());
    let col = |log: &[Value], key: &str| -> Vec<f64> { log.iter().map(|s| num(&s[key])).collect() };
    for (key, ours) in [
        ("loss", steps.iter().map(|s| s.loss).collect::<Vec<f64>>()),
        ("grad_norm", steps.iter().map(|s| s.grad_norm).collect()),
    ] {
        let d = Diffs::of(&ours, &col(want, key), &col(exact, key), max_scaled_diff);
        eprintln!("measured {case} {key}: {d}");
        d.check(case, key, STEP_TOL);
    }
    let lrs: Vec<f64> = steps.iter().map(|s| s.lr).collect();
    assert!(max_scaled_diff(&lrs, &col(want, "learning_rate")) <= 1e-12);
    let mut worst = Diffs::default();
    for (i, (ours, theirs)) in steps.iter().zip(want).enumerate() {
        let theirs = theirs.as_object().unwrap();
        let mut names: Vec<&String> = theirs
            .keys()
            .filter(|k| !NOT_METRICS.contains(&k.as_str()))
            .collect();
        names.sort();
        let ours_names: Vec<&String> = ours
            .metrics
            .keys()
            .filter(|k| !k.starts_with("time/"))
            .collect();
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
    let saved = tempfile::tempdir().unwrap();
    peft.save_adapter("default", saved.path()).unwrap();
    let open = |p: std::path::PathBuf| Checkpoint::open(p).unwrap();
    let file = "adapter_model.safetensors";
    let ours = open(saved.path().join(file));
    let theirs = open(fixture_path(&format!("{dir}/final/{file}")));
    let theirs64 = open(fixture_path(&format!("{dir}/final_f64/{file}")));
    let initial = open(fixture_path(&format!("{dir}/initial/{file}")));
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
    assert_eq!(keys, our_keys);
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
fn grpo_dapo_matches_trl() {
    trl_case("grpo_dapo");
}

#[test]
fn grpo_bnpo_with_kl_matches_trl() {
    trl_case("grpo_bnpo_kl");
}

#[test]
fn grpo_one_iteration_matches_trl() {
    trl_case("grpo_grpo_once");
}

#[test]
fn rloo_matches_trl() {
    trl_case("rloo");
}

#[test]
fn full_fine_tuning_with_a_kl_term_needs_and_uses_a_reference_model() {
    use tilpass::preference::{OnlineExtras, train_online_with};
    let dev = tilpass_tests::test_device().autodiff();
    let base = || PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap());
    let tok = tokenizer();
    let rows = prompts(&tok);
    let reward = FnReward::new("words", words);
    let rewards = [WeightedReward {
        reward: &reward,
        weight: 1.0,
    }];
    let online = online(OnlineAlgorithm::Grpo(GrpoConfig {
        beta: 0.1,
        ..Default::default()
    }));
    let cfg = TrainConfig {
        learning_rate: 1e-3,
        max_steps: 2,
        ..train_cfg(None, None)
    };
    let err = train_online(
        &mut base(),
        Target::Full,
        &tok,
        &rows,
        &rewards,
        &online,
        &cfg,
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            PreferenceError::MissingInput {
                input: "reference model",
                ..
            }
        ),
        "{err}"
    );
    let reference = DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap();
    let mut steps: Vec<StepLog> = Vec::new();
    train_online_with(
        &mut base(),
        Target::Full,
        &tok,
        &rows,
        &rewards,
        &online,
        &cfg,
        None,
        OnlineExtras {
            reference: Some(&reference),
            fixed: None,
        },
        &mut |e| {
            if let Event::Step(s) = e {
                steps.push(s.clone());
            }
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 2);
    // Step 1 scores the policy against an identical reference: KL exactly 0; step 2 (same
    // batch, after an update) sees the policy move away from it.
    assert_eq!(steps[0].metrics["kl"], 0.0);
    assert!(steps[1].metrics["kl"] > 0.0, "{:?}", steps[1].metrics);
}
