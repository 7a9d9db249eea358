//! Retrieval evaluation on the embedded norsk-rag set against pytrec_eval
//! (tests/fixtures/rag/eval_expected.json, made by tests/fixtures/generate_rag_eval.py): the
//! library's nDCG@10 / MRR@10 / recall@100 of the reference run equal pytrec_eval's, and the run
//! tilpass-rag's BM25 produces over the set ranks the passages as the Lucene reference does,
//! so its metrics are pytrec_eval's too.

use std::collections::BTreeMap;

use serde_json::Value;
use tilpass::data::embedded::{NORSK_RAG_PASSAGES_JSONL, NORSK_RAG_QRELS, NORSK_RAG_QUERIES_JSONL};
use tilpass::metrics::retrieval::{Run, ranked};
use tilpass::rag::eval::{EvalScores, evaluate, parse_qrels, parse_queries, run_queries};
use tilpass::rag::{AnalysisConfig, ChunkerConfig, Document, KnowledgeBase};
use tilpass_tests::fixture_json;

/// Relative score gap below which two reference scores count as tied (tantivy scores in f32,
/// the reference in f64).
const NEAR_TIE: f64 = 1e-5;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12
}

fn scores(v: &Value) -> EvalScores {
    EvalScores {
        ndcg_at_10: v["ndcg_at_10"].as_f64().unwrap(),
        mrr_at_10: v["mrr_at_10"].as_f64().unwrap(),
        recall_at_100: v["recall_at_100"].as_f64().unwrap(),
    }
}

fn same(a: &EvalScores, b: &EvalScores) -> bool {
    close(a.ndcg_at_10, b.ndcg_at_10)
        && close(a.mrr_at_10, b.mrr_at_10)
        && close(a.recall_at_100, b.recall_at_100)
}

/// The reference run as (id, 6-digit Lucene score) lists in trec_eval's order, per query.
fn reference_lists(fx: &Value) -> BTreeMap<String, Vec<(String, f64)>> {
    fx["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let list = q["run"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e[0].as_str().unwrap().to_string(), e[1].as_f64().unwrap()))
                .collect();
            (q["id"].as_str().unwrap().to_string(), list)
        })
        .collect()
}

#[test]
fn metrics_of_the_reference_run_equal_pytrec_eval() {
    let fx = fixture_json("rag/eval_expected.json");
    let qrels = parse_qrels("builtin:norsk-rag", NORSK_RAG_QRELS).unwrap();
    // Scores that keep the reference's (trec_eval) order: depth - rank.
    let run: Run = reference_lists(&fx)
        .into_iter()
        .map(|(q, list)| {
            let n = list.len();
            let docs = list
                .into_iter()
                .enumerate()
                .map(|(i, (d, _))| (d, (n - i) as f64))
                .collect();
            (q, docs)
        })
        .collect();
    let report = evaluate(&qrels, &run).unwrap();
    let want = fx["queries"].as_array().unwrap();
    assert_eq!(report.queries, want.len());
    assert!(report.unjudged_queries.is_empty() && report.qrels_without_query.is_empty());
    for q in want {
        let id = q["id"].as_str().unwrap();
        assert!(
            same(&report.per_query[id], &scores(q)),
            "{id}: {:?} vs pytrec_eval {:?}",
            report.per_query[id],
            scores(q)
        );
    }
    assert!(
        same(&report.mean, &scores(&fx["mean"])),
        "{:?}",
        report.mean
    );
}

#[test]
fn bm25_on_norsk_rag_ranks_as_lucene_and_scores_as_pytrec_eval() {
    let fx = fixture_json("rag/eval_expected.json");
    let queries = parse_queries("builtin:norsk-rag", NORSK_RAG_QUERIES_JSONL).unwrap();
    let qrels = parse_qrels("builtin:norsk-rag", NORSK_RAG_QRELS).unwrap();
    let t = tempfile::tempdir().unwrap();
    let kb = KnowledgeBase::create(
        t.path().join("kb"),
        AnalysisConfig::default(),
        ChunkerConfig::default(),
    )
    .unwrap();
    let mut w = kb.writer().unwrap();
    for line in NORSK_RAG_PASSAGES_JSONL.lines() {
        let d: Document = serde_json::from_str(line).unwrap();
        assert_eq!(w.upsert(&d).unwrap(), 1, "{}: one passage per row", d.id);
    }
    w.commit().unwrap();
    w.close().unwrap();

    let run = run_queries(&queries, 100, |text, k| kb.search(text, k), |_, _| {}).unwrap();
    let reference = reference_lists(&fx);
    let next: BTreeMap<&str, f64> = fx["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["id"].as_str().unwrap(), q["next_score"].as_f64().unwrap()))
        .collect();
    let report = evaluate(&qrels, &run).unwrap();
    let want: BTreeMap<&str, EvalScores> = fx["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| (q["id"].as_str().unwrap(), scores(q)))
        .collect();
    let mut differ = 0;
    for (q, list) in &reference {
        let got: Vec<&str> = ranked(&run[q]).into_iter().map(|(d, _)| d).collect();
        let expect: Vec<&str> = list.iter().map(|(d, _)| d.as_str()).collect();
        if got == expect {
            assert!(
                same(&report.per_query[q], &want[q.as_str()]),
                "{q}: {:?} vs pytrec_eval {:?}",
                report.per_query[q],
                want[q.as_str()]
            );
            continue;
        }
        // Only passages whose reference scores are tied to within NEAR_TIE may trade places
        // (or trade the 100th place with the 101st).
        differ += 1;
        assert_eq!(got.len(), expect.len(), "{q}: run lengths");
        let mut sc: Vec<f64> = list.iter().map(|(_, s)| *s).collect();
        sc.push(next[q.as_str()]);
        for (i, (g, e)) in got.iter().zip(&expect).enumerate() {
            if g != e {
                let j = expect.iter().position(|d| d == g).unwrap_or(expect.len());
                let (a, b) = (sc[i], sc[j.min(sc.len() - 1)]);
                assert!(
                    (a - b).abs() <= NEAR_TIE * a.abs().max(b.abs()),
                    "{q}: rank {} is {g}, the reference has {e} (scores {a} vs {b})",
                    i + 1
                );
            }
        }
    }
    eprintln!(
        "norsk-rag BM25: {} queries, {differ} rankings differ from Lucene's only within near \
         ties; nDCG@10 {:.4}, MRR@10 {:.4}, recall@100 {:.4}",
        reference.len(),
        report.mean.ndcg_at_10,
        report.mean.mrr_at_10,
        report.mean.recall_at_100
    );
    if differ == 0 {
        assert!(
            same(&report.mean, &scores(&fx["mean"])),
            "{:?}",
            report.mean
        );
    }
}
