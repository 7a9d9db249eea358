//! The LM head fused with the causal-LM loss (`tilpass_models::head_loss`, used by
//! `causal_lm_loss` / `prompt_lm_loss` when the head is frozen) against the loss of the
//! computed logits (`causal_lm_cross_entropy`, itself checked against transformers / TRL in
//! train_parity): loss and gradient at the hidden states, for a linear head (Llama), tied
//! embeddings (GPT-2, Llama 3 with `tie_word_embeddings`) and ignored labels; the same for
//! T5's loss (`seq2seq_lm_loss`, unshifted labels) with untied and tied heads. The reference
//! trainer runs (train_parity, prompt_train_parity, runs) go through the fused path too: a
//! 0.1% error in its gradient fails six of them.

use tilpass::burn::tensor::{Distribution, Tensor};
use tilpass::models::DecoderLm;
use tilpass::models::head_loss::{LmHead, head_cross_entropy};
use tilpass::models::linear::HasLinears;
use tilpass::peft::{LoraConfig, PeftModel};
use tilpass::train::causal_lm_cross_entropy;
use tilpass::train::fused_ce::causal_lm_loss_from_hidden;
use tilpass_tests::fixture_path;

/// A frozen fixture model on the test device with autodiff.
fn frozen(name: &str) -> DecoderLm {
    let dev = tilpass_tests::test_device().autodiff();
    let mut model = DecoderLm::load(fixture_path(&format!("models/{name}")), &dev).unwrap();
    model.freeze();
    model
}

/// Labels `[b, s]` with ignored (-100) positions, as chat SFT masks prompts.
fn labels(b: usize, s: usize, v: usize) -> Vec<i64> {
    (0..b * s)
        .map(|i| {
            if i % 7 < 2 {
                -100
            } else {
                ((i * 37 + 11) % v) as i64
            }
        })
        .collect()
}

/// The fused loss against the loss of the logits, each with its leaf: values within 2e-6
/// relative, gradients at the leaves within 1e-5 of the largest (and not all zero); returns
/// the fused value and gradient.
fn compare_losses(
    name: &str,
    (x_ref, reference): (&Tensor<3>, Tensor<1>),
    (x_fused, fused): (&Tensor<3>, Tensor<1>),
) -> (f32, Vec<f32>) {
    let (r, f) = (
        reference.clone().into_scalar::<f32>(),
        fused.clone().into_scalar::<f32>(),
    );
    assert!(
        r.is_finite() && (r - f).abs() <= 2e-6 * r.abs(),
        "{name}: loss {f} vs {r}"
    );
    let grad = |x: &Tensor<3>, loss: Tensor<1>| {
        x.grad(&loss.backward())
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let (g_ref, g_fused) = (grad(x_ref, reference), grad(x_fused, fused));
    let worst = tilpass_tests::max_abs_diff(&g_fused, &g_ref) as f32;
    let scale = g_ref.iter().map(|a| a.abs()).fold(0f32, f32::max);
    println!("{name}: fused head loss {f} vs {r}, gradient max diff {worst:e} (max {scale:e})");
    assert!(
        scale > 0.0 && worst <= 1e-5 * scale,
        "{name}: gradient differs by {worst}"
    );
    (f, g_fused)
}

/// On the CPU (`on_cpu`) the fused kernel reads the head in place and gives the mean loss `f`
/// over `n` targets; elsewhere it declines.
fn check_direct(
    name: &str,
    (host, h, head, targets): (&[f32], usize, &LmHead, &[Option<usize>]),
    n: usize,
    f: f32,
    on_cpu: bool,
) {
    let direct = head_cross_entropy(host, h, head, targets, 1.0, false);
    assert_eq!(direct.is_some(), on_cpu, "{name}");
    if let Some(d) = direct {
        let mean = d.losses.iter().sum::<f64>() / n as f64;
        assert!(
            (mean as f32 - f).abs() <= 1e-6 * f.abs(),
            "{name}: {mean} vs {f}"
        );
    }
}

#[test]
fn the_fused_head_matches_the_loss_of_the_logits() {
    for name in ["llama_gqa", "gpt2", "llama3_rope_bf16_sharded"] {
        let model = frozen(name);
        let dev = tilpass_tests::test_device().autodiff();
        let on_cpu = tilpass::models::pool::on_flex(&dev);
        let head = model.frozen_lm_head().expect("a frozen plain head");
        let (b, s, h) = (3usize, 9usize, model.hidden_size());
        let v = model.vocab_size();
        let y = labels(b, s, v);
        let data = Tensor::<3>::random([b, s, h], Distribution::Normal(0.0, 1.0), &dev).into_data();
        let leaf = || Tensor::<3>::from_data(data.clone(), &dev).require_grad();
        let (x_ref, x_fused) = (leaf(), leaf());
        let (reference, n_ref) = causal_lm_cross_entropy(model.logits(x_ref.clone()), &y).unwrap();
        let (fused, n) = causal_lm_loss_from_hidden(&model, x_fused.clone(), &y).unwrap();
        assert_eq!(n, n_ref);
        let (f, g_fused) = compare_losses(name, (&x_ref, reference), (&x_fused, fused));
        // On the CPU the fused kernel is what ran (it declines elsewhere).
        let host = data.clone().try_to_vec::<f32>().unwrap();
        let targets: Vec<Option<usize>> = (0..b * s)
            .map(|i| (i % s != s - 1 && y[i + 1] >= 0).then(|| y[i + 1] as usize))
            .collect();
        check_direct(name, (&host, h, &head, &targets), n, f, on_cpu);
        // Rows of ignored positions get no gradient.
        for (i, row) in g_fused.chunks_exact(h).enumerate() {
            let supervised = i % s != s - 1 && y[i + 1] >= 0;
            if !supervised {
                assert!(
                    row.iter().all(|g| *g == 0.0),
                    "{name}: row {i} has a gradient"
                );
            }
        }
        // Outside autodiff: the same value.
        let plain = Tensor::<3>::from_data(data.clone(), &dev);
        let (value, _) = causal_lm_loss_from_hidden(&model, plain, &y).unwrap();
        let value = value.into_scalar::<f32>();
        assert!(
            (value - f).abs() <= 1e-6 * f.abs(),
            "{name}: {value} vs {f}"
        );
    }
}

#[test]
fn only_a_frozen_head_is_fused() {
    // Full fine-tuning: the head takes gradients.
    let dev = tilpass_tests::test_device().autodiff();
    let model = DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap();
    assert!(model.frozen_lm_head().is_none());
    let tied = DecoderLm::load(fixture_path("models/gpt2"), &dev).unwrap();
    assert!(tied.frozen_lm_head().is_none());
    // Adapter training: the base frozen, the head plain.
    let mut peft = PeftModel::new(DecoderLm::load(fixture_path("models/llama_gqa"), &dev).unwrap());
    peft.add_adapter(
        "default",
        &LoraConfig::new(4, 8.0, &["q_proj", "v_proj"]),
        0,
    )
    .unwrap();
    peft.freeze_base();
    assert!(peft.model().frozen_lm_head().is_some());
    // Labels outside the vocabulary are refused before any work, as on the logits path.
    let model = frozen("llama_gqa");
    let x = Tensor::<3>::zeros(
        [1, 4, model.hidden_size()],
        &tilpass_tests::test_device().autodiff(),
    );
    let err = causal_lm_loss_from_hidden(&model, x, &[1, 2, 999, 3]).unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
}

#[test]
fn encoder_decoder_labels_other_than_minus_100_below_zero_are_refused() {
    use tilpass::train::fused_ce::label_cross_entropy;
    let dev = tilpass_tests::test_device();
    let logits = Tensor::<3>::zeros([1, 3, 10], &dev);
    let (loss, n) = label_cross_entropy(logits.clone(), &[1, -100, 9]).unwrap();
    assert_eq!(n, 2);
    // Uniform logits: the loss is ln(10) whatever the labels.
    let l = loss.into_scalar::<f32>();
    assert!((l - 10f32.ln()).abs() < 1e-6, "{l}");
    for bad in [-5i64, 10] {
        let err = label_cross_entropy(logits.clone(), &[1, bad, 2]).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
    }
}

#[test]
fn the_encoder_decoder_loss_with_the_head_fused_matches_the_logits() {
    use tilpass::models::EncoderInput;
    use tilpass::models::Seq2SeqLm;
    use tilpass::models::seq2seq::Seq2SeqModel;
    use tilpass::models::seq2seq::{Seq2SeqOutput, forward_seq2seq, forward_seq2seq_to_head};
    use tilpass::train::fused_ce::{label_cross_entropy, label_loss_from_hidden};
    // T5.1.1 with an untied head, and T5 with the head tied to the embeddings (its decoder
    // states rescaled by d_model^-0.5), both frozen under an adapter.
    for name in ["encoders/t5_v1_1_tf4", "encoders/t5_v1_0"] {
        let dev = tilpass_tests::test_device().autodiff();
        let mut peft = PeftModel::new(Seq2SeqLm::load(fixture_path(name), &dev).unwrap());
        peft.add_adapter("default", &LoraConfig::new(4, 8.0, &["q", "v"]), 0)
            .unwrap();
        peft.freeze_base();
        let Seq2SeqLm::T5(t5) = peft.model() else {
            panic!("{name} is a T5")
        };
        let head = t5.frozen_lm_head().expect("a frozen head");
        // The states stopped before the head give the model's own logits.
        let input = EncoderInput {
            input_ids: vec![5, 9, 2, 7, 11, 1],
            attention_mask: vec![1, 1, 1, 1, 1, 0],
            token_type_ids: vec![0; 6],
            batch: 2,
            seq: 3,
        };
        let dec = vec![vec![0, 4, 6], vec![0, 8, 3]];
        let logits = forward_seq2seq(peft.model(), &input, &dec).unwrap();
        let Seq2SeqOutput::Hidden(states, _) =
            forward_seq2seq_to_head(peft.model(), &input, &dec).unwrap()
        else {
            panic!("{name}: a frozen T5 head stops before the head")
        };
        let (a, z) = (
            logits.into_data().try_to_vec::<f32>().unwrap(),
            head.logits(states).into_data().try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), z.len(), "{name}: logits");
        let worst = tilpass_tests::max_abs_diff(&a, &z);
        // Equal on the CPU (the same products); 1e-5 leaves room for a GPU's scheduling.
        assert!(worst <= 1e-5, "{name}: logits differ by {worst:e}");
        let (b, t, h) = (3usize, 5usize, peft.model().hidden_size());
        let (_, v) = head.dims();
        let y: Vec<i64> = (0..b * t)
            .map(|i| {
                if i % 4 == 3 {
                    -100
                } else {
                    ((i * 37 + 11) % v) as i64
                }
            })
            .collect();
        let data = Tensor::<3>::random([b, t, h], Distribution::Normal(0.0, 1.0), &dev).into_data();
        let leaf = || Tensor::<3>::from_data(data.clone(), &dev).require_grad();
        let (x_ref, x_fused) = (leaf(), leaf());
        let (reference, n_ref) = label_cross_entropy(head.logits(x_ref.clone()), &y).unwrap();
        let (fused, n) = label_loss_from_hidden(x_fused.clone(), &head, &y).unwrap();
        assert_eq!(n, n_ref);
        let (f, g_fused) = compare_losses(name, (&x_ref, reference), (&x_fused, fused));
        for (i, row) in g_fused.chunks_exact(h).enumerate() {
            if y[i] < 0 {
                assert!(
                    row.iter().all(|g| *g == 0.0),
                    "{name}: row {i} has a gradient"
                );
            }
        }
        // On the CPU the fused kernel is what ran (it declines elsewhere).
        let on_cpu = tilpass::models::pool::on_flex(&dev);
        let host = data.clone().try_to_vec::<f32>().unwrap();
        let targets: Vec<Option<usize>> =
            y.iter().map(|&l| (l >= 0).then_some(l as usize)).collect();
        check_direct(name, (&host, h, &head, &targets), n, f, on_cpu);
        // Labels outside the vocabulary are refused, as on the logits path.
        let mut bad = y.clone();
        bad[1] = v as i64;
        let err = label_loss_from_hidden(leaf(), &head, &bad).unwrap_err();
        assert!(err.to_string().contains(&v.to_string()), "{err}");
    }
}
