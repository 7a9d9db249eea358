//! The LamBERT pipeline end to end on tiny fixtures: (a) the Llama fixture labels texts by
//! scoring label verbalisations, (b) a BERT classifier (LoRA + its classifier head) learns the
//! labels, (c) it predicts them back; metrics are checked against an independent count.
//! (Model quality is not the point: the fixtures are random.)

use tilpass::models::{Bert, BertConfig, DecoderInput, DecoderLm, EncoderInput};
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::train::{
    TrainConfig, classification_loss, cls_batches, evaluate_classifier, label_probabilities,
    predict, score_labels, train_classifier,
};
use tilpass_tests::fixture_path;

fn texts() -> Vec<Vec<u32>> {
    (0..24u32)
        .map(|i| {
            (0..(5 + i % 4))
                .map(|j| (i * 17 + j * 29) % 240 + 12)
                .collect()
        })
        .collect()
}

#[test]
fn annotate_train_and_predict() {
    let dev = tilpass_tests::test_device();
    // (a) Annotation: prompt = BOS + text + a "label:" marker; labels are one token each.
    let llm = DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap();
    let prompts: Vec<Vec<u32>> = texts()
        .iter()
        .map(|t| [vec![1], t.clone(), vec![30]].concat())
        .collect();
    let verbal = [vec![5u32], vec![9], vec![11]];
    let scores = score_labels(&llm, &prompts, &verbal, 16).unwrap();
    // Independent check: the log-softmax of the next-token logits after each prompt.
    for (p, row) in prompts.iter().zip(&scores).take(3) {
        let logits = llm
            .forward(
                &DecoderInput::unpadded(std::slice::from_ref(p)).unwrap(),
                None,
            )
            .unwrap();
        let v: Vec<f32> = logits.into_data().try_into_vec_as::<f32>().unwrap();
        let last = &v[(p.len() - 1) * 256..p.len() * 256];
        let max = last.iter().cloned().fold(f32::MIN, f32::max);
        let lse = max + last.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        for (l, s) in verbal.iter().zip(row) {
            assert!((f64::from(last[l[0] as usize] - lse) - s).abs() < 1e-4);
        }
    }
    let annotated: Vec<(usize, Vec<f64>)> = scores.iter().map(|s| label_probabilities(s)).collect();
    for (_, probs) in &annotated {
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    let labels: Vec<usize> = annotated.iter().map(|(c, _)| *c).collect();
    // (b) Train the BERT classifier on the annotations.
    let ad = dev.clone().autodiff();
    let md = tilpass::core::ModelDir::open(fixture_path("encoders/bert_cls")).unwrap();
    let cfg: BertConfig = md.config().unwrap();
    let bert = Bert::load(cfg, None, &md.checkpoint().unwrap(), "config.json", &ad).unwrap();
    let mut peft = PeftModel::new(bert);
    let mut lora = LoraConfig::new(4, 8.0, &["query", "value"]);
    lora.modules_to_save = Some(vec!["classifier".into()]);
    peft.add_adapter("default", &lora, 0).unwrap();
    peft.freeze_base();
    let examples: Vec<(Vec<u32>, usize)> = texts()
        .into_iter()
        .map(|t| [vec![2], t].concat())
        .zip(labels.clone())
        .collect();
    let batches = cls_batches(&examples, 8, 0).unwrap();
    let mean_loss = |m: &Bert| -> f64 {
        batches
            .iter()
            .map(|b| {
                f64::from(
                    classification_loss(m, b)
                        .unwrap()
                        .0
                        .inner()
                        .into_scalar::<f32>(),
                )
            })
            .sum::<f64>()
            / batches.len() as f64
    };
    let before = mean_loss(&peft);
    let cfg = TrainConfig {
        learning_rate: 5e-3,
        max_steps: 15,
        ..Default::default()
    };
    let summary =
        train_classifier(&mut peft, "default", &batches, &cfg, None, &mut |_| {}).unwrap();
    assert_eq!(summary.steps, 15);
    let after = mean_loss(&peft);
    assert!(after < before, "training loss falls: {before} -> {after}");
    // (c) Predict and score; the metrics agree with a direct count.
    let inputs: Vec<EncoderInput> = batches.iter().map(|b| b.input.clone()).collect();
    let preds = predict(peft.model(), &inputs).unwrap();
    assert_eq!(preds.len(), 24);
    let correct = preds
        .iter()
        .zip(&labels)
        .filter(|((p, _), g)| p == *g)
        .count();
    let report = evaluate_classifier(peft.model(), &batches).unwrap();
    assert!((report.accuracy - correct as f64 / 24.0).abs() < 1e-12);
    assert_eq!(report.confusion.iter().flatten().sum::<usize>(), 24);
    for (_, probs) in &preds {
        assert!(
            (probs.iter().sum::<f32>() - 1.0).abs() < 1e-5,
            "softmax rows"
        );
    }
}

/// LTG-BERT / NorBERT3 as the classifier: a fresh head (`head.nonlinearity.{1,5}`) trained with
/// LoRA and `modules_to_save = ["head"]`, saved as a PEFT adapter and loaded back with the same
/// predictions; full fine-tuning moves the loss too.
#[test]
fn ltg_bert_classifiers_train_with_lora_or_fully_and_reload() {
    use tilpass::models::{EncoderModel, HasLinears};
    use tilpass::train::Target;
    let ad = tilpass_tests::test_device().autodiff();
    let names: Vec<String> = ["negativ", "nøytral", "positiv"].map(String::from).to_vec();
    let load = || {
        EncoderModel::load(fixture_path("encoders/ltg_bert_mlm"), &ad)
            .unwrap()
            .with_new_classifier(&names, 3)
            .unwrap()
    };
    let examples: Vec<(Vec<u32>, usize)> = texts()
        .into_iter()
        .enumerate()
        .map(|(i, t)| ([vec![1], t, vec![2]].concat(), i % 3))
        .collect();
    let batches = cls_batches(&examples, 8, 0).unwrap();
    let loss = |m: &EncoderModel| -> f64 {
        batches
            .iter()
            .map(|b| {
                f64::from(
                    classification_loss(m, b)
                        .unwrap()
                        .0
                        .inner()
                        .into_scalar::<f32>(),
                )
            })
            .sum::<f64>()
    };
    let mut peft = PeftModel::new(load());
    let paths: Vec<String> = peft.linears().into_iter().map(|(p, _)| p).collect();
    assert!(
        paths.contains(&"head.nonlinearity.5".to_string()),
        "{paths:?}"
    );
    let mut lora = LoraConfig::new(4, 8.0, &["in_proj_qk", "in_proj_v"]);
    lora.modules_to_save = Some(vec!["head".into()]);
    peft.add_adapter("default", &lora, 0).unwrap();
    peft.freeze_base();
    let before = loss(&peft);
    let cfg = TrainConfig {
        learning_rate: 5e-3,
        max_steps: 12,
        ..Default::default()
    };
    train_classifier(&mut peft, "default", &batches, &cfg, None, &mut |_| {}).unwrap();
    let after = loss(&peft);
    assert!(after < before, "LoRA: {before} -> {after}");
    let dir = tempfile::tempdir().unwrap();
    peft.save_adapter("default", dir.path()).unwrap();
    let keys = tilpass::core::Checkpoint::open(dir.path().join("adapter_model.safetensors"))
        .unwrap()
        .keys()
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(
        keys.contains(&"base_model.model.head.nonlinearity.5.weight".to_string()),
        "{keys:?}"
    );
    let inputs: Vec<EncoderInput> = batches.iter().map(|b| b.input.clone()).collect();
    let trained = predict(peft.model(), &inputs).unwrap();
    let mut again = PeftModel::new(load());
    again.load_adapter(dir.path(), "default").unwrap();
    let reloaded = predict(again.model(), &inputs).unwrap();
    for (a, b) in trained.iter().zip(&reloaded) {
        assert_eq!(a.0, b.0);
        for (x, y) in a.1.iter().zip(&b.1) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    // Full fine-tuning of the same classifier.
    let mut full = PeftModel::new(load());
    let before = loss(&full);
    train_classifier(&mut full, Target::Full, &batches, &cfg, None, &mut |_| {}).unwrap();
    let after = loss(&full);
    assert!(after < before, "full: {before} -> {after}");
}
