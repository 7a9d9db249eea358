//! Truncation as the reference does it (tests/fixtures/encoders/truncation, written by
//! tests/fixtures/generate_truncation.py): transformers' `truncation=True, max_length=16` cuts
//! the content and keeps [CLS] / [SEP]; `tilpass predict` matches the text-classification
//! pipeline's scores and `SentenceEmbedder::embed_texts` sentence-transformers' embeddings on
//! Norwegian texts longer than the limit.

use serde_json::{Value, json};
use tilpass::models::SentenceEmbedder;
use tilpass::tokenize::Tokenizer;
use tilpass::train::{PredictRun, Predictor};
use tilpass_tests::{fixture_json, fixture_path, max_abs_diff};

fn expected() -> (Value, Vec<String>) {
    let want = fixture_json("encoders/truncation/expected.json");
    let texts = serde_json::from_value(want["texts"].clone()).unwrap();
    (want, texts)
}

#[test]
fn truncated_ids_keep_the_special_tokens_like_transformers() {
    let (want, texts) = expected();
    let m = want["max_length"].as_u64().unwrap() as usize;
    let ids_ref: Vec<Vec<u32>> = serde_json::from_value(want["input_ids"].clone()).unwrap();
    let tok = Tokenizer::from_dir(fixture_path("encoders/truncation/classifier")).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(tok.encode_batch_truncated(&refs, m).unwrap(), ids_ref);
    for (t, want) in refs.iter().zip(&ids_ref) {
        assert_eq!(&tok.encode_truncated(t, m).unwrap(), want);
    }
    // Some rows were cut (and still end in [SEP]), some were not.
    let sep = tok.token_to_id("[SEP]").unwrap();
    assert!(ids_ref.iter().any(|r| r.len() == m));
    assert!(ids_ref.iter().any(|r| r.len() < m));
    assert!(ids_ref.iter().all(|r| r.last() == Some(&sep)));
    // A limit that leaves no room for the text is an error, not a panic.
    let err = tok.encode_truncated(&texts[0], 2).unwrap_err().to_string();
    assert!(err.contains("max length 2"), "{err}");
}

#[test]
fn predict_matches_the_text_classification_pipeline_on_long_texts() {
    let (want, texts) = expected();
    let labels: Vec<String> = serde_json::from_value(want["labels"].clone()).unwrap();
    let probs_ref: Vec<Vec<f64>> =
        serde_json::from_value(want["pipeline_probabilities"].clone()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("rows.jsonl");
    let rows: String = texts
        .iter()
        .map(|t| format!("{}\n", json!({ "text": t })))
        .collect();
    std::fs::write(&data, rows).unwrap();
    let run = PredictRun {
        model: Some(fixture_path("encoders/truncation/classifier")),
        data: Some(data),
        out: Some(work.path().join("out.jsonl")),
        batch_size: want["batch_size"].as_u64().unwrap() as usize,
        max_length: want["max_length"].as_u64().unwrap() as usize,
        window: 5,
        ..Default::default()
    };
    // Loaded once, run twice (to two outputs): the same rows.
    let predictor = Predictor::load(&run, &tilpass_tests::test_device()).unwrap();
    assert_eq!(predictor.labels(), labels.as_slice());
    let o = predictor.run(&run, &mut |_| {}).unwrap();
    assert_eq!(o.rows, texts.len());
    let again = PredictRun {
        out: Some(work.path().join("again.jsonl")),
        ..run.clone()
    };
    predictor.run(&again, &mut |_| {}).unwrap();
    let out = tilpass_tests::read_lines(run.out.as_ref().unwrap());
    assert_eq!(out, tilpass_tests::read_lines(again.out.as_ref().unwrap()));
    assert_eq!(out.len(), texts.len());
    for (i, (line, want)) in out.iter().zip(&probs_ref).enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["text"], json!(texts[i]));
        let got: Vec<f64> = labels
            .iter()
            .map(|l| v["probabilities"][l].as_f64().unwrap())
            .collect();
        let diff = max_abs_diff(&got, want);
        assert!(diff <= 1e-5, "row {i}: {got:?} vs {want:?}");
    }
    // A run naming another model than the one loaded is refused.
    let other = PredictRun {
        model: Some(fixture_path("encoders/truncation/embedder")),
        out: Some(work.path().join("other.jsonl")),
        ..run.clone()
    };
    let err = predictor.run(&other, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("this predictor holds model"), "{err}");
    assert!(!work.path().join("other.jsonl").exists());
}

#[test]
fn embed_texts_matches_sentence_transformers_on_long_texts() {
    let (want, texts) = expected();
    let dir = fixture_path("encoders/truncation/embedder");
    let emb_ref: Vec<Vec<f32>> = serde_json::from_value(want["embeddings"].clone()).unwrap();
    let ids_ref: Vec<Vec<u32>> = serde_json::from_value(want["input_ids"].clone()).unwrap();
    let embedder = SentenceEmbedder::load(&dir, &tilpass_tests::test_device()).unwrap();
    // sentence-transformers 6 keeps max_seq_length as the tokenizer's model_max_length.
    assert_eq!(embedder.pooling.max_seq_length, Some(16));
    let tok = Tokenizer::from_dir(&dir).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(embedder.encode_texts(&tok, &refs).unwrap(), ids_ref);
    let got = embedder
        .embed_texts(&tok, &refs, want["batch_size"].as_u64().unwrap() as usize)
        .unwrap();
    assert_eq!(got.len(), emb_ref.len());
    for (i, (g, w)) in got.iter().zip(&emb_ref).enumerate() {
        let diff = max_abs_diff(g, w);
        assert!(diff <= 1e-5, "text {i}: max diff {diff}");
    }
}
