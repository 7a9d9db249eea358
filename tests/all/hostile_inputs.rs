//! Hostile inputs, one test per class: config values that would divide by zero or make no
//! sense, sizes that imply more memory than there is, and options with no ceiling. Each must
//! be a typed error naming the field or value, raised quickly and before any allocation.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tilpass::models::{AnyModel, ModelError};
use tilpass_tests::fixture_path;

/// A copy of a fixture model directory with `edit` applied to its config.json.
fn with_config(fixture: &str, edit: &dyn Fn(&mut Value)) -> tempfile::TempDir {
    let from = fixture_path(fixture);
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if p.is_file() && name != "expected.safetensors" {
            std::fs::copy(&p, dir.path().join(name)).unwrap();
        }
    }
    let cfg_path = dir.path().join("config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    dir
}

fn load_err(dir: &Path) -> ModelError {
    let start = Instant::now();
    let err = match AnyModel::load(dir, &tilpass_tests::test_device()) {
        Ok(_) => panic!("{}: loaded", dir.display()),
        Err(e) => e,
    };
    assert!(start.elapsed() < Duration::from_secs(10), "{err}");
    err
}

/// `(fixture, field, value, what the error must say)` for every family.
const CASES: &[(&str, &str, &str, &str)] = &[
    // Zero heads divided by zero in Llama/Mistral, GPT-2 and BERT before validation.
    (
        "models/llama_gqa",
        "num_attention_heads",
        "0",
        "`num_attention_heads` must be at least 1",
    ),
    (
        "models/mistral_sliding_window",
        "num_key_value_heads",
        "0",
        "`num_key_value_heads` must be at least 1",
    ),
    (
        "models/llama_gqa",
        "num_key_value_heads",
        "3",
        "`num_attention_heads` 4 is not a multiple of num_key_value_heads (3)",
    ),
    (
        "models/llama_gqa",
        "head_dim",
        "7",
        "`head_dim` must be even",
    ),
    (
        "models/llama_gqa",
        "head_dim",
        "0",
        "`head_dim` must be at least 1",
    ),
    (
        "models/llama_gqa",
        "num_hidden_layers",
        "0",
        "`num_hidden_layers` must be at least 1",
    ),
    (
        "models/llama_gqa",
        "vocab_size",
        "0",
        "`vocab_size` must be at least 1",
    ),
    (
        "models/llama_gqa",
        "rms_norm_eps",
        "0",
        "`rms_norm_eps` must be a finite number above 0",
    ),
    (
        "models/llama_gqa",
        "rope_theta",
        "-1",
        "`rope_theta` must be a finite number above 0",
    ),
    (
        "models/llama_gqa",
        "rope_theta",
        "\"NaN\"",
        "`rope_theta` = \"NaN\"",
    ),
    (
        "models/llama_gqa",
        "num_attention_heads",
        "-8",
        "`num_attention_heads` = -8",
    ),
    (
        "models/llama3_rope_bf16_sharded",
        "rope_scaling",
        "{\"rope_type\":\"llama3\",\"factor\":0}",
        "`rope_scaling.factor` must be a finite number above 0",
    ),
    (
        "models/mistral_sliding_window",
        "sliding_window",
        "0",
        "`sliding_window` must be at least 1",
    ),
    ("models/gpt2", "n_head", "0", "`n_head` must be at least 1"),
    (
        "models/gpt2",
        "n_embd",
        "30",
        "`n_embd` 30 is not a multiple of n_head",
    ),
    (
        "models/gpt2",
        "layer_norm_epsilon",
        "-1e-5",
        "`layer_norm_epsilon` must be a finite number above 0",
    ),
    (
        "encoders/bert_cls",
        "num_attention_heads",
        "0",
        "`num_attention_heads` must be at least 1",
    ),
    (
        "encoders/bert_cls",
        "type_vocab_size",
        "0",
        "`type_vocab_size` must be at least 1",
    ),
    (
        "encoders/ltg_bert_mlm",
        "num_attention_heads",
        "0",
        "`num_attention_heads` must be at least 1",
    ),
    (
        "encoders/ltg_bert_mlm",
        "position_bucket_size",
        "0",
        "`position_bucket_size` must be at least 4",
    ),
    (
        "encoders/ltg_bert_mlm",
        "max_position_embeddings",
        "2",
        "`max_position_embeddings` must exceed",
    ),
    (
        "encoders/t5_v1_1",
        "num_heads",
        "0",
        "`num_heads` must be at least 1",
    ),
    (
        "encoders/t5_v1_1",
        "relative_attention_num_buckets",
        "0",
        "`relative_attention_num_buckets` must be at least 4",
    ),
    (
        "encoders/t5_v1_1",
        "relative_attention_max_distance",
        "1",
        "`relative_attention_max_distance` must exceed",
    ),
    (
        "encoders/t5_v1_1",
        "layer_norm_epsilon",
        "0",
        "`layer_norm_epsilon` must be a finite number above 0",
    ),
    (
        "encoders/nort5",
        "num_attention_heads",
        "0",
        "`num_attention_heads` must be at least 1",
    ),
    (
        "encoders/nort5",
        "position_bucket_size",
        "2",
        "`position_bucket_size` must be at least 4",
    ),
    (
        "encoders/nort5",
        "layer_norm_eps",
        "0",
        "`layer_norm_eps` must be a finite number above 0",
    ),
    // Found by fuzz_config_json_every_family: a bos id of 2^31 became a decoder input and
    // burn panicked converting it to i32.
    (
        "encoders/nort5",
        "bos_token_id",
        "2147483648",
        "`bos_token_id` 2147483648 is outside the vocabulary",
    ),
];

#[test]
fn config_values_that_make_no_sense_are_errors_naming_the_field_in_every_family() {
    for (fixture, field, value, want) in CASES {
        let v: Value = serde_json::from_str(value).unwrap();
        let dir = with_config(fixture, &|c| c[*field] = v.clone());
        let msg = load_err(dir.path()).to_string();
        assert!(
            msg.contains(want) && msg.contains("config.json"),
            "{fixture} {field}={value}: {msg}"
        );
    }
}

#[test]
fn config_sizes_implying_more_memory_than_there_is_are_too_large() {
    for (fixture, edits) in [
        (
            "models/llama_gqa",
            json!({"vocab_size": 1_000_000_000_000u64}),
        ),
        (
            "models/llama_gqa",
            json!({"hidden_size": 1_000_000_000, "head_dim": 16}),
        ),
        (
            "models/llama_gqa",
            json!({"num_hidden_layers": 1_000_000_000_000u64}),
        ),
        ("models/gpt2", json!({"n_positions": u64::MAX})),
        (
            "encoders/bert_cls",
            json!({"intermediate_size": 1u64 << 40}),
        ),
        (
            "encoders/ltg_bert_mlm",
            json!({"num_hidden_layers": 1u64 << 50}),
        ),
        ("encoders/t5_v1_1", json!({"d_ff": 1u64 << 40})),
        ("encoders/nort5", json!({"vocab_size": 1u64 << 45})),
    ] {
        let dir = with_config(fixture, &|c| {
            for (k, v) in edits.as_object().unwrap() {
                c[k] = v.clone();
            }
        });
        let err = load_err(dir.path());
        let msg = err.to_string();
        assert!(
            matches!(err, ModelError::Core(tilpass::core::Error::TooLarge { .. })),
            "{fixture} {edits}: {msg}"
        );
        assert!(
            msg.contains("config.json") && msg.contains("parameters"),
            "{msg}"
        );
    }
}

#[test]
fn beams_times_new_tokens_is_checked_against_memory_before_decoding() {
    use tilpass::models::{EncoderInput, Seq2SeqConfig, Seq2SeqLm, generate_seq2seq};
    let device = tilpass_tests::test_device();
    let model = Seq2SeqLm::load(fixture_path("encoders/t5_v1_1"), &device).unwrap();
    let input = EncoderInput::from_batch(&tilpass::tokenize::Batch::from_ids(
        &[vec![3u32, 4, 5]],
        tilpass::tokenize::Padding::right(0),
    ))
    .unwrap();
    let cfg = Seq2SeqConfig {
        num_beams: 1_000_000_000,
        max_new_tokens: 1_000_000,
        ..Default::default()
    };
    let start = Instant::now();
    let err = generate_seq2seq(&model, &input, &cfg).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    let msg = err.to_string();
    assert!(
        msg.contains("num_beams 1000000000") && msg.contains("max_new_tokens 1000000"),
        "{msg}"
    );
}

#[test]
fn tokenizer_training_vocab_size_has_a_ceiling() {
    use tilpass::tokenize::{TrainConfig, train_tokenizer};
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.txt");
    std::fs::write(&corpus, "hei på deg\nhallo verden\n").unwrap();
    for (vocab, want) in [
        (1usize << 33, "does not fit token ids"),
        (
            u32::MAX as usize,
            "tokenizer training: vocab_size 4294967295",
        ),
    ] {
        let cfg = TrainConfig {
            vocab_size: vocab,
            show_progress: false,
            ..Default::default()
        };
        let start = Instant::now();
        let msg = train_tokenizer(std::slice::from_ref(&corpus), &cfg)
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(msg.contains(want), "{vocab}: {msg}");
    }
}

/// Found by `fuzz_adapter`: an adapter_config.json with `r` = 10^12 made LoRA allocate
/// 256 TB (an abort) before reading any weight.
#[test]
fn regression_fuzz_adapter_huge_rank_is_too_large_not_an_abort() {
    use tilpass::models::DecoderLm;
    use tilpass::peft::PeftModel;
    let src = fixture_path("peft/llama_lora");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("adapter_model.safetensors"),
        dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    cfg["r"] = json!(1_000_000_000_000u64);
    std::fs::write(dir.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    let model = DecoderLm::load(
        fixture_path("models/llama_gqa"),
        &tilpass_tests::test_device(),
    )
    .unwrap();
    let err = PeftModel::new(model)
        .load_adapter(dir.path(), "default")
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("LoRA rank r = 1000000000000"), "{msg}");
}

#[test]
fn a_config_json_with_a_utf8_bom_loads_as_python_reads_it() {
    let dir = with_config("models/llama_gqa", &|_| {});
    let p = dir.path().join("config.json");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(&p).unwrap());
    std::fs::write(&p, bytes).unwrap();
    AnyModel::load(dir.path(), &tilpass_tests::test_device()).unwrap();
}

#[test]
fn max_new_tokens_of_usize_max_is_too_long_not_an_overflow() {
    use tilpass::models::{DecoderLm, GenerateConfig, ModelError, generate};
    let model = DecoderLm::load(
        fixture_path("models/llama_gqa"),
        &tilpass_tests::test_device(),
    )
    .unwrap();
    let cfg = GenerateConfig {
        max_new_tokens: usize::MAX,
        ..Default::default()
    };
    let err = generate(&model, &[vec![1, 2, 3]], &cfg, &mut |_, _| true).unwrap_err();
    assert!(matches!(err, ModelError::TooLong { .. }), "{err}");
}
