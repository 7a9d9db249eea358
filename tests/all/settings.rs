//! Every numeric setting of the library's config types is checked (range, finiteness) before
//! any work, with the setting named and the accepted range in the message: generation,
//! encoder-decoder generation, the training loop, annotation labels and length filters.

use tilpass::data::LengthFilter;
use tilpass::models::{GenerateConfig, ModelError, Seq2SeqConfig};
use tilpass::train::{AnnotateRun, RunConfig, TrainConfig, TrainError, train_lm};
use tilpass_tests::fixture_path;

use crate::train_parity::{fresh_model, reference_batches};

fn field_of(e: &ModelError) -> &str {
    match e {
        ModelError::InvalidConfig { field, .. } => field,
        other => panic!("not an InvalidConfig: {other}"),
    }
}

#[test]
fn generation_settings_are_checked_with_their_range() {
    GenerateConfig::default().validate().unwrap();
    let cases: Vec<(&str, GenerateConfig, &str)> = vec![
        (
            "max_new_tokens",
            GenerateConfig {
                max_new_tokens: 0,
                ..Default::default()
            },
            ">= 1",
        ),
        (
            "temperature",
            GenerateConfig {
                temperature: -0.5,
                ..Default::default()
            },
            ">= 0",
        ),
        (
            "temperature",
            GenerateConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
            "finite",
        ),
        (
            "temperature",
            GenerateConfig {
                temperature: 0.0,
                do_sample: true,
                ..Default::default()
            },
            "> 0 when sampling",
        ),
        (
            "top_k",
            GenerateConfig {
                top_k: Some(0),
                ..Default::default()
            },
            ">= 1",
        ),
        (
            "top_p",
            GenerateConfig {
                top_p: Some(0.0),
                ..Default::default()
            },
            "(0, 1]",
        ),
        (
            "top_p",
            GenerateConfig {
                top_p: Some(1.5),
                ..Default::default()
            },
            "(0, 1]",
        ),
        (
            "top_p",
            GenerateConfig {
                top_p: Some(f32::NAN),
                ..Default::default()
            },
            "(0, 1]",
        ),
        (
            "repetition_penalty",
            GenerateConfig {
                repetition_penalty: Some(0.0),
                ..Default::default()
            },
            "> 0",
        ),
        (
            "repetition_penalty",
            GenerateConfig {
                repetition_penalty: Some(f32::INFINITY),
                ..Default::default()
            },
            "finite",
        ),
    ];
    for (field, cfg, range) in cases {
        let err = cfg.validate().unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
        assert!(err.to_string().contains(range), "{field}: {err}");
    }
    Seq2SeqConfig::default().validate().unwrap();
    for (field, cfg) in [
        (
            "num_beams",
            Seq2SeqConfig {
                num_beams: 0,
                ..Default::default()
            },
        ),
        (
            "max_new_tokens",
            Seq2SeqConfig {
                max_new_tokens: 0,
                ..Default::default()
            },
        ),
        (
            "length_penalty",
            Seq2SeqConfig {
                length_penalty: f32::NAN,
                ..Default::default()
            },
        ),
    ] {
        let err = cfg.validate().unwrap_err();
        assert_eq!(field_of(&err), field, "{err}");
    }
}

/// A generation with a bad setting fails before the first forward pass (the model is never
/// asked for logits), naming the setting.
#[test]
fn generate_refuses_bad_settings_before_any_work() {
    let model = tilpass::models::DecoderLm::load(
        fixture_path("models/llama_gqa"),
        &tilpass_tests::test_device(),
    )
    .unwrap();
    let cfg = GenerateConfig {
        top_p: Some(2.0),
        do_sample: true,
        ..Default::default()
    };
    let mut calls = 0;
    let err = tilpass::models::generate(&model, &[vec![1, 2]], &cfg, &mut |_, _| {
        calls += 1;
        true
    })
    .unwrap_err();
    assert_eq!(field_of(&err), "top_p");
    assert_eq!(calls, 0);
}

#[test]
fn training_loop_settings_are_checked_before_any_step() {
    TrainConfig::default().validate().unwrap();
    let cases: Vec<(&str, TrainConfig)> = vec![
        (
            "learning_rate",
            TrainConfig {
                learning_rate: f64::NAN,
                ..Default::default()
            },
        ),
        (
            "learning_rate",
            TrainConfig {
                learning_rate: -1e-3,
                ..Default::default()
            },
        ),
        (
            "max_steps",
            TrainConfig {
                max_steps: 0,
                ..Default::default()
            },
        ),
        (
            "gradient_accumulation_steps",
            TrainConfig {
                gradient_accumulation_steps: 0,
                ..Default::default()
            },
        ),
        (
            "max_grad_norm",
            TrainConfig {
                max_grad_norm: Some(0.0),
                ..Default::default()
            },
        ),
        (
            "eval_steps",
            TrainConfig {
                eval_steps: Some(0),
                ..Default::default()
            },
        ),
        (
            "save_steps",
            TrainConfig {
                save_steps: Some(0),
                ..Default::default()
            },
        ),
        (
            "save_total_limit",
            TrainConfig {
                save_total_limit: 0,
                ..Default::default()
            },
        ),
    ];
    let batches = reference_batches();
    for (setting, cfg) in cases {
        let err = cfg.validate().unwrap_err();
        assert!(
            matches!(&err, TrainError::InvalidSetting { setting: s, .. } if s == setting),
            "{setting}: {err}"
        );
        let mut m = fresh_model(&fixture_path("train/lora_sft/initial"));
        let mut steps = 0;
        let err = train_lm(&mut m, "default", &batches, &[], &cfg, None, &mut |_| {
            steps += 1
        })
        .unwrap_err();
        assert!(err.to_string().contains(&format!("`{setting}`")), "{err}");
        assert_eq!(steps, 0, "{setting}: no step before the check");
    }
    let mut bad_beta = TrainConfig::default();
    bad_beta.adamw.beta2 = 1.0;
    assert!(
        bad_beta
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`adamw.beta2`")
    );
    let mut bad_eps = TrainConfig::default();
    bad_eps.adamw.eps = f64::NAN;
    assert!(
        bad_eps
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`adamw.eps`")
    );
}

#[test]
fn duplicate_labels_and_inverted_length_bounds_are_refused() {
    let run = AnnotateRun {
        model: Some("m".into()),
        data: Some("d".into()),
        out: Some("o".into()),
        labels: vec!["ja".into(), "nei".into(), "ja".into()],
        ..Default::default()
    };
    let err = run.validate().unwrap_err();
    assert!(
        matches!(&err, TrainError::InvalidSetting { setting, .. } if setting == "labels"),
        "{err}"
    );
    assert!(err.to_string().contains("\"ja\""), "{err}");
    let filter = LengthFilter {
        min_chars: Some(10),
        max_chars: Some(5),
    };
    let err = filter.validate().unwrap_err().to_string();
    assert!(
        err.contains("`min_chars`") && err.contains("`max_chars`"),
        "{err}"
    );
    LengthFilter {
        min_chars: Some(5),
        max_chars: Some(5),
    }
    .validate()
    .unwrap();
}
