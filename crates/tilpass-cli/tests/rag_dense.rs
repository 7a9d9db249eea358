//! End-to-end tests of `tilpass rag index --embedder` and `rag search --mode bm25|dense|hybrid`
//! with MiniLM (artefact; skipped without it): JSON hits with passage, id, title, start, end,
//! score (and per-retriever ranks for hybrid), the recall report, and exit 2 with one line for
//! an embedder that does not match the index.

use std::path::Path;

use serde_json::{Value, json};

mod common;
use common::{bad_input, ok_json, tilpass};

/// A copy of the model directory with CLS pooling: another embedder identity.
fn cls_variant(minilm: &Path, dir: &Path) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    for e in std::fs::read_dir(minilm).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::os::unix::fs::symlink(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"word_embedding_dimension": 384, "pooling_mode_cls_token": true}).to_string(),
    )
    .unwrap();
}

#[test]
fn dense_and_hybrid_search_and_embedder_mismatch() {
    let Some(minilm) = tilpass_tests::artefact("minilm") else {
        return;
    };
    let m = minilm.display().to_string();
    let t = tempfile::tempdir().unwrap();
    let kb = t.path().join("kb").display().to_string();
    let docs = tilpass_tests::fixture_path("rag/corpus.jsonl")
        .display()
        .to_string();
    let out = tilpass(&[
        "rag",
        "index",
        "--kb",
        &kb,
        "--docs",
        &docs,
        "--embedder",
        &m,
        "--report-recall",
    ]);
    let v = ok_json(&out);
    assert_eq!(v["passages"], 60);
    assert_eq!(v["recall"]["k"], 10);
    let recall = v["recall"]["recall"].as_f64().unwrap();
    assert!(recall >= 0.95, "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("60/60 passages"), "progress bar: {stderr}");

    let q = "Hvem har ansvar for barnehagene?";
    let search = |extra: &[&str]| {
        let mut args = vec!["rag", "search", "--kb", &kb, "--query", q, "--k", "5"];
        args.extend_from_slice(extra);
        ok_json(&tilpass(&args))["hits"].as_array().unwrap().clone()
    };
    let bm25 = search(&["--mode", "bm25"]);
    let dense = search(&["--mode", "dense"]);
    let hnsw = search(&["--mode", "dense", "--index", "hnsw"]);
    let hybrid = search(&["--mode", "hybrid", "--embedder", &m]);
    let weighted = search(&["--mode", "hybrid", "--fusion", "weighted", "--alpha", "0.3"]);
    for hits in [&bm25, &dense, &hnsw, &hybrid, &weighted] {
        // BM25 finds only the passages sharing a term (two for this query).
        assert!(!hits.is_empty() && hits.len() <= 5, "{hits:?}");
        for h in hits {
            for f in ["id", "title", "passage", "start", "end", "score"] {
                assert!(!h[f].is_null(), "{f} in {h}");
            }
        }
    }
    let same = |a: &[Value], b: &[Value]| {
        a.iter().zip(b).all(|(x, y)| {
            x["id"] == y["id"]
                && (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-6
        })
    };
    assert!(same(&dense, &hnsw), "{dense:?} vs {hnsw:?}");
    let ids = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The fused list's best has the best reciprocal-rank sum of the two lists.
    let rrf = |id: &str| {
        let r = |l: &[Value]| {
            l.iter()
                .position(|h| h["id"] == id)
                .map_or(0.0, |i| 1.0 / (61.0 + i as f64))
        };
        r(&bm25) + r(&dense)
    };
    assert!(
        ids(&bm25)
            .iter()
            .chain(&ids(&dense))
            .all(|d| rrf(d) <= rrf(&ids(&hybrid)[0]) + 1e-9)
    );
    assert!(hybrid[0]["bm25_rank"].is_u64() || hybrid[0]["dense_rank"].is_u64());
    let s = hybrid[0]["score"].as_f64().unwrap();
    assert!(
        (s - rrf(hybrid[0]["id"].as_str().unwrap())).abs() < 1e-6,
        "{s}"
    );

    // `rag eval` runs the same retrievers: with the dense list's best document judged
    // relevant, each mode's MRR@10 is 1 / its rank in that mode's search output.
    let relevant = ids(&dense)[0].clone();
    let qf = t.path().join("q.jsonl");
    std::fs::write(
        &qf,
        format!("{}\n", serde_json::json!({"id": "q1", "text": q})),
    )
    .unwrap();
    let qrels = t.path().join("qrels.txt");
    std::fs::write(&qrels, format!("q1 0 {relevant} 2\n")).unwrap();
    let (qf, qrels) = (qf.display().to_string(), qrels.display().to_string());
    for (mode, hits) in [("bm25", &bm25), ("dense", &dense), ("hybrid", &hybrid)] {
        let v = ok_json(&tilpass(&[
            "rag",
            "eval",
            "--kb",
            &kb,
            "--queries",
            &qf,
            "--qrels",
            &qrels,
            "--mode",
            mode,
        ]));
        assert_eq!(v["mode"], mode);
        assert_eq!(v["queries"], 1);
        if let Some(i) = ids(hits).iter().position(|d| *d == relevant) {
            let mrr = v["mrr@10"].as_f64().unwrap();
            assert!((mrr - 1.0 / (i + 1) as f64).abs() < 1e-12, "{mode}: {v}");
        }
    }

    // Another model's query, or adding documents with it: exit 2, one line.
    let other = t.path().join("minilm_cls");
    cls_variant(&minilm, &other);
    let o = other.display().to_string();
    let err = bad_input(&tilpass(&[
        "rag",
        "search",
        "--kb",
        &kb,
        "--query",
        q,
        "--mode",
        "dense",
        "--embedder",
        &o,
    ]));
    assert!(err.contains("embedder mismatch"), "{err}");
    let err = bad_input(&tilpass(&[
        "rag",
        "index",
        "--kb",
        &kb,
        "--docs",
        &docs,
        "--embedder",
        &o,
    ]));
    assert!(err.contains("embedder mismatch"), "{err}");
    // Dense search on a BM25-only knowledge base.
    let kb2 = t.path().join("kb2").display().to_string();
    ok_json(&tilpass(&["rag", "index", "--kb", &kb2, "--docs", &docs]));
    let err = bad_input(&tilpass(&[
        "rag", "search", "--kb", &kb2, "--query", q, "--mode", "hybrid",
    ]));
    assert!(err.contains("no dense vectors"), "{err}");
    let err = bad_input(&tilpass(&[
        "rag", "search", "--kb", &kb, "--query", q, "--mode", "hybrid", "--fusion", "weighted",
        "--alpha", "2",
    ]));
    assert!(err.contains("alpha"), "{err}");
}
