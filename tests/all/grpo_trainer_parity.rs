//! The GRPO / RLOO online trainer (`tilpass_preference::train_online`): sampling on the tiny
//! random Llama with a LoRA adapter, exact resume from a checkpoint taken in the middle of a
//! generation batch, the zero-reward-spread warning, and settings refused before any work.

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
/// checkpointing every step; resumes from step 1 (inside the first generation batch) and from
/// step 2 (at the second's start) and checks both end bit-identical to the uninterrupted run,
/// with the same step logs.
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
            _ => {}
        },
    )
    .unwrap();
    assert_eq!(steps.len(), 4);
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
    for ck in [1, 2] {
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
}
