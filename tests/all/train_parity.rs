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
