//! Cross-encoder re-ranking of tilpass-rag against sentence-transformers' `CrossEncoder`
//! (tests/fixtures/rag/cross_encoder/expected.json, made by
//! tests/fixtures/generate_cross_encoder.py): pair encoding (ids, token types, longest-first
//! truncation) equal to the tokenizer's, scores within 1e-5 of `CrossEncoder.predict` for a
//! num_labels-1 model (sigmoid) and a num_labels-2 model (logit of label 1) whatever the batch
//! size, the same order per query, and typed errors for models that are no cross-encoders.

use serde_json::Value;
use tilpass::rag::{CrossEncoder, CrossEncoderConfig, Hit, RagError, ScoreRule};
use tilpass_tests::{fixture_json, fixture_path, max_abs_diff};

fn load(name: &str, batch_size: usize) -> CrossEncoder {
    CrossEncoder::load(
        fixture_path(&format!("rag/cross_encoder/{name}")),
        CrossEncoderConfig {
            batch_size,
            max_length: None,
        },
        &tilpass_tests::test_device(),
    )
    .unwrap()
}

fn pairs(fx: &Value) -> Vec<(String, String, String, String)> {
    fx["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap().to_string();
            (s("query_id"), s("passage_id"), s("query"), s("passage"))
        })
        .collect()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Per query id, the passage ids ordered by `scores` (best first).
fn order(p: &[(String, String, String, String)], scores: &[f32]) -> Value {
    let mut by_q: std::collections::BTreeMap<&str, Vec<(&str, f32)>> = Default::default();
    for (pair, s) in p.iter().zip(scores) {
        by_q.entry(&pair.0).or_default().push((&pair.1, *s));
    }
    let mut out = serde_json::Map::new();
    for (q, mut v) in by_q {
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        out.insert(
            q.to_string(),
            v.iter().map(|(p, _)| Value::from(*p)).collect(),
        );
    }
    Value::Object(out)
}

#[test]
fn pair_encoding_equals_the_tokenizer() {
    let fx = fixture_json("rag/cross_encoder/expected.json");
    let ce = load("labels1", 4);
    assert_eq!(ce.max_length(), fx["max_length"].as_u64().unwrap() as usize);
    let p = pairs(&fx);
    let mut truncated = 0;
    for (i, (_, _, q, passage)) in p.iter().enumerate() {
        let (ids, types) = ce.encode_pair(q, passage).unwrap();
        assert_eq!(ids, u32s(&fx["input_ids"][i]), "pair {i} ids");
        assert_eq!(
            types,
            u32s(&fx["token_type_ids"][i]),
            "pair {i} token types"
        );
        truncated += usize::from(ids.len() == ce.max_length());
    }
    // The fixture exercises truncation and short rows both.
    assert!(truncated >= 2 && truncated < p.len(), "{truncated}");
}

#[test]
fn scores_and_order_equal_cross_encoder_predict() {
    let fx = fixture_json("rag/cross_encoder/expected.json");
    let p = pairs(&fx);
    let texts: Vec<(&str, &str)> = p.iter().map(|x| (x.2.as_str(), x.3.as_str())).collect();
    for batch in [4, 3, 16] {
        let one = load("labels1", batch);
        assert_eq!(
            (one.num_labels(), one.rule()),
            (1, ScoreRule::SigmoidOfLogit)
        );
        let m = &fx["models"]["labels1"];
        assert_eq!(m["activation"], "Sigmoid");
        let got = one.score_pairs(&texts).unwrap();
        let want = f32s(&m["scores"]);
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-5, "labels1 batch {batch}: {d}");
        assert_eq!(order(&p, &got), m["order"], "labels1 batch {batch}");

        let two = load("labels2", batch);
        assert_eq!(
            (two.num_labels(), two.rule()),
            (2, ScoreRule::PositiveLogit)
        );
        let m = &fx["models"]["labels2"];
        assert_eq!(m["activation"], "Identity");
        let logits: Vec<f32> = two.logits(&texts).unwrap().concat();
        let want: Vec<f32> = m["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(f32s)
            .collect();
        let d = max_abs_diff(&logits, &want);
        assert!(d <= 1e-5, "labels2 batch {batch}: {d}");
        let got = two.score_pairs(&texts).unwrap();
        assert_eq!(order(&p, &got), m["order"], "labels2 batch {batch}");
    }
}

#[test]
fn rerank_reorders_the_top_n_and_keeps_the_rest() {
    let fx = fixture_json("rag/cross_encoder/expected.json");
    let p = pairs(&fx);
    let ce = load("labels1", 2);
    // q01's three candidates as a retriever might list them, then two below the top 3.
    let q01: Vec<_> = p.iter().filter(|x| x.0 == "q01").collect();
    let hit = |id: &str, passage: &str, score: f32| Hit {
        id: id.into(),
        score,
        passage: passage.into(),
        start: 0,
        end: passage.chars().count() as u64,
        title: None,
        ord: 0,
        meta: None,
    };
    let mut hits: Vec<Hit> = q01
        .iter()
        .enumerate()
        .map(|(i, x)| hit(&x.1, &x.3, 10.0 - i as f32))
        .collect();
    hits.push(hit("tail-a", "Fjellene", 2.0));
    hits.push(hit("tail-b", "Bergen", 1.0));
    let out = ce.rerank(&q01[0].2, hits, 3).unwrap();
    let ids: Vec<&str> = out.iter().map(|h| h.hit.id.as_str()).collect();
    let want: Vec<&str> = fx["models"]["labels1"]["order"]["q01"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&ids[..3], &want[..]);
    assert_eq!(&ids[3..], ["tail-a", "tail-b"]);
    assert!(out[..3].iter().all(|h| h.rerank_score == Some(h.hit.score)));
    assert!(out[3..].iter().all(|h| h.rerank_score.is_none()));
    assert_eq!((out[3].retriever_rank, out[3].hit.score), (4, 2.0));
    let first = out.iter().find(|h| h.hit.id == q01[0].1).unwrap();
    assert_eq!((first.retriever_rank, first.retriever_score), (1, 10.0));
    assert!(matches!(
        ce.rerank("  ", vec![], 3),
        Err(RagError::EmptyQuery)
    ));
}

#[test]
fn models_that_are_no_cross_encoders_are_refused() {
    let dev = tilpass_tests::test_device();
    let cfg = CrossEncoderConfig::default();
    let err = |dir: std::path::PathBuf, cfg| {
        CrossEncoder::load(dir, cfg, &dev)
            .expect_err("should be refused")
            .to_string()
    };
    let e = err(fixture_path("encoders/bert_mlm"), cfg);
    assert!(e.contains("not a sequence classifier"), "{e}");
    let e = err(fixture_path("encoders/bert_cls"), cfg);
    assert!(e.contains("wrong labels: 3 classes"), "{e}");
    let e = err(
        fixture_path("rag/cross_encoder/labels1"),
        CrossEncoderConfig {
            max_length: Some(1000),
            ..cfg
        },
    );
    assert!(e.contains("64 positions"), "{e}");
    let e = err(
        fixture_path("rag/cross_encoder/labels1"),
        CrossEncoderConfig {
            batch_size: 0,
            ..cfg
        },
    );
    assert!(e.contains("batch_size"), "{e}");
    let t = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(
            fixture_path(&format!("rag/cross_encoder/labels1/{f}")),
            t.path().join(f),
        )
        .unwrap();
    }
    let cfg_path = t.path().join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    c["sentence_transformers"] = serde_json::json!({"activation_fn": "torch.nn.Tanh"});
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let e = err(t.path().to_path_buf(), cfg);
    assert!(e.contains("torch.nn.Tanh"), "{e}");
    c["sentence_transformers"] =
        serde_json::json!({"activation_fn": "torch.nn.modules.linear.Identity"});
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    let ce = CrossEncoder::load(t.path(), cfg, &dev).unwrap();
    assert_eq!(ce.rule(), ScoreRule::Logit);
}
