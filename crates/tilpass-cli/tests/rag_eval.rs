//! End-to-end tests of `tilpass rag eval`: the embedded norsk-rag set gives pytrec_eval's
//! numbers (tests/fixtures/rag/eval_expected.json) for BM25, a knowledge base indexed from the
//! set's file gives the same, and bad input exits 2 with a one-line cause naming file:line or
//! the setting.

use std::path::Path;

use serde_json::Value;

mod common;
use common::{bad_input, ok_json, tilpass};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn reference() -> Value {
    let p = root().join("tests/fixtures/rag/eval_expected.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The three means against pytrec_eval's, when BM25 ranked like the Lucene reference (the
/// library test checks the rankings; near ties may at worst move a query's numbers).
fn assert_reference_means(v: &Value) {
    let fx = reference();
    for (key, want) in [
        ("ndcg@10", "ndcg_at_10"),
        ("mrr@10", "mrr_at_10"),
        ("recall@100", "recall_at_100"),
    ] {
        let got = v[key].as_f64().unwrap();
        let want = fx["mean"][want].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-9,
            "{key}: {got} vs pytrec_eval {want}"
        );
    }
    assert_eq!(
        v["queries"].as_u64().unwrap() as usize,
        fx["queries"].as_array().unwrap().len()
    );
}

#[test]
fn builtin_set_gives_pytrec_eval_numbers() {
    let v = ok_json(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        "builtin:norsk-rag",
        "--queries",
        "builtin:norsk-rag",
        "--qrels",
        "builtin:norsk-rag",
        "--per-query",
    ]));
    assert_reference_means(&v);
    assert_eq!(v["mode"], "bm25");
    let per = v["per_query"].as_object().unwrap();
    assert_eq!(per.len(), v["queries"].as_u64().unwrap() as usize);
    assert!(per["q001"]["ndcg@10"].is_f64());
}

#[test]
fn indexed_files_give_the_same_numbers_and_extra_qrels_are_ignored() {
    let t = tempfile::tempdir().unwrap();
    let kb = t.path().join("kb");
    let kb = kb.to_str().unwrap();
    let data = root().join("data/rag");
    let docs = data.join("passages.jsonl");
    ok_json(&tilpass(&[
        "rag",
        "index",
        "--kb",
        kb,
        "--docs",
        docs.to_str().unwrap(),
    ]));
    // A judged query that is not in the query file is ignored, as trec_eval does.
    let mut qrels = std::fs::read_to_string(data.join("qrels.txt")).unwrap();
    qrels.push_str("q-not-asked 0 nav-1 2\n");
    let qrels_path = t.path().join("qrels.txt");
    std::fs::write(&qrels_path, qrels).unwrap();
    let queries = data.join("queries.jsonl");
    let out = tilpass(&[
        "rag",
        "eval",
        "--kb",
        kb,
        "--queries",
        queries.to_str().unwrap(),
        "--qrels",
        qrels_path.to_str().unwrap(),
    ]);
    let v = ok_json(&out);
    assert_reference_means(&v);
    assert_eq!(v["qrels_without_query"], serde_json::json!(["q-not-asked"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("q-not-asked"));
}

#[test]
fn bad_input_exits_2_naming_the_cause() {
    let t = tempfile::tempdir().unwrap();
    let qrels = t.path().join("qrels.txt");
    std::fs::write(&qrels, "q001 0 nav-1 2\nq001 0 nav-2\n").unwrap();
    let q = qrels.to_str().unwrap();
    let b = "builtin:norsk-rag";
    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        b,
        "--qrels",
        q,
    ]));
    assert!(err.contains(&format!("{q}:2:")), "{err}");

    std::fs::write(&qrels, "q001 0 nav-1 high\n").unwrap();
    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        b,
        "--qrels",
        q,
    ]));
    assert!(
        err.contains(&format!("{q}:1:")) && err.contains("integer"),
        "{err}"
    );

    let queries = t.path().join("q.jsonl");
    std::fs::write(
        &queries,
        "{\"id\": \"a\", \"text\": \"NAV\"}\n{\"id\": \"a\", \"text\": \"x\"}\n",
    )
    .unwrap();
    let qp = queries.to_str().unwrap();
    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        qp,
        "--qrels",
        b,
    ]));
    assert!(
        err.contains(&format!("{qp}:2:")) && err.contains("already"),
        "{err}"
    );

    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        b,
        "--qrels",
        b,
        "--mode",
        "dense",
    ]));
    assert!(err.contains("needs --embedder"), "{err}");

    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        b,
        "--qrels",
        b,
        "--k",
        "10",
    ]));
    assert!(err.contains("k:") && err.contains("100"), "{err}");

    let err = bad_input(&tilpass(&[
        "rag",
        "eval",
        "--kb",
        b,
        "--queries",
        "builtin:wiki",
        "--qrels",
        b,
    ]));
    assert!(err.contains("builtin:wiki"), "{err}");
}

/// `rag eval --rerank`: re-ranking inside the top 100 leaves recall@100 as it was and reports
/// the model; a model that is no cross-encoder exits 2.
#[test]
fn rerank_keeps_recall_at_100() {
    let t = tempfile::tempdir().unwrap();
    let queries: String = std::fs::read_to_string(root().join("data/rag/queries.jsonl"))
        .unwrap()
        .lines()
        .take(12)
        .map(|l| format!("{l}\n"))
        .collect();
    let qf = t.path().join("q.jsonl");
    std::fs::write(&qf, queries).unwrap();
    let q = qf.to_str().unwrap();
    let ce = root().join("tests/fixtures/rag/cross_encoder/labels2");
    let args = [
        "rag",
        "eval",
        "--kb",
        "builtin:norsk-rag",
        "--queries",
        q,
        "--qrels",
        "builtin:norsk-rag",
    ];
    let plain = ok_json(&tilpass(&args));
    let mut with = args.to_vec();
    with.extend(["--rerank", ce.to_str().unwrap(), "--rerank-top", "20"]);
    let v = ok_json(&tilpass(&with));
    assert_eq!(v["queries"], plain["queries"]);
    assert!(
        (v["recall@100"].as_f64().unwrap() - plain["recall@100"].as_f64().unwrap()).abs() < 1e-12
    );
    assert_eq!(v["rerank"]["top"], 20);
    assert!(v["ndcg@10"].is_f64());
    let mut bad = args.to_vec();
    let mlm = root().join("tests/fixtures/encoders/bert_mlm");
    bad.extend(["--rerank", mlm.to_str().unwrap()]);
    let err = bad_input(&tilpass(&bad));
    assert!(err.contains("not a sequence classifier"), "{err}");
}
