//! GRPO's advantages and loss equal TRL 1.16.0's (tests/fixtures/preference/grpo.json, made by
//! tests/fixtures/generate_grpo.py running TRL's own advantage block and `_compute_loss`): every
//! advantage and reward metric (float64, 1e-9), and the loss, every loss metric and the gradient
//! w.r.t. the policy's per-token log-probs (1e-9 on the CPU in float64; 2e-5 on another device,
//! which computes in float32), for each `scale_rewards`, `multi_objective_aggregation`,
//! `loss_type`, the KL term with and without bias correction, one iteration (ratio 1) and
//! gradient accumulation. The same for RLOO (`RLOOTrainer`'s advantage block and
//! sequence-level `_compute_loss`).

use serde_json::Value;
use tilpass::burn::tensor::{DType, Device, Tensor, TensorData};
use tilpass::preference::{
    GrpoConfig, GrpoInputs, GrpoLossType, MultiObjectiveAggregation, PreferenceError, RlooConfig,
    RlooInputs, ScaleRewards, TokenLogps, completion_metrics, completions_after_eos,
    grpo_advantages, grpo_loss, rloo_advantages, rloo_loss,
};
use tilpass_tests::fixture_json;

use crate::preference_losses::on_cpu;

fn fixture() -> Value {
    fixture_json("preference/grpo.json")
}

/// The loss tolerance: float64 on the CPU; float32 with its own kernels elsewhere.
fn tol() -> f64 {
    if on_cpu() { 1e-9 } else { 2e-5 }
}

/// |got - want| / max(1, |want|), with NaN equal to a missing (null) value only.
fn close(got: f64, want: &Value, tol: f64) -> bool {
    match want.as_f64() {
        None => got.is_nan(),
        Some(w) => (got - w).abs() / w.abs().max(1.0) <= tol,
    }
}

fn rows(v: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn t2(rows: &[Vec<f64>], device: &Device, dtype: DType) -> Tensor<2> {
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), rows[0].len()]).convert_dtype(dtype),
        (device, dtype),
    )
}

fn t1(v: &[f64], device: &Device, dtype: DType) -> Tensor<1> {
    Tensor::from_data(
        TensorData::new(v.to_vec(), [v.len()]).convert_dtype(dtype),
        (device, dtype),
    )
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn advantages_and_reward_metrics_match_trl() {
    let cases = fixture()["advantages"].as_array().unwrap().clone();
    assert!(cases.len() >= 9);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let rewards: Vec<Vec<Option<f64>>> = parse(&case["rewards_per_func"]);
        let weights: Vec<f64> = parse(&case["reward_weights"]);
        let names: Vec<String> = (0..weights.len()).map(|i| format!("r{i}")).collect();
        let config = GrpoConfig {
            num_generations: case["num_generations"].as_u64().unwrap() as usize,
            scale_rewards: parse::<ScaleRewards>(&case["scale_rewards"]),
            multi_objective_aggregation: parse::<MultiObjectiveAggregation>(
                &case["multi_objective_aggregation"],
            ),
            ..GrpoConfig::default()
        };
        let out = grpo_advantages(&config, &rewards, &names, &weights).unwrap();
        let want: Vec<f64> = parse(&case["advantages"]);
        assert_eq!(out.advantages.len(), want.len(), "{name}");
        for (i, (g, w)) in out.advantages.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9,
                "{name} advantage {i}: {g} vs TRL {w}"
            );
        }
        let want_metrics = case["metrics"].as_object().unwrap();
        assert_eq!(
            out.metrics.len(),
            want_metrics.len(),
            "{name}: {:?}",
            out.metrics
        );
        for (k, v) in &out.metrics {
            let w = want_metrics
                .get(k)
                .unwrap_or_else(|| panic!("{name}: TRL has no {k}"));
            assert!(close(*v, w, 1e-9), "{name} {k}: {v} vs TRL {w}");
        }
        let zero = want_metrics["frac_reward_zero_std"].as_f64().unwrap() == 1.0;
        assert_eq!(out.all_zero_spread, zero, "{name}");
    }
}

#[test]
fn loss_metrics_and_gradient_match_trl() {
    let device = tilpass_tests::test_device().autodiff();
    let dtype = if on_cpu() && device.supports_dtype(DType::F64) {
        DType::F64
    } else {
        DType::F32
    };
    let tol = tol();
    let cases = fixture()["loss"].as_array().unwrap().clone();
    assert!(cases.len() >= 20);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let c = &case["config"];
        let config = GrpoConfig {
            loss_type: parse::<GrpoLossType>(&c["loss_type"]),
            beta: c["beta"].as_f64().unwrap(),
            use_bias_correction_kl: c["use_bias_correction_kl"].as_bool().unwrap(),
            epsilon: c["epsilon"].as_f64().unwrap(),
            epsilon_high: c["epsilon_high"].as_f64(),
            max_completion_length: c["max_completion_length"].as_u64().unwrap() as usize,
            ..GrpoConfig::default()
        };
        let mask: Vec<Vec<f64>> = parse(&case["completion_mask"]);
        let leaf = t2(&rows(&case["logps"]), &device, dtype).require_grad();
        let opt2 = |k: &str| (!case[k].is_null()).then(|| t2(&rows(&case[k]), &device, dtype));
        let inputs = GrpoInputs {
            policy: TokenLogps::new(leaf.clone(), t2(&mask, &device, dtype)),
            old_logps: opt2("old_logps"),
            ref_logps: opt2("ref_logps"),
            entropies: opt2("entropies"),
            advantages: t1(&parse::<Vec<f64>>(&case["advantages"]), &device, dtype),
            num_items_in_batch: case["num_items_in_batch"].as_f64().unwrap(),
            gradient_accumulation_steps: c["gradient_accumulation_steps"].as_u64().unwrap()
                as usize,
            steps_per_generation: c["steps_per_generation"].as_u64().unwrap() as usize,
        };
        let out = grpo_loss(&config, &inputs).unwrap();
        let loss = out.loss.clone().try_into_vec_as::<f64>().unwrap()[0];
        assert!(
            close(loss, &case["loss"], tol),
            "{name} loss {loss} vs TRL {}",
            case["loss"]
        );
        // TRL's clip ratios are float32 (`.float()`); the rest float64.
        let want_metrics = case["metrics"].as_object().unwrap();
        assert_eq!(
            out.metrics.len(),
            want_metrics.len(),
            "{name}: {:?}",
            out.metrics
        );
        for (k, v) in &out.metrics {
            let w = want_metrics
                .get(k)
                .unwrap_or_else(|| panic!("{name}: TRL has no {k}"));
            let t = if k.starts_with("clip_ratio") {
                1e-7
            } else {
                tol
            };
            assert!(close(*v, w, t), "{name} {k}: {v} vs TRL {w}");
        }
        let grads = out.loss.backward();
        let got = leaf.grad(&grads).unwrap().try_into_vec_as::<f64>().unwrap();
        let want: Vec<f64> = rows(&case["grad"]).into_iter().flatten().collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tol, "{name} grad {i}: {g} vs TRL {w}");
        }
    }
}

/// Checks `(name, value)` metrics against TRL's, both ways (same names); clip ratios within
/// 1e-7 (TRL's are float32).
fn check_metrics(case: &str, got: &[(String, f64)], want: &Value, tol: f64) {
    let want = want.as_object().unwrap();
    assert_eq!(got.len(), want.len(), "{case}: {got:?} vs TRL {want:?}");
    for (k, v) in got {
        let w = want
            .get(k)
            .unwrap_or_else(|| panic!("{case}: TRL has no {k}"));
        let t = if k.starts_with("clip_ratio") {
            1e-7
        } else {
            tol
        };
        assert!(close(*v, w, t), "{case} {k}: {v} vs TRL {w}");
    }
}

#[test]
fn rloo_advantages_and_metrics_match_trl() {
    let cases = fixture()["rloo_advantages"].as_array().unwrap().clone();
    assert!(cases.len() >= 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let rewards: Vec<Vec<Option<f64>>> = parse(&case["rewards_per_func"]);
        let weights: Vec<f64> = parse(&case["reward_weights"]);
        let names: Vec<String> = (0..weights.len()).map(|i| format!("r{i}")).collect();
        let config = RlooConfig {
            beta: case["beta"].as_f64().unwrap(),
            normalize_advantages: case["normalize_advantages"].as_bool().unwrap(),
            reward_clip_range: parse(&case["reward_clip_range"]),
            num_generations: case["num_generations"].as_u64().unwrap() as usize,
            ..RlooConfig::default()
        };
        // The KL input as a trainer computes it: summed old - ref log-probs per completion.
        let mask = rows(&case["completion_mask"]);
        let old = rows(&case["old_logps"]);
        let reference = rows(&case["ref_logps"]);
        let kl: Vec<f64> = (0..mask.len())
            .map(|i| {
                (0..mask[i].len())
                    .map(|j| (old[i][j] - reference[i][j]) * mask[i][j])
                    .sum()
            })
            .collect();
        let tokens: f64 = mask.iter().flatten().sum();
        let out =
            rloo_advantages(&config, &rewards, &names, &weights, Some((&kl, tokens))).unwrap();
        let want: Vec<f64> = parse(&case["advantages"]);
        assert_eq!(out.advantages.len(), want.len(), "{name}");
        for (i, (g, w)) in out.advantages.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-9,
                "{name} advantage {i}: {g} vs TRL {w}"
            );
        }
        check_metrics(name, &out.metrics, &case["metrics"], 1e-9);
    }
}

#[test]
fn rloo_loss_metrics_and_gradient_match_trl() {
    let device = tilpass_tests::test_device().autodiff();
    let dtype = if on_cpu() && device.supports_dtype(DType::F64) {
        DType::F64
    } else {
        DType::F32
    };
    let tol = tol();
    let cases = fixture()["rloo_loss"].as_array().unwrap().clone();
    assert!(cases.len() >= 3);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let config = RlooConfig {
            epsilon: case["epsilon"].as_f64().unwrap(),
            epsilon_high: case["epsilon_high"].as_f64(),
            ..RlooConfig::default()
        };
        let leaf = t2(&rows(&case["logps"]), &device, dtype).require_grad();
        let inputs = RlooInputs {
            policy: TokenLogps::new(
                leaf.clone(),
                t2(&rows(&case["completion_mask"]), &device, dtype),
            ),
            old_logps: t1(&parse::<Vec<f64>>(&case["old_logps"]), &device, dtype),
            entropies: Some(t2(&rows(&case["entropies"]), &device, dtype)),
            advantages: t1(&parse::<Vec<f64>>(&case["advantages"]), &device, dtype),
        };
        let out = rloo_loss(&config, &inputs).unwrap();
        let loss = out.loss.clone().try_into_vec_as::<f64>().unwrap()[0];
        assert!(
            close(loss, &case["loss"], tol),
            "{name} loss {loss} vs TRL {}",
            case["loss"]
        );
        check_metrics(name, &out.metrics, &case["metrics"], tol);
        let grads = out.loss.backward();
        let got = leaf.grad(&grads).unwrap().try_into_vec_as::<f64>().unwrap();
        let want: Vec<f64> = rows(&case["grad"]).into_iter().flatten().collect();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tol, "{name} grad {i}: {g} vs TRL {w}");
        }
    }
}

#[test]
fn eos_masking_and_completion_metrics_match_trl() {
    let cases = fixture()["completions"].as_array().unwrap().clone();
    assert!(cases.len() >= 2);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let generated: Vec<Vec<u32>> = parse(&case["generated"]);
        let eos: Vec<u32> = parse(&case["eos_token_ids"]);
        let pad = case["pad_token_id"].as_u64().unwrap() as u32;
        let kept = completions_after_eos(&generated, &eos);
        assert_eq!(kept, parse::<Vec<Vec<u32>>>(&case["completions"]), "{name}");
        let mask: Vec<Vec<u32>> = parse(&case["completion_mask"]);
        for (k, m) in kept.iter().zip(&mask) {
            assert_eq!(k.len(), m.iter().sum::<u32>() as usize, "{name}");
        }
        check_metrics(
            name,
            &completion_metrics(&kept, &eos, pad),
            &case["metrics"],
            0.0,
        );
    }
}

#[test]
fn bad_inputs_are_refused_with_the_setting_named() {
    let device = tilpass_tests::test_device();
    let names = vec!["r".to_string()];
    let config = GrpoConfig {
        num_generations: 2,
        ..GrpoConfig::default()
    };
    // 3 completions are not whole groups of 2.
    let e = grpo_advantages(&config, &vec![vec![Some(1.0)]; 3], &names, &[1.0]).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "rewards",
                ..
            }
        ),
        "{e}"
    );
    let e = grpo_advantages(&config, &vec![vec![Some(1.0)]; 2], &names, &[1.0, 2.0]).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "reward_weights",
                ..
            }
        ),
        "{e}"
    );
    let e =
        grpo_advantages(&config, &vec![vec![Some(f64::INFINITY)]; 2], &names, &[1.0]).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::BadValue {
                input: "rewards",
                ..
            }
        ),
        "{e}"
    );
    let dtype = DType::F32;
    let logps = t2(&[vec![-1.0, -2.0]], &device, dtype);
    let inputs = GrpoInputs {
        policy: TokenLogps::new(logps.clone(), t2(&[vec![1.0, 0.0]], &device, dtype)),
        old_logps: None,
        ref_logps: None,
        entropies: None,
        advantages: t1(&[1.0], &device, dtype),
        num_items_in_batch: 1.0,
        gradient_accumulation_steps: 1,
        steps_per_generation: 1,
    };
    let kl = GrpoConfig {
        beta: 0.1,
        ..GrpoConfig::default()
    };
    let e = grpo_loss(&kl, &inputs).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::MissingInput {
                input: "ref_logps",
                ..
            }
        ),
        "{e}"
    );
    let e = grpo_loss(
        &GrpoConfig {
            epsilon: 1.5,
            ..GrpoConfig::default()
        },
        &inputs,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::InvalidSetting {
                setting: "epsilon",
                ..
            }
        ),
        "{e}"
    );
    let bad = GrpoInputs {
        advantages: t1(&[1.0, 2.0], &device, dtype),
        ..inputs
    };
    let e = grpo_loss(&GrpoConfig::default(), &bad).unwrap_err();
    assert!(
        matches!(
            e,
            PreferenceError::Shape {
                input: "advantages",
                ..
            }
        ),
        "{e}"
    );
}

/// A reward model scores a right-padded batch of prompt + completion texts as it scores each
/// text alone (the first output at the last real token), so rewards do not depend on batching.
#[test]
fn reward_model_rewards_do_not_depend_on_batching() {
    use tilpass::models::{DecoderClassifier, DecoderInput};
    use tilpass::preference::ModelReward;
    use tilpass::tokenize::Tokenizer;
    let dev = tilpass_tests::test_device();
    let model =
        DecoderClassifier::load(tilpass_tests::fixture_path("reward/heads/llama"), &dev).unwrap();
    let tok = Tokenizer::from_dir(tilpass_tests::fixture_path("train/orpo/tokenizer")).unwrap();
    let prompts = ["w3 w4 ", "w10 ", "w7 w8 w9 w11 "];
    let completions = ["w5 w6 w7", "w12", "w20 w21"];
    let rm = ModelReward {
        name: "rm".into(),
        model: &model,
        tokenizer: &tok,
        pad_token_id: model.pad_token_id().unwrap(),
        batch_size: 2,
    };
    let got = rm.score(&prompts, &completions).unwrap();
    assert_eq!(got.len(), 3);
    // Different texts get different scores (else the check below could not fail).
    assert!(got[0] != got[1] && got[1] != got[2], "{got:?}");
    for i in 0..3 {
        let ids = tok
            .encode(&format!("{}{}", prompts[i], completions[i]), false)
            .unwrap();
        let alone = model
            .scores(&DecoderInput::unpadded(&[ids]).unwrap())
            .unwrap()
            .try_into_vec_as::<f64>()
            .unwrap()[0];
        assert!(
            (got[i] - alone).abs() <= 1e-5,
            "row {i}: {} vs alone {alone}",
            got[i]
        );
    }
    assert!(rm.score(&prompts[..1], &completions).is_err());
}
