//! Parameter tables against the committed checkpoints: each family's table names exactly the
//! tensors of the transformers-made fixture (names and shapes), and the model's fields follow
//! the table (saving through it reproduces the table's names and shapes).

use std::collections::BTreeSet;
use std::path::Path;

use tilpass::core::{Checkpoint, ModelDir};
use tilpass::models::llama::llama_params;
use tilpass::models::params::{Loader, ParamSpec, ParamTable, hf_tensors};
use tilpass::models::{DecoderLm, EncoderModel, LlamaConfig, Seq2SeqLm, create_llama};
use tilpass_tests::fixture_path;

/// HF tensor names and shapes of `spec`, under whichever of its names `ck` holds.
fn resolved(spec: &ParamSpec, ck: &Checkpoint) -> Vec<(String, Vec<usize>)> {
    std::iter::once(&spec.name)
        .chain(&spec.aliases)
        .map(|n| spec.tensors_at(n))
        .find(|t| ck.contains(&t[0].0))
        .unwrap_or_else(|| spec.tensors())
}

fn check<M: ParamTable>(fixture: &str, model: &M) {
    check_dir(&fixture_path(fixture), fixture, model)
}

/// The checks of [`check`] on the model directory `dir` (`fixture` names it in messages).
fn check_dir<M: ParamTable>(dir: &Path, fixture: &str, model: &M) {
    let ck = ModelDir::open(dir).unwrap().checkpoint().unwrap();
    let table = model.param_table();
    let tensors: Vec<_> = table.iter().flat_map(|s| resolved(s, &ck)).collect();
    let names: BTreeSet<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names.len(),
        tensors.len(),
        "{fixture}: a name twice in the table"
    );
    // The LTG reference saves its relative-bucket buffers (`position_indices`); tilpass
    // recomputes them, so they are no parameters.
    let stored: BTreeSet<String> = ck
        .keys()
        .filter(|k| !k.ends_with(".attention.position_indices"))
        .map(str::to_string)
        .collect();
    assert_eq!(names, stored, "{fixture}: table names vs checkpoint names");
    for (name, shape) in &tensors {
        assert_eq!(&ck.info(name).unwrap().shape, shape, "{fixture}: {name}");
    }
    // The fields follow the table: saving walks both and checks every shape.
    let saved = hf_tensors(model).unwrap();
    let table_names: Vec<String> = table
        .iter()
        .flat_map(|s| s.tensors())
        .map(|(n, _)| n)
        .collect();
    let saved_names: Vec<String> = saved.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        saved_names, table_names,
        "{fixture}: fields out of step with the table"
    );
}

#[test]
fn decoder_tables_name_every_checkpoint_tensor() {
    let device = tilpass_tests::test_device();
    for name in [
        "llama_gqa",
        "llama3_rope_bf16_sharded",
        "mistral_sliding_window",
        "gpt2",
    ] {
        let fixture = format!("models/{name}");
        match DecoderLm::load(fixture_path(&fixture), &device).unwrap() {
            DecoderLm::Llama(m) => check(&fixture, m.as_ref()),
            DecoderLm::Gpt2(m) => check(&fixture, m.as_ref()),
        }
    }
}

#[test]
fn encoder_tables_name_every_checkpoint_tensor() {
    let device = tilpass_tests::test_device();
    for name in [
        "bert_cls",
        "bert_mlm",
        "bert_multi",
        "bert_tok",
        "ltg_bert_cls",
        "ltg_bert_mlm",
    ] {
        let fixture = format!("encoders/{name}");
        match EncoderModel::load(fixture_path(&fixture), &device).unwrap() {
            EncoderModel::Bert(m) => check(&fixture, m.as_ref()),
            EncoderModel::LtgBert(m) => check(&fixture, m.as_ref()),
        }
    }
}

#[test]
fn seq2seq_tables_name_every_checkpoint_tensor() {
    let device = tilpass_tests::test_device();
    for name in ["t5_v1_0", "t5_v1_0_tf4", "t5_v1_1", "t5_v1_1_tf4", "nort5"] {
        let fixture = format!("encoders/{name}");
        match Seq2SeqLm::load(fixture_path(&fixture), &device).unwrap() {
            Seq2SeqLm::T5(m) => check(&fixture, m.as_ref()),
            Seq2SeqLm::NorT5(m) => check(&fixture, m.as_ref()),
        }
    }
}

/// `create_llama` writes its config's table: loading the result finds every tensor named and
/// shaped as the table says (tied and untied heads, with and without biases, GQA).
#[test]
fn created_llamas_hold_their_table() {
    let device = tilpass_tests::test_device();
    let tmp = tempfile::tempdir().unwrap();
    for (i, extra) in [
        serde_json::json!({}),
        serde_json::json!({"tie_word_embeddings": true}),
        serde_json::json!({"attention_bias": true, "mlp_bias": true, "num_key_value_heads": 1}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut v = serde_json::json!({
            "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let cfg: LlamaConfig = serde_json::from_value(v).unwrap();
        let dir = tmp.path().join(i.to_string());
        create_llama(&dir, &cfg, 0.02, 3).unwrap();
        let DecoderLm::Llama(m) = DecoderLm::load(&dir, &device).unwrap() else {
            panic!("a Llama")
        };
        check_dir(&dir, &format!("created {extra}"), m.as_ref());
    }
}

/// A model that reads its fields in another order than its table's is refused, naming the
/// entry, and so is one that leaves entries unread.
#[test]
fn the_loader_refuses_fields_out_of_table_order() {
    let device = tilpass_tests::test_device();
    let md = ModelDir::open(fixture_path("models/llama_gqa")).unwrap();
    let cfg: LlamaConfig = md.config().unwrap();
    let ck = md.checkpoint().unwrap();
    let mut ld = Loader::new(&ck, llama_params(&cfg), &device);
    ld.embedding().unwrap();
    // The table's next entry is the first layer's input norm, not a linear layer.
    let err = ld.linear().unwrap_err().to_string();
    assert!(
        err.contains("out of step") && err.contains("model.layers.0.input_layernorm"),
        "{err}"
    );
    let mut ld = Loader::new(&ck, llama_params(&cfg), &device);
    ld.embedding().unwrap();
    let err = ld.finish().unwrap_err().to_string();
    assert!(err.contains("model.layers.0.input_layernorm"), "{err}");
}
