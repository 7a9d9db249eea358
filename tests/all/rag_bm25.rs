//! BM25 ranking of tilpass-rag equals Lucene's formula (tests/fixtures/rag/bm25_expected.json,
//! made by tests/fixtures/generate_rag.py with snowballstemmer's Norwegian stemmer and Lucene's
//! SmallFloat length quantisation) on the committed Norwegian corpus: the analysed terms of
//! every passage and query are the reference's, the top 10 of every query are the same ids in
//! the same order, and tantivy's scores are Lucene's times (k1 + 1).

use serde_json::Value;
use tilpass::rag::{AnalysisConfig, ChunkerConfig, Document, KnowledgeBase};
use tilpass_tests::{fixture_json, fixture_path, read_lines};

#[test]
fn bm25_top10_equals_lucene_reference() {
    let fx = fixture_json("rag/bm25_expected.json");
    let docs: Vec<Document> = read_lines(&fixture_path("rag/corpus.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let passages = fx["passages"].as_array().unwrap();
    assert_eq!(docs.len(), passages.len());
    assert_eq!(docs.len(), 60);

    let t = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::create(
        t.path().join("kb"),
        AnalysisConfig::default(),
        ChunkerConfig::default(),
    )
    .unwrap();
    let mut w = kb.writer().unwrap();
    for d in &docs {
        assert_eq!(
            w.upsert(d).unwrap(),
            1,
            "{}: one passage per corpus row",
            d.id
        );
    }
    w.commit().unwrap();
    w.close().unwrap();

    let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
    for (d, p) in docs.iter().zip(passages) {
        assert_eq!(p["id"].as_str().unwrap(), d.id);
        assert_eq!(
            kb.analyze(&d.text),
            strings(&p["terms"]),
            "terms of passage {}",
            d.id
        );
    }
    let k1 = fx["k1"].as_f64().unwrap();
    let queries = fx["queries"].as_array().unwrap();
    assert!(queries.len() >= 20);
    let mut worst_rel = 0f64;
    for q in queries {
        let text = q["query"].as_str().unwrap();
        assert_eq!(
            kb.analyze(text),
            strings(&q["terms"]),
            "terms of query {text:?}"
        );
        let want = q["top"].as_array().unwrap();
        let hits = kb.search(text, 10).unwrap();
        let got_ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|h| h["id"].as_str().unwrap()).collect();
        assert_eq!(got_ids, want_ids, "top 10 of {text:?}");
        for (h, w) in hits.iter().zip(want) {
            let lucene = w["score"].as_f64().unwrap();
            let got = f64::from(h.score) / (1.0 + k1);
            assert!(got.is_finite() && lucene.is_finite());
            let rel = (got - lucene).abs() / lucene.abs().max(1e-12);
            worst_rel = worst_rel.max(rel);
            assert!(rel <= 1e-5, "{text:?} {}: {got} vs Lucene {lucene}", h.id);
        }
    }
    eprintln!(
        "bm25: {} queries, worst relative score difference {worst_rel:.2e}",
        queries.len()
    );
}

/// Other BM25 parameters and the light stemmers (tests/fixtures/rag/bm25_params_expected.json,
/// made by tests/fixtures/generate_rag_params.py): for every (stemmer, k1, b) setting, the
/// analysed terms are the reference's, the top 10 of every query are the same ids in the same
/// order, and every score is Lucene's times (k1 + 1) within 1e-4 relative; once with the
/// parameters stored in the manifest at creation, once as a per-search override.
#[test]
fn bm25_params_and_light_stemmers_equal_lucene_reference() {
    use tilpass::rag::{Bm25Params, KbOptions, StemmerKind};
    let fx = fixture_json("rag/bm25_params_expected.json");
    let docs: Vec<Document> = read_lines(&fixture_path("rag/corpus.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let strings = |v: &Value| -> Vec<String> { serde_json::from_value(v.clone()).unwrap() };
    let settings = fx["settings"].as_array().unwrap();
    assert!(settings.len() >= 8);
    let t = tempfile::tempdir().unwrap();
    let mut worst_rel = 0f64;
    let mut checked = 0usize;
    let mut overridden = 0usize;
    for (i, s) in settings.iter().enumerate() {
        let stemmer: StemmerKind = s["stemmer"].as_str().unwrap().parse().unwrap();
        let params = Bm25Params {
            k1: s["k1"].as_f64().unwrap() as f32,
            b: s["b"].as_f64().unwrap() as f32,
        };
        let analysis = AnalysisConfig {
            stemmer,
            ..Default::default()
        };
        let kb = KnowledgeBase::create_with(
            t.path().join(format!("kb{i}")),
            KbOptions {
                analysis,
                bm25: params,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(kb.manifest().bm25, params);
        let mut w = kb.writer().unwrap();
        for d in &docs {
            assert_eq!(w.upsert(d).unwrap(), 1);
        }
        w.commit().unwrap();
        w.close().unwrap();
        let label = format!("{stemmer:?} k1 {} b {}", params.k1, params.b);
        for (d, p) in docs.iter().zip(s["passages"].as_array().unwrap()) {
            assert_eq!(p["id"].as_str().unwrap(), d.id);
            assert_eq!(
                kb.analyze(&d.text),
                strings(&p["terms"]),
                "{label}: {}",
                d.id
            );
        }
        // The same parameters given per search to a knowledge base with the defaults.
        let other = KnowledgeBase::open(t.path().join("kb0")).ok();
        for q in s["queries"].as_array().unwrap() {
            let text = q["query"].as_str().unwrap();
            assert_eq!(kb.analyze(text), strings(&q["terms"]), "{label}: {text:?}");
            let want = q["top"].as_array().unwrap();
            let want_ids: Vec<&str> = want.iter().map(|h| h["id"].as_str().unwrap()).collect();
            let mut runs = vec![kb.search(text, 10).unwrap()];
            if let Some(o) = other
                .as_ref()
                .filter(|o| o.manifest().analysis == kb.manifest().analysis)
            {
                runs.push(o.search_with(text, 10, params).unwrap());
                overridden += 1;
            }
            for hits in runs {
                let got_ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                assert_eq!(got_ids, want_ids, "{label}: top 10 of {text:?}");
                for (h, w) in hits.iter().zip(want) {
                    let lucene = w["score"].as_f64().unwrap();
                    let got = f64::from(h.score) / (1.0 + f64::from(params.k1));
                    let rel = (got - lucene).abs() / lucene.abs().max(1e-12);
                    worst_rel = worst_rel.max(rel);
                    assert!(rel <= 1e-4, "{label} {text:?} {}: {got} vs {lucene}", h.id);
                    checked += 1;
                }
            }
        }
    }
    // Every setting's queries with Snowball ran twice (manifest and per-search parameters).
    assert_eq!(overridden, 4 * 22);
    assert!(checked > 900, "{checked} scores checked");
    eprintln!(
        "bm25 params: {} settings, {checked} scores, worst relative difference {worst_rel:.2e}",
        settings.len()
    );
}
