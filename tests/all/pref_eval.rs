//! In-loop evaluation of the ORPO, CPO, KTO and reward trainers (`eval_steps`), on the batches
//! and initial adapters of their TRL parity fixtures: every evaluation reaches `metrics.jsonl`
//! as `eval_loss` plus each metric TRL logged for the fixture's training steps with TRL's
//! `eval_` prefix; evaluating does not change training (the same per-step losses, gradient
//! norms and metrics as a run without evaluation); the evaluation at the last step equals an
//! independent `evaluate_*` call on the trained model.

use std::collections::BTreeSet;

use serde_json::Value;
use tilpass::models::{DecoderLm, HasLinears};
use tilpass::peft::PeftModel;
use tilpass::preference::{
    CpoConfig, DpoEval, DpoReference, KtoConfig, OrpoConfig, RewardConfig, evaluate_cpo,
    evaluate_kto, evaluate_orpo, evaluate_reward, train_cpo, train_kto, train_orpo, train_reward,
};
use tilpass::train::{Event, StepLog, Summary, Target, TrainConfig};
use tilpass_tests::{fixture_json, fixture_path};

/// The metric names TRL logged at the fixture's training steps (all steps together), with
/// TRL's `eval_` prefix; TRL's cumulative `num_tokens` is not logged by tilpass.
fn trl_eval_names(reference: &Value) -> BTreeSet<String> {
    let skip = ["loss", "grad_norm", "learning_rate", "step", "num_tokens"];
    reference["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_object().unwrap().keys().cloned())
        .filter(|k| !skip.contains(&k.as_str()))
        .map(|k| format!("eval_{k}"))
        .collect()
}

/// The evaluation lines of `out/metrics.jsonl` (those with `eval_loss`).
fn eval_lines(out: &std::path::Path) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("eval_loss").is_some())
        .map(|v| v.as_object().unwrap().clone())
        .collect()
}

/// Runs `train` with and without evaluation every step; checks the evaluation lines, that
/// training is unchanged, and that the last evaluation equals `evaluate(model, steps)`.
fn check_eval<M>(
    case: &str,
    names: &BTreeSet<String>,
    base_cfg: &TrainConfig,
    mut model_of: impl FnMut() -> M,
    mut train: impl FnMut(&mut M, bool, &TrainConfig, &mut dyn FnMut(Event)) -> Summary,
    mut evaluate: impl FnMut(&mut M, usize) -> DpoEval,
) {
    let mut runs = Vec::new();
    for with_eval in [false, true] {
        let out = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            eval_steps: with_eval.then_some(1),
            output_dir: Some(out.path().to_path_buf()),
            ..base_cfg.clone()
        };
        let mut model = model_of();
        let mut steps: Vec<StepLog> = Vec::new();
        let summary = train(&mut model, with_eval, &cfg, &mut |e| {
            if let Event::Step(s) = e {
                steps.push(s.clone());
            }
        });
        runs.push((out, model, steps, summary));
    }
    let mut runs = runs.into_iter();
    let (plain_out, _, plain, _) = runs.next().unwrap();
    assert!(
        eval_lines(plain_out.path()).is_empty(),
        "{case}: no evaluation without eval_steps"
    );
    let (out, mut model, steps, summary) = runs.next().unwrap();
    assert_eq!(steps.len(), plain.len(), "{case}: steps");
    for (a, b) in steps.iter().zip(&plain) {
        assert_eq!(
            (a.loss, a.grad_norm, &a.metrics),
            (b.loss, b.grad_norm, &b.metrics),
            "{case} step {}: evaluation changed training",
            a.step
        );
    }
    let lines = eval_lines(out.path());
    assert_eq!(lines.len(), steps.len(), "{case}: one evaluation per step");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["step"].as_u64(), Some(i as u64 + 1), "{case}");
        let got: BTreeSet<String> = line
            .keys()
            .filter(|k| k.starts_with("eval_") && *k != "eval_loss")
            .cloned()
            .collect();
        assert_eq!(
            &got,
            names,
            "{case} evaluation {}: TRL's eval_ names",
            i + 1
        );
    }
    let last = summary
        .last_eval
        .clone()
        .expect("an evaluation at the last step");
    assert_eq!(last.step, steps.len());
    let again = evaluate(&mut model, last.step);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * (1.0 + b.abs());
    assert!(
        close(last.eval_loss, again.eval_loss),
        "{case}: eval_loss {} vs evaluate {}",
        last.eval_loss,
        again.eval_loss
    );
    assert_eq!(
        last.metrics.keys().collect::<Vec<_>>(),
        again.metrics.keys().collect::<Vec<_>>(),
        "{case}"
    );
    for (k, v) in &last.metrics {
        assert!(
            close(*v, again.metrics[k]),
            "{case} {k}: {v} vs {}",
            again.metrics[k]
        );
        let logged = lines.last().unwrap()[k].as_f64().unwrap();
        assert!(
            close(*v, logged),
            "{case} {k} in metrics.jsonl: {logged} vs {v}"
        );
    }
}

fn fixture(case: &str) -> (Value, TrainConfig) {
    let reference = fixture_json(&format!("train/{case}/reference.json"));
    let cfg = crate::pref_trainer_parity::config(&reference, std::path::Path::new("unused"));
    (reference, cfg)
}

fn decoder(case: &str) -> PeftModel<DecoderLm> {
    crate::train_parity::fresh_model(&fixture_path(&format!("train/{case}/initial")))
}

#[test]
fn orpo_evaluates_every_eval_steps_with_trls_names() {
    let (reference, cfg) = fixture("orpo");
    let batches = crate::pref_trainer_parity::paired_batches(&reference);
    let eval = &batches[..2];
    let orpo: OrpoConfig =
        serde_json::from_value(serde_json::json!({"beta": reference["beta"]})).unwrap();
    check_eval(
        "orpo",
        &trl_eval_names(&reference),
        &cfg,
        || decoder("orpo"),
        |m, with_eval, cfg, on_event| {
            let e = if with_eval { eval } else { &[] };
            train_orpo(m, "default", &orpo, &batches, e, cfg, None, on_event).unwrap()
        },
        |m, step| evaluate_orpo(m, &orpo, eval, step).unwrap(),
    );
}

#[test]
fn cpo_evaluates_every_eval_steps_with_trls_names() {
    for case in ["cpo_simpo", "cpo_sigmoid"] {
        let (reference, cfg) = fixture(case);
        let batches = crate::pref_trainer_parity::paired_batches(&reference);
        let eval = &batches[1..];
        let mut settings = serde_json::Map::new();
        for k in [
            "beta",
            "loss_type",
            "cpo_alpha",
            "simpo_gamma",
            "label_smoothing",
            "alpha",
        ] {
            settings.insert(k.into(), reference[k].clone());
        }
        let cpo: CpoConfig = serde_json::from_value(Value::Object(settings)).unwrap();
        check_eval(
            case,
            &trl_eval_names(&reference),
            &cfg,
            || decoder(case),
            |m, with_eval, cfg, on_event| {
                let e = if with_eval { eval } else { &[] };
                train_cpo(m, "default", &cpo, &batches, e, cfg, None, on_event).unwrap()
            },
            |m, step| evaluate_cpo(m, &cpo, eval, step).unwrap(),
        );
    }
}

#[test]
fn kto_evaluates_every_eval_steps_with_trls_names() {
    let (reference, cfg) = fixture("kto");
    let batches = crate::pref_trainer_parity::kto_batches(&reference);
    let eval = &batches[..];
    let mut settings = serde_json::Map::new();
    for k in [
        "beta",
        "desirable_weight",
        "undesirable_weight",
        "loss_type",
    ] {
        settings.insert(k.into(), reference[k].clone());
    }
    let kto: KtoConfig = serde_json::from_value(Value::Object(settings)).unwrap();
    check_eval(
        "kto",
        &trl_eval_names(&reference),
        &cfg,
        || decoder("kto"),
        |m, with_eval, cfg, on_event| {
            let e = if with_eval { eval } else { &[] };
            train_kto(
                m,
                "default",
                DpoReference::DisabledAdapters,
                &kto,
                &batches,
                e,
                cfg,
                None,
                on_event,
            )
            .unwrap()
        },
        |m, step| evaluate_kto(m, DpoReference::DisabledAdapters, &kto, eval, step).unwrap(),
    );
}

#[test]
fn reward_trainer_evaluates_every_eval_steps_with_trls_names() {
    let reference = fixture_json("train/reward_lora/reference.json");
    let cfg = crate::reward_parity::config(&reference, std::path::Path::new("unused"));
    let batches = crate::reward_parity::batches(&reference);
    let eval = &batches[..2];
    let rc = RewardConfig::default();
    check_eval(
        "reward_lora",
        &trl_eval_names(&reference),
        &cfg,
        || crate::reward_parity::reward_model("train/reward_lora", 0),
        |m, with_eval, cfg, on_event| {
            let e = if with_eval { eval } else { &[] };
            train_reward(m, "default", &rc, &batches, e, cfg, None, on_event).unwrap()
        },
        |m, step| {
            let e = evaluate_reward(m.model(), &rc, eval, step).unwrap();
            DpoEval {
                step: e.step,
                eval_loss: e.eval_loss,
                metrics: e.metrics,
            }
        },
    );
}

#[test]
fn evaluation_settings_need_evaluation_batches() {
    let (reference, cfg) = fixture("orpo");
    let batches = crate::pref_trainer_parity::paired_batches(&reference);
    let out = tempfile::tempdir().unwrap();
    let with_eval = TrainConfig {
        eval_steps: Some(1),
        output_dir: Some(out.path().to_path_buf()),
        ..cfg.clone()
    };
    let mut m = decoder("orpo");
    let err = train_orpo(
        &mut m,
        Target::Adapter("default"),
        &OrpoConfig::default(),
        &batches,
        &[],
        &with_eval,
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("evaluation batches") && err.to_string().contains("eval_steps"),
        "{err}"
    );
    let patience = TrainConfig {
        early_stopping_patience: Some(1),
        output_dir: Some(out.path().to_path_buf()),
        ..cfg
    };
    let err = train_cpo(
        &mut m,
        Target::Adapter("default"),
        &CpoConfig::default(),
        &batches,
        &batches,
        &patience,
        None,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("early_stopping_patience"), "{err}");
    assert!(!out.path().join("metrics.jsonl").exists());
}

/// Evaluations run with the adapters' dropout off (transformers' `Trainer.evaluate` calls
/// `model.eval()`): on an autodiff device LoRA dropout is active in a plain forward, and
/// `PeftModel::with_eval_mode` — which the training loop and the runs wrap every evaluation
/// in — gives exactly the dropout-free values and restores the dropout afterwards.
#[test]
fn evaluation_runs_without_adapter_dropout() {
    let (reference, _) = fixture("orpo");
    let batches = crate::pref_trainer_parity::paired_batches(&reference);
    let eval = &batches[..1];
    let orpo: OrpoConfig =
        serde_json::from_value(serde_json::json!({"beta": reference["beta"]})).unwrap();
    // The trained adapter (the initial one has B = 0, on which dropout has no effect).
    let mut m = crate::train_parity::fresh_model(&fixture_path("train/orpo/final"));
    let clean = evaluate_orpo(&m, &orpo, eval, 0).unwrap();
    let set_dropout = |m: &mut PeftModel<DecoderLm>, p: f64| {
        for (_, lin) in m.linears_mut() {
            for b in &mut lin.lora {
                b.dropout.prob = p;
            }
        }
    };
    set_dropout(&mut m, 0.5);
    let noisy = evaluate_orpo(&m, &orpo, eval, 0).unwrap();
    assert_ne!(
        noisy.eval_loss, clean.eval_loss,
        "LoRA dropout is active in a plain forward on an autodiff device"
    );
    let evaluated = m.with_eval_mode(|p| evaluate_orpo(p, &orpo, eval, 0).unwrap());
    assert_eq!(evaluated, clean, "evaluation in eval mode has no dropout");
    let probs: Vec<f64> = m
        .linears()
        .iter()
        .flat_map(|(_, l)| l.lora.iter().map(|b| b.dropout.prob))
        .collect();
    assert!(
        !probs.is_empty() && probs.iter().all(|&p| p == 0.5),
        "{probs:?}"
    );
}
