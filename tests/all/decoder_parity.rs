//! Decoder parity with HF transformers on tiny random models (tests/fixtures/models, made by
//! tests/fixtures/generate_models.py): logits of a left-padded batch, cached vs uncached
//! decoding, greedy generation token for token, and loading errors.

use serde_json::Value;
use tilpass::core::Checkpoint;
use tilpass::models::{
    DecoderInput, DecoderLm, GenerateConfig, KvCache, ModelError, generate_greedy,
    shifted_log_probs,
};
use tilpass::tokenize::{Batch, Padding};
use tilpass_tests::fixture_path;

const FIXTURES: [&str; 4] = [
    "llama_gqa",
    "llama3_rope_bf16_sharded",
    "mistral_sliding_window",
    "gpt2",
];

fn device() -> tilpass::burn::tensor::Device {
    tilpass_tests::test_device()
}

fn inputs(name: &str) -> Value {
    let p = fixture_path(&format!("models/{name}/inputs.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn logits_vec(t: tilpass::burn::tensor::Tensor<3>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn padded_batch_logits_match_transformers() {
    let dev = device();
    for name in FIXTURES {
        let dir = fixture_path(&format!("models/{name}"));
        let model = DecoderLm::load(&dir, &dev).unwrap_or_else(|e| panic!("{name}: {e}"));
        let inp = inputs(name);
        let ids: Vec<Vec<u32>> = rows(&inp["input_ids"]);
        let mask: Vec<Vec<u8>> = rows(&inp["attention_mask"]);
        let pos: Vec<Vec<i64>> = rows(&inp["position_ids"]);
        let (b, s) = (ids.len(), ids[0].len());
        // The prompts padded by tilpass are the reference's batch.
        let prompts = tilpass_tests::unpadded_rows(&ids, &mask);
        let input = DecoderInput::from_batch(&Batch::from_ids(&prompts, Padding::left(0))).unwrap();
        assert_eq!(input.input_ids, ids.concat(), "{name}: padded ids");
        assert_eq!(input.attention_mask, mask.concat(), "{name}: mask");
        assert_eq!(input.position_ids, pos.concat(), "{name}: positions");
        assert_eq!((input.batch, input.seq), (b, s), "{name}: shape");
        let got = logits_vec(model.forward(&input, None).unwrap());
        let expected = Checkpoint::open(dir.join("expected.safetensors"))
            .unwrap()
            .read_f32("logits")
            .unwrap();
        let vocab = model.vocab_size();
        assert_eq!(expected.shape, [b, s, vocab]);
        // Padding positions are not defined outputs.
        let max_diff = tilpass_tests::max_abs_diff_where(&got, &expected.data, |i| {
            let (row, col) = (i / vocab / s, i / vocab % s);
            mask[row][col] != 0
        });
        println!("{name}: max |logit - transformers| = {max_diff:.2e}");
        assert!(max_diff <= 1e-4, "{name}: {max_diff}");
    }
}

#[test]
fn cached_decoding_matches_full_forward() {
    let dev = device();
    for name in FIXTURES {
        let model = DecoderLm::load(fixture_path(&format!("models/{name}")), &dev).unwrap();
        let tokens: Vec<u32> = vec![1, 17, 42, 99, 200, 3, 5, 7, 11, 13];
        let full = logits_vec(
            model
                .forward(
                    &DecoderInput::unpadded(std::slice::from_ref(&tokens)).unwrap(),
                    None,
                )
                .unwrap(),
        );
        let vocab = model.vocab_size();
        let mut cache = KvCache::new(model.num_layers());
        // A 4-token prefix, then one token at a time.
        let prefix = DecoderInput::unpadded(&[tokens[..4].to_vec()]).unwrap();
        let mut got = logits_vec(model.forward(&prefix, Some(&mut cache)).unwrap());
        for (i, &t) in tokens.iter().enumerate().skip(4) {
            let step = DecoderInput {
                input_ids: vec![t],
                attention_mask: vec![1; i + 1],
                position_ids: vec![i as i64],
                batch: 1,
                seq: 1,
            };
            got.extend(logits_vec(model.forward(&step, Some(&mut cache)).unwrap()));
        }
        assert_eq!(cache.len(), tokens.len());
        assert_eq!(got.len(), tokens.len() * vocab);
        let max_diff = tilpass_tests::max_abs_diff(&got, &full);
        assert!(max_diff <= 1e-4, "{name}: cached vs full {max_diff}");
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let dev = device();
    for name in FIXTURES {
        let model = DecoderLm::load(fixture_path(&format!("models/{name}")), &dev).unwrap();
        let inp = inputs(name);
        let n = inp["max_new_tokens"].as_u64().unwrap() as usize;
        let row0: Vec<u32> = vec![1, 17, 42, 99, 200, 3, 5, 7, 11, 13, 250, 128];
        let row1: Vec<u32> = vec![1, 60, 61, 62, 63, 64, 65];
        for use_cache in [true, false] {
            let cfg = GenerateConfig {
                max_new_tokens: n,
                eos_token_ids: Some(vec![2]),
                pad_token_id: Some(0),
                use_cache,
                ..Default::default()
            };
            let single = generate_greedy(&model, std::slice::from_ref(&row0), &cfg).unwrap();
            let want: Vec<Vec<u32>> = rows(&inp["greedy_single"]);
            assert_eq!(single, want, "{name} (cache: {use_cache})");
            let batch = generate_greedy(&model, &[row0.clone(), row1.clone()], &cfg).unwrap();
            let want: Vec<Vec<u32>> = rows(&inp["greedy_batch"]);
            assert_eq!(batch, want, "{name} batched (cache: {use_cache})");
            let penalised = GenerateConfig {
                repetition_penalty: Some(1.3),
                ..cfg.clone()
            };
            let got = generate_greedy(&model, &[row0.clone(), row1.clone()], &penalised).unwrap();
            let want: Vec<Vec<u32>> = rows(&inp["greedy_batch_repetition_penalty_1.3"]);
            assert_eq!(got, want, "{name} repetition penalty (cache: {use_cache})");
            assert_ne!(got, batch, "{name}: the penalty changes the output");
        }
        // transformers without its cache gives the same tokens as with it.
        let no_cache: Vec<u32> =
            serde_json::from_value(inp["greedy_single_no_cache"].clone()).unwrap();
        let want: Vec<Vec<u32>> = rows(&inp["greedy_single"]);
        assert_eq!(&no_cache[..want[0].len()], &want[0][..], "{name}");
    }
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_path(&format!("models/{name}"))).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    dir
}

fn edit_config(dir: &std::path::Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn loading_errors_name_what_is_wrong() {
    let dev = device();
    let d = copy_fixture("llama_gqa");
    edit_config(d.path(), |v| v["model_type"] = "falcon".into());
    let err = DecoderLm::load(d.path(), &dev).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedModelType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("llama, mistral, gpt2"), "{err}");

    let d = copy_fixture("llama_gqa");
    edit_config(d.path(), |v| v["intermediate_size"] = 100.into());
    let msg = DecoderLm::load(d.path(), &dev).unwrap_err().to_string();
    assert!(
        msg.contains("model.layers.0.mlp.gate_proj.weight")
            && msg.contains("[100, 64]")
            && msg.contains("[128, 64]"),
        "{msg}"
    );

    let d = copy_fixture("llama_gqa");
    edit_config(d.path(), |v| v["num_hidden_layers"] = 3.into());
    let msg = DecoderLm::load(d.path(), &dev).unwrap_err().to_string();
    assert!(
        msg.contains("model.layers.2.input_layernorm.weight") && msg.contains("not found"),
        "{msg}"
    );

    let d = copy_fixture("gpt2");
    edit_config(d.path(), |v| {
        v["scale_attn_by_inverse_layer_idx"] = true.into()
    });
    let msg = DecoderLm::load(d.path(), &dev).unwrap_err().to_string();
    assert!(msg.contains("scale_attn_by_inverse_layer_idx"), "{msg}");

    // An untied GPT-2 head would be `lm_head.weight`, which tilpass does not compute.
    let d = copy_fixture("gpt2");
    edit_config(d.path(), |v| v["tie_word_embeddings"] = false.into());
    let msg = DecoderLm::load(d.path(), &dev).unwrap_err().to_string();
    assert!(msg.contains("tie_word_embeddings"), "{msg}");
}

#[test]
fn prompts_longer_than_the_context_are_rejected() {
    let model = DecoderLm::load(fixture_path("models/gpt2"), &device()).unwrap();
    let long = vec![5u32; 120];
    let cfg = GenerateConfig {
        max_new_tokens: 20,
        ..Default::default()
    };
    match generate_greedy(&model, &[long], &cfg) {
        Err(ModelError::TooLong { len: 140, max: 128 }) => {}
        other => panic!("{other:?}"),
    }
    let too_long = DecoderInput::unpadded(&[vec![5u32; 129]]).unwrap();
    assert!(matches!(
        model.forward(&too_long, None),
        Err(ModelError::TooLong { .. })
    ));
}

#[test]
fn shifted_log_probs_match_a_log_softmax_of_the_reference_logits() {
    let dir = fixture_path("models/llama_gqa");
    let model = DecoderLm::load(&dir, &device()).unwrap();
    let tokens: Vec<u32> = vec![1, 17, 42, 99, 200, 3, 5, 7, 11, 13, 250, 128];
    let input = DecoderInput::unpadded(std::slice::from_ref(&tokens)).unwrap();
    let mut labels: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    labels[3] = -100;
    let (lp, mask) = shifted_log_probs(model.forward(&input, None).unwrap(), &labels).unwrap();
    let lp: Vec<f32> = lp.into_data().try_into_vec_as::<f32>().unwrap();
    // The reference: transformers' logits (row 0 of the fixture batch), log-softmax on the host.
    let expected = Checkpoint::open(dir.join("expected.safetensors"))
        .unwrap()
        .read_f32("logits")
        .unwrap();
    let v = 256;
    for t in 0..tokens.len() - 1 {
        let row = &expected.data[t * v..(t + 1) * v];
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        let want = if labels[t + 1] < 0 {
            0.0
        } else {
            row[labels[t + 1] as usize] - lse
        };
        assert_eq!(mask[t], labels[t + 1] >= 0);
        assert!(
            (lp[t] - want).abs() < 1e-4,
            "position {t}: {} vs {want}",
            lp[t]
        );
    }
    assert!(shifted_log_probs(model.forward(&input, None).unwrap(), &labels[..3]).is_err());
}

#[test]
fn saved_models_reload_with_the_same_tensors_and_logits() {
    use sha2::{Digest, Sha256};
    use tilpass::core::SaveDtype;
    let dev = device();
    let names = [
        "llama3_rope_bf16_sharded",
        "gpt2",
        "llama_gqa",
        "mistral_sliding_window",
    ];
    if let Some(keep) = std::env::var_os("TILPASS_KEEP_SAVED_MODELS") {
        // tests/fixtures/generate_models.py --verify-saved DIR loads these in transformers.
        for name in names {
            DecoderLm::load(fixture_path(&format!("models/{name}")), &dev)
                .unwrap()
                .save(std::path::Path::new(&keep).join(name), SaveDtype::F32)
                .unwrap();
        }
    }
    // tests/fixtures/generate_models.py --verify-saved loaded these very bytes in transformers
    // (from_pretrained reproduced the fixture logits) and recorded their sha256.
    let verified = tilpass_tests::fixture_json("models/verified_saves.json");
    let verified = verified["models"].as_object().unwrap();
    let mut listed: Vec<&str> = verified.keys().map(String::as_str).collect();
    listed.sort_unstable();
    let mut tested = names.to_vec();
    tested.sort_unstable();
    assert_eq!(
        listed, tested,
        "models/verified_saves.json lists other models"
    );
    let rerun = "re-run `TILPASS_KEEP_SAVED_MODELS=$PWD/saved-models cargo test -p tilpass-tests \
                 -- saved_models_reload` and `python tests/fixtures/generate_models.py \
                 --verify-saved saved-models` (tests/fixtures/requirements.txt)";
    for name in names {
        let src = fixture_path(&format!("models/{name}"));
        let model = DecoderLm::load(&src, &dev).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path(), SaveDtype::F32).unwrap();
        // The writer's bytes are the ones transformers was verified to load.
        let mut files: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort_unstable();
        let want = verified[name]["files"].as_object().unwrap();
        let mut want_files: Vec<&str> = want.keys().map(String::as_str).collect();
        want_files.sort_unstable();
        assert_eq!(
            files, want_files,
            "{name}: the writer changed its files: {rerun}"
        );
        for f in &files {
            let bytes = std::fs::read(out.path().join(f)).unwrap();
            let got = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(
                got,
                want[f.as_str()].as_str().unwrap(),
                "{name}/{f}: the writer changed: {rerun}"
            );
        }
        assert!(
            verified[name]["logits_max_abs_diff"].as_f64().unwrap() <= 1e-4,
            "{name}"
        );
        // The same tensor names as transformers wrote.
        let original = tilpass::core::ModelDir::open(&src)
            .unwrap()
            .checkpoint()
            .unwrap();
        let saved = Checkpoint::open(out.path()).unwrap();
        let a: Vec<&str> = original.keys().collect();
        let b: Vec<&str> = saved.keys().collect();
        assert_eq!(a, b, "{name}");
        for k in a {
            assert_eq!(
                original.read_f32(k).unwrap(),
                saved.read_f32(k).unwrap(),
                "{name}: {k}"
            );
        }
        let back = DecoderLm::load(out.path(), &dev).unwrap();
        let input = DecoderInput::unpadded(&[vec![1, 17, 42, 99, 200]]).unwrap();
        assert_eq!(
            logits_vec(model.forward(&input, None).unwrap()),
            logits_vec(back.forward(&input, None).unwrap()),
            "{name}"
        );
    }
}
