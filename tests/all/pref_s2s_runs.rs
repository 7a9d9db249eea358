//! `OrpoRun` / `CpoRun` on an encoder-decoder directory (the tiny T5.1.1 with a word-level
//! tokenizer): `run` (decoders) refuses it naming `run_seq2seq` before any work; `run_seq2seq`
//! trains a `SEQ_2_SEQ_LM` adapter; conversational rows are refused naming the row; the DPO,
//! KTO and reward runs refuse encoder-decoders (TRL 1.16 does not support them there).

use serde_json::{Value, json};
use tilpass::data::DatasetSpec;
use tilpass::peft::{LoraConfig, TargetModules};
use tilpass::preference::{CpoLossType, CpoRun, DpoRun, KtoRun, OrpoRun, RewardRun};
use tilpass_tests::test_device;

use crate::runs::{with_tokenizer, write_jsonl};

fn lora(default: LoraConfig) -> LoraConfig {
    LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        target_modules: Some(TargetModules::List(vec!["q".into(), "v".into()])),
        ..default
    }
}

fn t5_dir() -> tempfile::TempDir {
    let model = with_tokenizer("encoders/t5_v1_1");
    std::fs::write(
        model.path().join("tokenizer_config.json"),
        r#"{"eos_token": "t1", "pad_token": "t0"}"#,
    )
    .unwrap();
    model
}

fn text_rows() -> Vec<Value> {
    (0..4)
        .map(|i| {
            json!({"prompt": format!("t{} t{} t1", 10 + i, 20 + i),
                   "chosen": format!("t{} t41 t1", 40 + i), "rejected": "t60 t61 t62 t1"})
        })
        .collect()
}

#[test]
fn orpo_and_cpo_runs_take_encoder_decoders_through_run_seq2seq() {
    let model = t5_dir();
    let work = tempfile::tempdir().unwrap();
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &text_rows());
    let orpo = OrpoRun {
        model: Some(model.path().to_path_buf()),
        data: Some(DatasetSpec::File(data.clone())),
        out: Some(work.path().join("orpo")),
        steps: 2,
        batch_size: 2,
        lr: 1e-2,
        lora: lora(OrpoRun::default().lora),
        ..Default::default()
    };
    let err = orpo
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("run_seq2seq"), "{err}");
    assert!(
        !work.path().join("orpo").exists(),
        "refused before any work"
    );
    let out = orpo.run_seq2seq(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(out.summary.steps, 2);
    assert!(out.summary.last_loss.is_finite());
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(out.saved.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_2_SEQ_LM");
    let metrics = std::fs::read_to_string(work.path().join("orpo/metrics.jsonl")).unwrap();
    assert!(metrics.contains("log_odds_ratio"), "{metrics}");

    let cpo = CpoRun {
        model: Some(model.path().to_path_buf()),
        data: Some(DatasetSpec::File(data)),
        out: Some(work.path().join("simpo")),
        steps: 2,
        batch_size: 2,
        loss_type: CpoLossType::Simpo,
        cpo_alpha: 0.0,
        lora: lora(CpoRun::default().lora),
        ..Default::default()
    };
    let err = cpo
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("run_seq2seq"), "{err}");
    let out = cpo.run_seq2seq(&test_device(), &mut |_| {}).unwrap();
    assert_eq!(out.summary.steps, 2);

    // Evaluation is not supported on this path yet: refused before any work.
    let with_eval = OrpoRun {
        eval_data: orpo.data.clone(),
        out: Some(work.path().join("eval")),
        ..orpo.clone()
    };
    let err = with_eval
        .run_seq2seq(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("eval_data"), "{err}");
    assert!(
        !work.path().join("eval").exists(),
        "refused before any work"
    );

    // Conversational rows: refused naming the row, before training.
    let conv = write_jsonl(
        &work.path().join("conv.jsonl"),
        &[json!({"prompt": [{"role": "user", "content": "t3"}],
                 "chosen": [{"role": "assistant", "content": "t4"}],
                 "rejected": [{"role": "assistant", "content": "t5"}]})],
    );
    let bad = OrpoRun {
        data: Some(DatasetSpec::File(conv)),
        out: Some(work.path().join("conv")),
        ..orpo.clone()
    };
    let err = bad
        .run_seq2seq(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv.jsonl:1") && err.contains("chat template"),
        "{err}"
    );
    assert!(
        !work.path().join("conv").exists(),
        "no output of a failed run"
    );
}

#[test]
fn dpo_kto_and_reward_runs_refuse_encoder_decoders() {
    let model = t5_dir();
    let work = tempfile::tempdir().unwrap();
    let data = write_jsonl(&work.path().join("pairs.jsonl"), &text_rows());
    let (m, d) = (
        Some(model.path().to_path_buf()),
        Some(DatasetSpec::File(data)),
    );
    let out = |name: &str| Some(work.path().join(name));
    let errs = [
        DpoRun {
            model: m.clone(),
            data: d.clone(),
            out: out("dpo"),
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string(),
        KtoRun {
            model: m.clone(),
            data: d.clone(),
            out: out("kto"),
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string(),
        RewardRun {
            model: m.clone(),
            data: d.clone(),
            out: out("reward"),
            ..Default::default()
        }
        .run(&test_device(), &mut |_| {})
        .unwrap_err()
        .to_string(),
    ];
    for e in errs {
        assert!(
            e.contains("TRL 1.16 does not support encoder-decoders in DPO/KTO/Reward")
                && e.contains("use orpo or cpo"),
            "{e}"
        );
    }
    for name in ["dpo", "kto", "reward"] {
        assert!(
            !work.path().join(name).exists(),
            "{name}: refused before any work"
        );
    }
}
