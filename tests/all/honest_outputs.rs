//! Weights must fit the model exactly: an adapter with tensors for modules the model does not
//! have, and a config with fewer layers than its checkpoint, are errors listing a few of the
//! tensors that would be silently unused.

use std::path::Path;

use tilpass::core::{Checkpoint, HostTensor, SaveDtype, save_safetensors};
use tilpass::models::{DecoderInput, DecoderLm};
use tilpass::peft::PeftModel;
use tilpass::tokenize::{Batch, Padding};
use tilpass_tests::{fixture_path, max_abs_diff, test_device};

fn copy_dir(src: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Rewrites `file` with its tensors plus `extra` (each a copy of `like`'s values).
fn add_tensors(file: &Path, like: &str, extra: &[&str]) {
    let ck = Checkpoint::open(file).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = ck
        .keys()
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    let t = ck.read_f32(like).unwrap();
    for k in extra {
        tensors.push((k.to_string(), t.clone()));
    }
    drop(ck);
    save_safetensors(
        file,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .unwrap();
}

#[test]
fn an_adapter_with_tensors_the_model_cannot_use_is_an_error_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = dir.path().join("adapter");
    copy_dir(&fixture_path("train/lora_sft/initial"), &adapter);
    let weights = adapter.join("adapter_model.safetensors");
    let ck = Checkpoint::open(&weights).unwrap();
    let like = ck
        .keys()
        .find(|k| k.ends_with("lora_A.weight"))
        .unwrap()
        .to_string();
    drop(ck);
    let model = || DecoderLm::load(fixture_path("models/llama_gqa"), &test_device()).unwrap();
    // The unchanged adapter loads.
    PeftModel::new(model())
        .load_adapter(&adapter, "default")
        .unwrap();
    let good = std::fs::read(&weights).unwrap();
    let extra = "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight";
    add_tensors(&weights, &like, &[extra]);
    let mut peft = PeftModel::new(model());
    let err = peft
        .load_adapter(&adapter, "default")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(extra) && err.contains("adapter_model.safetensors"),
        "{err}"
    );
    // The failed load left the model as it was: the same name loads the good adapter, and
    // the logits are those of a model that never saw the bad file.
    std::fs::write(&weights, &good).unwrap();
    peft.load_adapter(&adapter, "default").unwrap();
    let mut fresh = PeftModel::new(model());
    fresh.load_adapter(&adapter, "default").unwrap();
    let ids: Vec<u32> = vec![1, 5, 9, 2];
    let input = DecoderInput::from_batch(&Batch::from_ids(&[&ids[..]], Padding::left(0))).unwrap();
    let vals = |t: tilpass::burn::tensor::Tensor<3>| t.into_data().try_to_vec::<f32>().unwrap();
    let got = vals(peft.forward(&input, None).unwrap());
    let want = vals(fresh.forward(&input, None).unwrap());
    assert_eq!(max_abs_diff(&got, &want), 0.0);
}

#[test]
fn a_config_with_fewer_layers_than_its_checkpoint_is_an_error_naming_tensors() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_path("models/llama_gqa"), dir.path());
    DecoderLm::load(dir.path(), &test_device()).unwrap();
    let p = dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 1.into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    let err = DecoderLm::load(dir.path(), &test_device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`num_hidden_layers` is 1") && err.contains("model.layers.1."),
        "{err}"
    );
}

/// A truncated text's word and byte perplexities divide the log-likelihood of the scored
/// tokens by the words and bytes of the scored part only: with a word-level tokenizer (one
/// token per word, no special tokens) and a context of 8, 8 words are scored by 7 predictions.
#[test]
fn perplexity_of_a_truncated_text_counts_only_its_scored_part() {
    let model_dir = crate::runs::with_tokenizer("models/llama_gqa");
    let p = model_dir.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    cfg["max_position_embeddings"] = 8.into();
    std::fs::write(&p, cfg.to_string()).unwrap();
    let model = DecoderLm::load(model_dir.path(), &test_device()).unwrap();
    let tok = tilpass::tokenize::Tokenizer::from_dir(model_dir.path()).unwrap();
    let text: String = (1..=20)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let r = tilpass::train::runs::text_perplexity(&model, &tok, &[text]).unwrap();
    assert_eq!((r.texts, r.truncated, r.scores.tokens), (1, 1, 7));
    let ll = r.scores.perplexity.ln() * 7.0;
    let scored = "t1 t2 t3 t4 t5 t6 t7 t8";
    assert!(
        (r.scores.word_perplexity.ln() * 8.0 - ll).abs() < 1e-9,
        "{r:?}"
    );
    assert!(
        (r.scores.byte_perplexity.ln() * scored.len() as f64 - ll).abs() < 1e-9,
        "{r:?}"
    );
}

/// Weights that make NaN give an error naming the row, not a label chosen from NaN scores.
#[test]
fn non_finite_label_scores_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_path("models/llama_gqa"), dir.path());
    let file = dir.path().join("model.safetensors");
    let ck = Checkpoint::open(&file).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = ck
        .keys()
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    drop(ck);
    for (k, t) in &mut tensors {
        if k.contains("norm") {
            t.data.iter_mut().for_each(|x| *x = f32::NAN);
        }
    }
    save_safetensors(
        &file,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .unwrap();
    let model = DecoderLm::load(dir.path(), &test_device()).unwrap();
    let err = tilpass::train::score_labels(&model, &[vec![1, 5, 7]], &[vec![9], vec![11]], 4)
        .unwrap_err();
    assert!(
        matches!(&err, tilpass::train::TrainError::NonFiniteOutput { what, .. }
            if what.contains("row 0")),
        "{err}"
    );
    // Generating from that model is an error too, not tokens picked from NaN logits.
    let gen_err = tilpass::models::generate(
        &model,
        &[vec![1, 5, 7]],
        &tilpass::models::GenerateConfig {
            max_new_tokens: 4,
            ..Default::default()
        },
        &mut |_, _| true,
    )
    .unwrap_err();
    assert!(
        gen_err.to_string().contains("non-finite logits"),
        "{gen_err}"
    );
}

/// An encoder-decoder whose weights make NaN: generation is an error, not tokens.
#[test]
fn seq2seq_generation_from_non_finite_logits_is_an_error() {
    use tilpass::models::{EncoderInput, Seq2SeqConfig, T5, generate_seq2seq};
    use tilpass::tokenize::{Batch, Padding};
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_path("encoders/t5_v1_1"), dir.path());
    let file = dir.path().join("model.safetensors");
    let ck = Checkpoint::open(&file).unwrap();
    let mut tensors: Vec<(String, HostTensor)> = ck
        .keys()
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    drop(ck);
    for (k, t) in &mut tensors {
        if k.contains("final_layer_norm") {
            t.data.iter_mut().for_each(|x| *x = f32::NAN);
        }
    }
    save_safetensors(
        &file,
        tensors.iter().map(|(k, t)| (k.as_str(), t)),
        SaveDtype::F32,
        None,
    )
    .unwrap();
    let model = T5::from_dir(dir.path(), &test_device()).unwrap();
    let input =
        EncoderInput::from_batch(&Batch::from_ids(&[vec![5, 6]], Padding::right(0))).unwrap();
    let cfg = Seq2SeqConfig {
        max_new_tokens: 3,
        ..Default::default()
    };
    let err = generate_seq2seq(&model, &input, &cfg).unwrap_err();
    assert!(err.to_string().contains("non-finite logits"), "{err}");
}
