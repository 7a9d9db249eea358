//! config.json as transformers 4.57 and 5.23 write it (and minimal hand-written ones that leave
//! the class defaults to transformers), read by tilpass and compared with what the reference
//! computed from the same file (tests/fixtures/configs, made by
//! tests/fixtures/generate_configs.py in each environment): RoPE frequencies, KV heads, sliding
//! window, context length, BOS/EOS, tied heads, T5's decoder-output rescale.

use serde_json::Value;
use tilpass::core::ModelDir;
use tilpass::models::llama::llama_rope;
use tilpass::models::{Activation, BertConfig, Gpt2Config, LlamaConfig, T5Config, TokenIds};
use tilpass_tests::{fixture_json, fixture_path};

fn ids(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Null => None,
        Value::Array(a) => Some(a.iter().map(|x| x.as_u64().unwrap() as u32).collect()),
        x => Some(vec![x.as_u64().unwrap() as u32]),
    }
}

fn token_ids(t: &Option<TokenIds>) -> Option<Vec<u32>> {
    t.as_ref().map(TokenIds::to_vec)
}

fn check_case(version: &str, name: &str, want: &Value) {
    let dir = fixture_path(&format!("configs/{version}/{name}"));
    let md = ModelDir::open(&dir).unwrap_or_else(|e| panic!("{version}/{name}: {e}"));
    let at = format!("{version}/{name}");
    match md.model_type().unwrap() {
        "llama" | "mistral" => {
            let cfg: LlamaConfig = md.config().unwrap_or_else(|e| panic!("{at}: {e}"));
            let rope = llama_rope(&cfg, "config.json").unwrap_or_else(|e| panic!("{at}: {e}"));
            let inv: Vec<f32> = serde_json::from_value(want["inv_freq"].clone()).unwrap();
            assert_eq!(rope.inv_freq.len(), inv.len(), "{at}: inv_freq length");
            for (i, (a, b)) in rope.inv_freq.iter().zip(&inv).enumerate() {
                // NaN fails the comparison.
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "{at}: inv_freq[{i}] {a} vs {b}"
                );
            }
            assert_eq!(
                f64::from(rope.attention_scaling),
                want["attention_scaling"].as_f64().unwrap(),
                "{at}"
            );
            assert_eq!(
                cfg.kv_heads() as u64,
                want["num_key_value_heads"].as_u64().unwrap(),
                "{at}: KV heads"
            );
            assert_eq!(
                cfg.head_dim() as u64,
                want["head_dim"].as_u64().unwrap(),
                "{at}: head_dim"
            );
            assert_eq!(
                cfg.sliding_window().map(|w| w as u64),
                want["sliding_window"].as_u64(),
                "{at}: sliding window"
            );
            assert_eq!(
                cfg.max_position_embeddings as u64,
                want["max_position_embeddings"].as_u64().unwrap(),
                "{at}: context"
            );
            assert_eq!(cfg.bos_token_id, ids(&want["bos_token_id"]).map(|v| v[0]));
            assert_eq!(
                token_ids(&cfg.eos_token_id),
                ids(&want["eos_token_id"]),
                "{at}"
            );
            assert_eq!(
                cfg.tie_word_embeddings,
                want["lm_head_is_embedding"].as_bool().unwrap(),
                "{at}: tied head"
            );
            // What tilpass writes back reads back the same.
            let again: LlamaConfig =
                serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
            assert_eq!(again, cfg, "{at}: round trip");
        }
        "gpt2" => {
            let cfg: Gpt2Config = md.config().unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                cfg.n_inner.unwrap_or(4 * cfg.n_embd) as u64,
                want["mlp_width"].as_u64().unwrap(),
                "{at}: MLP width"
            );
            assert_eq!(cfg.bos_token_id, ids(&want["bos_token_id"]).map(|v| v[0]));
            assert_eq!(
                token_ids(&cfg.eos_token_id),
                ids(&want["eos_token_id"]),
                "{at}"
            );
            assert_eq!(
                cfg.tie_word_embeddings,
                want["lm_head_is_embedding"].as_bool().unwrap(),
                "{at}: tied head"
            );
        }
        "t5" | "mt5" => {
            let cfg: T5Config = md.config().unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                cfg.rescales_decoder_output(),
                want["rescaled"].as_bool().unwrap(),
                "{at}: d_model^-0.5 rescale of the decoder output"
            );
            // Where the reference ties the head to `shared`, tilpass does not ask for an
            // `lm_head.weight`; where it does not (transformers 4), tilpass's config agrees.
            if want["lm_head_is_shared"].as_bool().unwrap() {
                assert!(!cfg.declares_untied_head(), "{at}: LM head is `shared`");
            } else {
                assert!(!cfg.tie_word_embeddings(), "{at}: LM head is not `shared`");
            }
            let (gated, act) = cfg.feed_forward().unwrap();
            assert_eq!(gated, want["gated"].as_bool().unwrap(), "{at}: gated");
            assert_eq!(
                Some(act),
                Activation::parse(want["dense_act_fn"].as_str().unwrap()),
                "{at}: activation"
            );
            assert_eq!(
                cfg.num_decoder_layers.unwrap_or(cfg.num_layers) as u64,
                want["num_decoder_layers"].as_u64().unwrap(),
                "{at}"
            );
        }
        "bert" => {
            let cfg: BertConfig = md.config().unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(
                cfg.position_embedding_type,
                want["position_embedding_type"].as_str().unwrap(),
                "{at}"
            );
        }
        other => panic!("{at}: no check for model_type {other}"),
    }
}

#[test]
fn configs_of_transformers_4_and_5_read_as_the_reference_reads_them() {
    let mut seen = Vec::new();
    for version in ["transformers4", "transformers5"] {
        let expected = fixture_json(&format!("configs/{version}/expected.json"));
        let cases = expected["cases"].as_object().unwrap();
        assert!(cases.len() >= 10, "{version}: {} cases", cases.len());
        for (name, want) in cases {
            check_case(version, name, want);
            seen.push(format!("{version}/{name}"));
        }
    }
    // Both spellings are covered for the fields that differ.
    for case in [
        "transformers4/llama_llama3",
        "transformers5/llama_llama3",
        "transformers4/t5_untied",
        "transformers5/t5_untied",
        "transformers4/mt5_minimal",
        "transformers5/mt5",
        "transformers5/llama_llama3_minimal",
        "transformers4/mistral_minimal",
    ] {
        assert!(seen.iter().any(|s| s == case), "missing case {case}");
    }
}

#[test]
fn rope_type_spellings_and_precedence() {
    // transformers writes both `type` and `rope_type` when given `type`; either alone works.
    let base = serde_json::json!({
        "model_type": "llama", "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2,
    });
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        serde_json::from_value::<LlamaConfig>(c).unwrap()
    };
    let both = with(
        "rope_scaling",
        serde_json::json!({"type": "linear", "rope_type": "linear", "factor": 2.0}),
    );
    assert_eq!(both.rope().rope_type, "linear");
    let only_type = with(
        "rope_parameters",
        serde_json::json!({"type": "linear", "factor": 2.0, "rope_theta": 5.0}),
    );
    assert_eq!(only_type.rope().rope_type, "linear");
    assert_eq!(only_type.rope().rope_theta, Some(5.0));
    let direct: tilpass::models::RopeParameters =
        serde_json::from_value(serde_json::json!({"type": "llama3", "rope_type": "linear"}))
            .unwrap();
    assert_eq!(direct.rope_type, "linear");
    // rope_scaling (transformers 4) wins over rope_parameters, as transformers 5 converts it.
    let mut c = base.clone();
    c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 4.0});
    c["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 7.0});
    c["rope_theta"] = 3.0.into();
    let cfg: LlamaConfig = serde_json::from_value(c).unwrap();
    assert_eq!(cfg.rope().factor, 4.0);
    assert_eq!(cfg.rope().rope_theta, Some(3.0));
    // An explicit null sliding window stays null for Mistral; Llama never uses one.
    let mut m = base.clone();
    m["model_type"] = "mistral".into();
    m["sliding_window"] = Value::Null;
    let cfg: LlamaConfig = serde_json::from_value(m).unwrap();
    assert_eq!(cfg.sliding_window(), None);
    let llama = with("sliding_window", 4.into());
    assert_eq!(llama.sliding_window(), None);
}
