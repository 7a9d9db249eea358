//! Encoder parity with HF transformers on tiny random models (tests/fixtures/encoders, made by
//! tests/fixtures/generate_encoders.py): BERT heads, pooling and errors.

use serde_json::Value;
use tilpass::burn::tensor::Tensor;
use tilpass::core::Checkpoint;
use tilpass::models::{
    Bert, BertConfig, BertHeadKind, EncoderInput, ModelError, PoolingMode, pool,
};
use tilpass::tokenize::{Batch, BatchRow, Padding};
use tilpass_tests::fixture_path;

pub fn inputs(name: &str) -> Value {
    let p = fixture_path(&format!("encoders/{name}/inputs.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

pub fn rows<T: serde::de::DeserializeOwned>(v: &Value) -> Vec<Vec<T>> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The fixture batch (right-padded, with token types).
pub fn batch(name: &str) -> EncoderInput {
    let inp = inputs(name);
    let ids: Vec<Vec<u32>> = rows(&inp["input_ids"]);
    let mask: Vec<Vec<u8>> = rows(&inp["attention_mask"]);
    let types: Vec<Vec<u32>> = if inp["token_type_ids"].is_null() {
        ids.iter().map(|r| vec![0; r.len()]).collect()
    } else {
        rows(&inp["token_type_ids"])
    };
    // The rows padded by tilpass are the reference's batch.
    let (real, real_types) = (
        tilpass_tests::unpadded_rows(&ids, &mask),
        tilpass_tests::unpadded_rows(&types, &mask),
    );
    let padded = Batch::pad(
        real.iter()
            .zip(&real_types)
            .map(|(r, t)| BatchRow::new(r).with_token_type_ids(t)),
        Padding::right(0),
    )
    .unwrap();
    let input = EncoderInput::from_batch(&padded).unwrap();
    assert_eq!(input.input_ids, ids.concat(), "{name}: padded ids");
    assert_eq!(input.attention_mask, mask.concat(), "{name}: mask");
    assert_eq!(input.token_type_ids, types.concat(), "{name}: token types");
    assert_eq!((input.batch, input.seq), (ids.len(), ids[0].len()));
    input
}

pub fn expected(name: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let ck = Checkpoint::open(fixture_path(&format!(
        "encoders/{name}/expected.safetensors"
    )))
    .unwrap();
    let t = ck.read_f32(key).unwrap();
    (t.shape.clone(), t.data.clone())
}

pub fn values<const D: usize>(t: Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().try_into_vec_as::<f32>().unwrap())
}

/// Max-abs difference over positions where `keep(index)` holds (the shared
/// [`tilpass_tests::max_abs_diff_where`]: infinite on NaN, panics on unequal lengths); shapes
/// must agree too.
pub fn max_diff(
    got: &(Vec<usize>, Vec<f32>),
    want: &(Vec<usize>, Vec<f32>),
    keep: impl Fn(usize) -> bool,
) -> f64 {
    assert_eq!(got.0, want.0, "shapes");
    tilpass_tests::max_abs_diff_where(&got.1, &want.1, keep)
}

fn load(name: &str) -> Bert {
    let dir = fixture_path(&format!("encoders/{name}"));
    let md = tilpass::core::ModelDir::open(&dir).unwrap();
    let cfg: BertConfig = md.config().unwrap();
    Bert::load(
        cfg,
        None,
        &md.checkpoint().unwrap(),
        "config.json",
        &tilpass_tests::test_device(),
    )
    .unwrap()
}

/// Keeps entries of `[b, s, ...]` tensors at real (non-padding) positions.
fn real_tokens(mask: &[u8], per_token: usize) -> impl Fn(usize) -> bool + '_ {
    move |i| mask[i / per_token] == 1
}

#[test]
fn bert_heads_match_transformers_on_a_padded_batch() {
    for (name, head) in [
        ("bert_cls", BertHeadKind::SequenceClassification),
        ("bert_multi", BertHeadKind::SequenceClassification),
        ("bert_mlm", BertHeadKind::MaskedLm),
        ("bert_tok", BertHeadKind::TokenClassification),
    ] {
        let model = load(name);
        assert_eq!(model.head(), head, "{name}: head from `architectures`");
        let input = batch(name);
        let mask = input.attention_mask.clone();
        let hidden = values(model.forward_hidden(&input).unwrap());
        let want = expected(name, "last_hidden_state");
        let d = max_diff(&hidden, &want, real_tokens(&mask, 64));
        assert!(d <= 1e-4, "{name}: hidden max diff {d}");
        // The packed path (real tokens only; fused host kernels on Flex) for poolers.
        let real = values(model.forward_hidden_real(&input).unwrap());
        let d = max_diff(&real, &want, real_tokens(&mask, 64));
        assert!(d <= 1e-4, "{name}: hidden (real tokens) max diff {d}");
        let (got, want) = match head {
            BertHeadKind::SequenceClassification => (
                values(model.classify(&input).unwrap()),
                expected(name, "logits"),
            ),
            BertHeadKind::MaskedLm => (
                values(model.mlm_logits(&input).unwrap()),
                expected(name, "logits"),
            ),
            _ => (
                values(model.token_logits(&input).unwrap()),
                expected(name, "logits"),
            ),
        };
        let per_token = *want.0.last().unwrap();
        let d = if head == BertHeadKind::SequenceClassification {
            max_diff(&got, &want, |_| true)
        } else {
            max_diff(&got, &want, real_tokens(&mask, per_token))
        };
        assert!(d <= 1e-4, "{name}: logits max diff {d}");
        if head == BertHeadKind::SequenceClassification {
            // softmax for single-label, sigmoid per class for multi-label (problem_type).
            let p = model.config().problem_type().unwrap();
            let want_p = expected(name, "probabilities");
            let probs = values(p.probabilities(model.classify(&input).unwrap()));
            let d = max_diff(&probs, &want_p, |_| true);
            assert!(d <= 1e-5, "{name}: probabilities max diff {d} ({p:?})");
            let row_sum: f32 = probs.1[..probs.0[1]].iter().sum();
            assert_eq!(
                (row_sum - 1.0).abs() < 1e-5,
                p == tilpass::models::ProblemType::SingleLabelClassification,
                "{name}"
            );
        }
    }
}

#[test]
fn bert_pooling_matches_the_reference() {
    let model = load("bert_cls");
    let input = batch("bert_cls");
    let hidden = model.forward_hidden(&input).unwrap();
    let pooler = values(model.pooled(hidden.clone()).unwrap());
    assert!(max_diff(&pooler, &expected("bert_cls", "pooler_output"), |_| true) <= 1e-4);
    let mean = values(pool(
        hidden.clone(),
        &input.attention_mask,
        PoolingMode::Mean,
        true,
    ));
    assert!(max_diff(&mean, &expected("bert_cls", "mean_pooled"), |_| true) <= 1e-5);
    let cls = values(pool(hidden, &input.attention_mask, PoolingMode::Cls, false));
    assert!(max_diff(&cls, &expected("bert_cls", "cls_pooled"), |_| true) <= 1e-4);
    let cfg = model.config();
    assert_eq!(cfg.num_labels(), 3);
    let labels = tilpass::models::labels_from(&cfg.id2label)
        .unwrap()
        .unwrap();
    assert_eq!(labels, ["negativ", "nøytral", "positiv"]);
}

#[test]
fn bert_errors_name_the_problem() {
    let model = load("bert_mlm");
    let input = batch("bert_mlm");
    let err = model.classify(&input).unwrap_err();
    assert!(err.to_string().contains("sequence-classification"), "{err}");
    let mut bad = input.clone();
    bad.input_ids[0] = 9999;
    let err = model.forward_hidden(&bad).unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
    let long =
        EncoderInput::from_batch(&Batch::from_ids(&[vec![5u32; 129]], Padding::right(0))).unwrap();
    assert!(matches!(
        model.forward_hidden(&long).unwrap_err(),
        ModelError::TooLong { len: 129, max: 128 }
    ));
    // A missing tensor is named.
    let dir = fixture_path("encoders/bert_cls");
    let md = tilpass::core::ModelDir::open(&dir).unwrap();
    let cfg: BertConfig = md.config().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ck = md.checkpoint().unwrap();
    let kept: Vec<(String, tilpass::core::HostTensor)> = ck
        .keys()
        .filter(|k| !k.contains("layer.1.output.dense.weight"))
        .map(|k| (k.to_string(), ck.read_f32(k).unwrap()))
        .collect();
    tilpass::core::save_safetensors(
        tmp.path().join("model.safetensors"),
        kept.iter().map(|(k, t)| (k.as_str(), t)),
        tilpass::core::SaveDtype::F32,
        None,
    )
    .unwrap();
    let ck = Checkpoint::open(tmp.path()).unwrap();
    let err = Bert::load(cfg, None, &ck, "config.json", &tilpass_tests::test_device()).unwrap_err();
    assert!(
        err.to_string()
            .contains("bert.encoder.layer.1.output.dense.weight"),
        "{err}"
    );
    // A masked LM whose config says untied but whose file holds no decoder weight.
    let md = tilpass::core::ModelDir::open(fixture_path("encoders/bert_mlm")).unwrap();
    let ck = md.checkpoint().unwrap();
    assert!(!ck.contains("cls.predictions.decoder.weight"));
    let mut cfg: BertConfig = md.config().unwrap();
    cfg.tie_word_embeddings = false;
    let err = Bert::load(cfg, None, &ck, "config.json", &tilpass_tests::test_device()).unwrap_err();
    assert!(
        matches!(err, ModelError::MissingLmHead { .. })
            && err.to_string().contains("cls.predictions.decoder.weight"),
        "{err}"
    );
}

#[test]
fn ltg_bert_matches_its_reference_modelling_code() {
    use tilpass::models::EncoderModel;
    let dev = tilpass_tests::test_device();
    for name in ["ltg_bert_mlm", "ltg_bert_cls"] {
        let model = EncoderModel::load(fixture_path(&format!("encoders/{name}")), &dev).unwrap();
        assert!(matches!(model, EncoderModel::LtgBert(_)), "{name}");
        let input = batch(name);
        let mask = input.attention_mask.clone();
        let hidden = values(model.forward_hidden(&input).unwrap());
        let d = max_diff(
            &hidden,
            &expected(name, "last_hidden_state"),
            real_tokens(&mask, 64),
        );
        assert!(d <= 1e-4, "{name}: hidden max diff {d}");
        let want = expected(name, "logits");
        let d = if name == "ltg_bert_mlm" {
            let got = values(model.mlm_logits(&input).unwrap());
            // The reference sets ids 0..=106 to -inf; every other logit is compared.
            let v = *want.0.last().unwrap();
            max_diff(&got, &want, |i| mask[i / v] == 1 && i % v > 106)
        } else {
            assert_eq!(model.labels().unwrap().unwrap(), ["a", "b", "c"]);
            max_diff(&values(model.classify(&input).unwrap()), &want, |_| true)
        };
        assert!(d <= 1e-4, "{name}: logits max diff {d}");
    }
}

#[test]
fn ltg_bert_log_buckets_follow_the_reference_formula() {
    use tilpass::models::ltg_bert::log_bucket;
    // Within ±mid the relative position is its own bucket; beyond, buckets grow
    // logarithmically up to max_position - 1 and keep the sign.
    assert_eq!(log_bucket(0, 32, 512), 0);
    assert_eq!(log_bucket(15, 32, 512), 15);
    assert_eq!(log_bucket(-16, 32, 512), -16);
    let far = log_bucket(511, 32, 512);
    assert_eq!(far, 31, "the farthest distance uses the last bucket");
    assert_eq!(log_bucket(-511, 32, 512), -31);
    let mut last = 16;
    for d in 17..512 {
        let b = log_bucket(d, 32, 512);
        assert!(b >= last && b <= 31, "monotone at {d}");
        last = b;
    }
}
