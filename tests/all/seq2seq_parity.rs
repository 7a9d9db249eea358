//! T5 parity with HF transformers (tests/fixtures/encoders/t5_*, made by
//! tests/fixtures/generate_encoders.py): encoder states and decoder logits of a padded batch,
//! cached vs uncached decoding, greedy and beam-search generation token for token.

use tilpass::models::{
    EarlyStopping, EncoderInput, Seq2SeqConfig, T5, T5Cache, generate_seq2seq, t5_bucket,
};
use tilpass::tokenize::{Batch, Padding};
use tilpass_tests::fixture_path;

use crate::encoder_parity::{batch, expected, inputs, max_diff, rows, values};

fn load(name: &str) -> T5 {
    T5::from_dir(
        fixture_path(&format!("encoders/{name}")),
        &tilpass_tests::test_device(),
    )
    .unwrap()
}

/// Written by transformers 5 (`scale_decoder_outputs` in config.json) and by transformers 4
/// (`*_tf4`: `tie_word_embeddings` decides the rescale), each with its own expected outputs.
const T5S: [&str; 5] = [
    "t5_v1_0",
    "t5_v1_1",
    "t5_v1_1_no_lm_head",
    "t5_v1_0_tf4",
    "t5_v1_1_tf4",
];

#[test]
fn t5_encoder_and_decoder_match_transformers() {
    for name in T5S {
        let model = load(name);
        let input = batch(name);
        let mask = input.attention_mask.clone();
        let dec: Vec<Vec<u32>> = rows(&inputs(name)["decoder_input_ids"]);
        let enc = model.encode(&input).unwrap();
        let d = max_diff(
            &values(enc.hidden.clone()),
            &expected(name, "encoder_hidden"),
            |i| mask[i / 64] == 1,
        );
        assert!(d <= 1e-4, "{name}: encoder max diff {d}");
        let logits = values(model.forward(&input, &dec).unwrap());
        let d = max_diff(&logits, &expected(name, "logits"), |_| true);
        assert!(d <= 1e-4, "{name}: logits max diff {d}");
        // Step by step with the cache: the same logits.
        let t = dec[0].len();
        let mut cache = T5Cache::new(model.num_decoder_layers());
        let mut stepped = Vec::new();
        for i in 0..t {
            let ids: Vec<u32> = dec.iter().map(|r| r[i]).collect();
            let l = model.decode(&enc, &ids, 1, Some(&mut cache)).unwrap();
            stepped.push(values(l).1);
        }
        let v = 256;
        // The steps' logits in the full forward's layout `[2, t, v]`.
        let mut restacked = Vec::with_capacity(2 * t * v);
        for r in 0..2 {
            for step in &stepped {
                restacked.extend_from_slice(&step[r * v..(r + 1) * v]);
            }
        }
        let worst = tilpass_tests::max_abs_diff(&restacked, &logits.1);
        assert!(worst <= 1e-4, "{name}: cached vs full {worst}");
    }
}

#[test]
fn t5_greedy_and_beam_search_match_transformers() {
    for name in T5S {
        let model = load(name);
        let input = batch(name);
        let inp = inputs(name);
        let n = inp["max_new_tokens"].as_u64().unwrap() as usize;
        for use_cache in [true, false] {
            let cfg = Seq2SeqConfig {
                max_new_tokens: n,
                use_cache,
                ..Default::default()
            };
            let got = generate_seq2seq(&model, &input, &cfg).unwrap();
            assert_eq!(
                got,
                rows::<u32>(&inp["greedy"]),
                "{name} greedy (cache {use_cache})"
            );
        }
        for (key, lp, es) in [
            ("beam4", 1.0, EarlyStopping::Heuristic),
            ("beam4_lp0.6_early", 0.6, EarlyStopping::Finished),
            ("beam4_lp2.0", 2.0, EarlyStopping::Heuristic),
        ] {
            let cfg = Seq2SeqConfig {
                max_new_tokens: n,
                num_beams: 4,
                length_penalty: lp,
                early_stopping: es,
                ..Default::default()
            };
            let got = generate_seq2seq(&model, &input, &cfg).unwrap();
            assert_eq!(got, rows::<u32>(&inp[key]), "{name} {key}");
        }
    }
    // The fixtures exercise finished beams of different lengths.
    for name in ["t5_v1_1", "t5_v1_1_tf4"] {
        let beams: Vec<Vec<u32>> = rows(&inputs(name)["beam4"]);
        assert!(
            beams.iter().any(|b| b.last() == Some(&1)) && beams.iter().any(|b| b.len() == 16),
            "{name}"
        );
    }
}

#[test]
fn t5_relative_buckets_follow_transformers() {
    // Bidirectional, 32 buckets, max distance 128: 16 per side, 8 exact.
    assert_eq!(t5_bucket(0, true, 32, 128), 0);
    assert_eq!(t5_bucket(-3, true, 32, 128), 3);
    assert_eq!(t5_bucket(3, true, 32, 128), 19);
    assert_eq!(t5_bucket(-1000, true, 32, 128), 15);
    assert_eq!(t5_bucket(1000, true, 32, 128), 31);
    // Unidirectional: future keys share bucket 0.
    assert_eq!(t5_bucket(5, false, 32, 128), 0);
    assert_eq!(
        t5_bucket(-20, false, 32, 128),
        16 + ((20f32 / 16.0).ln() / 8f32.ln() * 16.0) as i64
    );
}

#[test]
fn t5_errors() {
    let model = load("t5_v1_0");
    let input =
        EncoderInput::from_batch(&Batch::from_ids(&[vec![5, 6]], Padding::right(0))).unwrap();
    assert!(
        model
            .forward(&input, &[vec![0, 300]])
            .unwrap_err()
            .to_string()
            .contains("300")
    );
    assert!(model.forward(&input, &[vec![0], vec![0]]).is_err());
    let cfg = Seq2SeqConfig {
        num_beams: 0,
        ..Default::default()
    };
    assert!(generate_seq2seq(&model, &input, &cfg).is_err());
    let err = T5::from_dir(
        fixture_path("encoders/bert_cls"),
        &tilpass_tests::test_device(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("t5"), "{err}");
    // A config that declares an untied head (transformers 4 spelling) without `lm_head.weight`:
    // a typed error naming the tensor, not a silently tied head.
    let dir = tempfile::tempdir().unwrap();
    let src = fixture_path("encoders/t5_v1_0_tf4");
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["tie_word_embeddings"] = false.into();
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    match T5::from_dir(dir.path(), &tilpass_tests::test_device()) {
        Err(e @ tilpass::models::ModelError::MissingLmHead { .. }) => {
            assert!(e.to_string().contains("lm_head.weight"), "{e}")
        }
        other => panic!("expected MissingLmHead, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn nort5_matches_its_reference_modelling_code() {
    use tilpass::models::{Seq2SeqLm, Seq2SeqModel};
    let name = "nort5";
    let model = Seq2SeqLm::load(
        fixture_path("encoders/nort5"),
        &tilpass_tests::test_device(),
    )
    .unwrap();
    assert!(matches!(model, Seq2SeqLm::NorT5(_)));
    let input = batch(name);
    let mask = input.attention_mask.clone();
    let inp = inputs(name);
    let dec: Vec<Vec<u32>> = rows(&inp["decoder_input_ids"]);
    let enc = model.encode(&input).unwrap();
    let d = max_diff(
        &values(enc.hidden.clone()),
        &expected(name, "encoder_hidden"),
        |i| mask[i / 64] == 1,
    );
    assert!(d <= 1e-4, "encoder max diff {d}");
    // The decoder ids hold [CLS] (1) and [SEP] (2), read as BOS and EOS.
    let logits = values(model.forward(&input, &dec).unwrap());
    let d = max_diff(&logits, &expected(name, "logits"), |_| true);
    assert!(d <= 1e-4, "logits max diff {d}");
    // Cached step-by-step decoding gives the same logits (relative positions of the new
    // query continue from the cache, in self- and cross-attention).
    let t = dec[0].len();
    let mut cache = T5Cache::new(model.num_decoder_layers());
    let mut stepped = Vec::new();
    for i in 0..t {
        let ids: Vec<u32> = dec.iter().map(|r| r[i]).collect();
        stepped.push(values(model.decode(&enc, &ids, 1, Some(&mut cache)).unwrap()).1);
    }
    // The steps' logits in the full forward's layout `[2, t, 256]`.
    let mut restacked = Vec::with_capacity(2 * t * 256);
    for r in 0..2 {
        for step in &stepped {
            restacked.extend_from_slice(&step[r * 256..(r + 1) * 256]);
        }
    }
    let worst = tilpass_tests::max_abs_diff(&restacked, &logits.1);
    assert!(worst <= 1e-4, "cached vs full {worst}");
    for use_cache in [true, false] {
        let cfg = Seq2SeqConfig {
            max_new_tokens: 16,
            use_cache,
            ..Default::default()
        };
        let got = generate_seq2seq(&model, &input, &cfg).unwrap();
        assert_eq!(
            got,
            rows::<u32>(&inp["greedy"]),
            "greedy (cache {use_cache})"
        );
    }
}
